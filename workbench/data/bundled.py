"""The small datasets shipped inside the package (written by the project; rebuilt by ``build_bundled``)."""

from __future__ import annotations

from pathlib import Path

from workbench.errors import UserError

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"

BUNDLED_FILES: dict[str, str] = {
    "instructions.jsonl": "600 chat SFT examples (`messages`, `category`, `split`): hand-written Q/A and exact "
    "templated families (arithmetic, units, dates, ...); 80 held out as split=test.",
    "quotes.jsonl": "Public-domain quotations (`quote`, `author`, `tags`) for the format-template demo "
    "'Quote: {quote}\\nAuthor: {author}'.",
    "prompts.jsonl": "300 open-ended user prompts (`prompt_id`, `prompt` as chat messages, `category`, `split`) for "
    "candidate generation and PPO; 60 held out as split=test.",
    "preferences.jsonl": "600 preference pairs over the bundled prompts (`prompt_id`, `prompt`, `chosen`, `rejected`, "
    "`margin`, `rule`, `split`): chosen follows the rubric, rejected breaks one rule; 120 held out as split=test.",
}


def bundled_path(name: str) -> Path:
    """Path of a bundled file, by file name or stem: ``bundled_path("instructions")`` or ``"instructions.jsonl"``."""
    file_name = name if name in BUNDLED_FILES else f"{name}.jsonl"
    if file_name not in BUNDLED_FILES:
        available = ", ".join(BUNDLED_FILES)
        raise UserError(f"unknown bundled dataset {name!r}; available: {available}")
    path = BUNDLED_DIR / file_name
    if not path.is_file():
        raise UserError(
            f"bundled dataset {file_name} is missing from {BUNDLED_DIR}; rebuild it with "
            "`python -m workbench.data.build_bundled`"
        )
    return path
