"""Read and check the candidates dataset (`workbench generate` → `workbench label push`) and reward-model scores.

Candidates (docs/ARCHITECTURE.md): one JSON object per line with `prompt_id`, `prompt` (chat messages),
`completions` (K strings), `policy` (adapter reference) and the generation parameters. Scores (`workbench reward
score`): `prompt_id`, `scores` (K floats, one per completion, in the same order), `agent` (the reward model's name)
and, from an ensemble, `member_scores` (one list of K per reward model; `scores` is their mean).
Every problem is reported with the file, the line and the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.errors import UserError
from workbench.jsonl import read_jsonl

CANDIDATES_FILE = "candidates.jsonl"
REQUIRED = ("prompt_id", "prompt", "completions")


def _resolve(path: str | Path, default_name: str) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / default_name
    if not path.is_file():
        raise UserError(f"{path} does not exist (expected a JSONL file, or a folder holding {default_name})")
    return path


def check_prompt(prompt, where: str) -> None:
    if not isinstance(prompt, list) or not prompt:
        raise UserError(f"{where}: column 'prompt' must be a non-empty list of chat messages {{role, content}}")
    for message in prompt:
        if not isinstance(message, dict) or not {"role", "content"} <= set(message):
            raise UserError(f"{where}: column 'prompt' holds {message!r}; each message needs 'role' and 'content'")
        if not isinstance(message["content"], str) or not message["content"].strip():
            raise UserError(f"{where}: column 'prompt' has a message with empty content")


def load_candidates(path: str | Path) -> list[dict]:
    """The candidate rows, checked: required columns, same K everywhere, no empty completion, unique prompt ids."""
    path = _resolve(path, CANDIDATES_FILE)
    rows, seen, k = [], {}, None
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        missing = [column for column in REQUIRED if column not in row]
        if missing:
            raise UserError(f"{where}: missing column(s) {missing}; a candidates row needs {list(REQUIRED)}")
        prompt_id = row["prompt_id"]
        if not isinstance(prompt_id, (str, int)) or str(prompt_id) == "":
            raise UserError(f"{where}: column 'prompt_id' must be a non-empty string; got {prompt_id!r}")
        prompt_id = str(prompt_id)
        if prompt_id in seen:
            raise UserError(f"{where}: duplicate prompt_id {prompt_id!r} (first on line {seen[prompt_id]})")
        seen[prompt_id] = number
        check_prompt(row["prompt"], where)
        completions = row["completions"]
        if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
            raise UserError(f"{where}: column 'completions' must be a list of strings")
        if len(completions) < 2:
            raise UserError(f"{where}: column 'completions' has {len(completions)} completion(s); ranking needs 2+")
        if k is None:
            k = len(completions)
        elif len(completions) != k:
            raise UserError(f"{where}: {len(completions)} completions, but earlier rows have K={k}")
        empty = [i for i, c in enumerate(completions) if not c.strip()]
        if empty:
            raise UserError(f"{where}: prompt_id {prompt_id!r} has empty completion(s) at index {empty}")
        rows.append({**row, "prompt_id": prompt_id})
    return rows


@dataclass
class RewardScores:
    """One candidates row's reward-model scores: `scores` (K, the ensemble's mean), `agent`, and `members` (one list
    of K per reward model; `[scores]` for one model)."""

    scores: list[float]
    agent: str
    members: list[list[float]]


def _numbers(values, k: int, column: str, where: str) -> list[float]:
    numbers = isinstance(values, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not numbers:
        raise UserError(f"{where}: column {column!r} must be a list of numbers")
    if len(values) != k:
        raise UserError(f"{where}: {len(values)} {column}, but the candidates have K={k} completions")
    return [float(v) for v in values]


def load_scores(path: str | Path, k: int, prompt_ids: set[str]) -> dict[str, RewardScores]:
    """prompt_id -> RewardScores from a `workbench reward score` JSONL (`agent` or else `reward_model` names it)."""
    path = _resolve(path, "scores.jsonl")
    scores: dict[str, RewardScores] = {}
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        missing = [column for column in ("prompt_id", "scores") if column not in row]
        agent = row.get("agent") or row.get("reward_model")
        if not agent:
            missing.append("agent")
        if missing:
            raise UserError(
                f"{where}: missing column(s) {missing}; a scores row needs prompt_id, scores and agent (or "
                "reward_model, as `workbench reward score` writes it), not empty"
            )
        values = _numbers(row["scores"], k, "scores", where)
        members = row.get("member_scores") or [values]
        if not isinstance(members, list):
            raise UserError(f"{where}: column 'member_scores' must be a list of score lists, one per reward model")
        members = [_numbers(member, k, "member_scores", where) for member in members]
        prompt_id = str(row["prompt_id"])
        if prompt_id not in prompt_ids:
            raise UserError(f"{where}: prompt_id {prompt_id!r} is not in the candidates")
        scores[prompt_id] = RewardScores(values, str(agent), members)
    return scores


def policy_label(policy) -> str:
    """A short, stable name for the policy that wrote the candidates (Argilla metadata `policy`).

    `{stage}:{adapter folder}@{manifest hash[:12]}` for an adapter, `base:{model}` for a bare base model.
    """
    if policy is None:
        return "unknown"
    if isinstance(policy, str):
        return policy
    if not isinstance(policy, dict):
        return str(policy)
    if policy.get("adapter"):
        name = Path(str(policy["adapter"])).name
        if name == "adapter":  # outputs/sft/adapter: the run folder says more
            name = Path(str(policy["adapter"])).parent.name
        digest = str(policy.get("manifest_sha256") or "").removeprefix("sha256:")[:12]
        return f"{policy.get('stage') or 'adapter'}:{name}" + (f"@{digest}" if digest else "")
    return f"base:{policy.get('base_model', 'unknown')}"
