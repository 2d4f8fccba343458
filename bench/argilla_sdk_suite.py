"""Argilla's own SDK integration suite (argilla 2.8.0's tests/integration) against the embedded server. Prints JSON.

    python bench/argilla_sdk_suite.py [--database sqlite postgresql] [--work /tmp/argilla-sdk-suite]
                                      [--out bench/results/argilla_sdk_suite-<machine>.json]

For each database, a fresh embedded Argilla (`workbench label serve` in a home of its own; PostgreSQL: a throwaway
cluster started as the tests do, tests/labeling/postgres_server.py) runs the release's own tests through the SDK,
with ARGILLA_API_URL and ARGILLA_API_KEY pointing at it. The tests come from the argilla 2.8.0 source package
(`pip download`, the one network access, before any server starts). One shim, in a plugin of ours rather than in
their files: huggingface_hub 1.x moved `huggingface_hub.utils._errors` to `huggingface_hub.errors`, which two of
their modules import. Tests that need a Hugging Face Hub token skip themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "labeling"))

RELEASE = "argilla==2.8.0"
SHIM = '''"""huggingface_hub 1.x moved utils._errors to errors; argilla 2.8.0's tests still import the old name."""
import sys
import types

try:
    import huggingface_hub.utils._errors  # noqa: F401
except ImportError:
    import huggingface_hub.errors as errors

    module = types.ModuleType("huggingface_hub.utils._errors")
    module.__dict__.update({k: getattr(errors, k) for k in dir(errors) if not k.startswith("__")})
    sys.modules["huggingface_hub.utils._errors"] = module
'''


def release_tests(work: Path) -> Path:
    """argilla 2.8.0's tests/integration, from its source package, plus our shim plugin next to them."""
    target = work / "suite"
    if (target / "tests" / "integration" / "conftest.py").exists():
        return target
    download = work / "download"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", RELEASE, "-d"]
    subprocess.run([*command, str(download)], check=True, capture_output=True)
    archive = next(download.glob("argilla-2.8.0.tar.gz"))
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/tests/integration/" in m.name]
        for member in members:
            member.name = member.name.split("/", 1)[1]
        tar.extractall(target, members=members, filter="data")
    (target / "hf_errors_shim.py").write_text(SHIM)
    return target


def run_suite(suite: Path, database: str, work: Path) -> dict:
    from labeling.server.database import normalize_postgres_url
    from labeling.server.home import ArgillaHome
    from labeling.server.launcher import free_local_port, serve, stop

    home = ArgillaHome.at(work / f"home-{database}-{int(time.time())}")
    postgres = None
    url = None
    if database == "postgresql":
        from postgres_server import start_postgres

        postgres = start_postgres()
        url = normalize_postgres_url(postgres.url_with_password, "postgres", password_allowed=True)
    try:
        api_url = serve(home, port=free_local_port(), log=lambda line: None, database=url)
        environment = {**os.environ, "ARGILLA_API_URL": api_url, "ARGILLA_API_KEY": home.read_credentials()["api_key"]}
        environment["PYTHONPATH"] = str(suite)
        report = work / f"{database}.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "hf_errors_shim"]
        command += ["--timeout", "300", "-o", "junit_family=xunit2", f"--junitxml={report}", "tests/integration"]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=suite, env=environment, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        (work / f"{database}.log").write_text(done.stdout + done.stderr)
    finally:
        stop(home, log=lambda line: None)
        if postgres is not None:
            postgres.stop()
    return {"database": database, "seconds": round(seconds, 1), "pytest_exit": done.returncode, **outcomes(report)}


def outcomes(report: Path) -> dict:
    """Counts and the failing tests' ids from pytest's JUnit XML."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failing = []
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        test_id = f"{case.get('classname')}::{case.get('name')}"
        if "failure" in kinds:
            counts["failed"] += 1
            failing.append(test_id)
        elif "error" in kinds:
            counts["errors"] += 1
            failing.append(test_id)
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts | {"failing": failing}


def versions() -> dict:
    """The SDK, the server it ran against, and the PostgreSQL server binaries the tests start."""
    from importlib.metadata import version

    from postgres_server import postgres_bin_dir

    from labeling.server.venv import ARGILLA_SERVER_REQUIREMENT

    postgres = subprocess.run([str(postgres_bin_dir() / "postgres"), "--version"], capture_output=True, text=True)
    return {
        "python": sys.version.split()[0],
        "argilla": version("argilla"),
        "argilla_server": ARGILLA_SERVER_REQUIREMENT.split("==")[1],
        "postgresql": postgres.stdout.strip(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/argilla-sdk-suite"))
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    from ppo_memory import machine

    suite = release_tests(args.work)
    result = {
        "benchmark": "argilla_sdk_suite",
        "suite": f"{RELEASE} source package, tests/integration",
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "versions": versions(),
        "runs": [run_suite(suite, database, args.work) for database in args.database],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if all(not run["failing"] for run in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
