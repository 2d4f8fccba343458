"""SFT data formats: detect which one a dataset is in, check it, and turn format templates into text.

The formats are TRL's: conversational `messages`; `prompt`/`completion` (strings or message lists); plain `text`.
A recipe may instead give templates over arbitrary columns, e.g. `"Quote: {quote}\\nAuthor: {author}"`.
"""

from __future__ import annotations

import string

from workbench.errors import UserError

ROLES = {"system", "user", "assistant", "tool"}


def template_columns(template: str) -> list[str]:
    """Column names a `str.format` template refers to."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as error:
        raise UserError(f"template {template!r} is not a valid format string: {error}") from error


def detect_kind(columns: list[str], where: str) -> str:
    if "messages" in columns:
        return "messages"
    if "prompt" in columns and "completion" in columns:
        return "prompt_completion"
    if "text" in columns:
        return "text"
    raise UserError(
        f"{where}: no SFT format found in columns {columns}; expected `messages`, `prompt`+`completion` or `text`, "
        "or give `template` (or `prompt_template` + `completion_template`) over the columns you have"
    )


def check_columns(columns: list[str], needed: list[str], where: str) -> None:
    missing = [name for name in needed if name not in columns]
    if missing:
        raise UserError(f"{where}: missing column(s) {missing}; the dataset has {columns}")


def check_messages(messages, where: str) -> None:
    """A conversation must be a non-empty list of {role, content} with known roles and an assistant turn."""
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: `messages` must be a non-empty list of {{role, content}}")
    for turn in messages:
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise UserError(f"{where}: every message needs `role` and `content`; got {turn!r}")
        if turn["role"] not in ROLES:
            raise UserError(f"{where}: unknown role {turn['role']!r}; expected one of {sorted(ROLES)}")
    if not any(turn["role"] == "assistant" for turn in messages):
        raise UserError(f"{where}: a conversation has no assistant turn to learn from")


def render(template: str, row: dict, where: str) -> str:
    try:
        return template.format(**row)
    except KeyError as error:
        raise UserError(f"{where}: template refers to column {error} which the row does not have") from error


def templated_row(
    row: dict, template: str | None, prompt_template: str | None, completion_template: str | None, where
):
    """A row in TRL's text or prompt/completion format, from the recipe's templates."""
    if template:
        return {"text": render(template, row, where)}
    return {
        "prompt": render(prompt_template, row, where),
        "completion": render(completion_template, row, where),
    }


def to_text(row: dict, kind: str, tokenizer) -> str:
    """Render any kind as plain text (the tokenizer's chat template for conversations), for mixing unlike kinds."""
    if kind == "text":
        return row["text"]
    if kind == "messages":
        return tokenizer.apply_chat_template(row["messages"], tokenize=False)
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    return prompt + completion
