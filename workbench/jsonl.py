"""JSON Lines files read row by row, every error naming the file and the line as an editor numbers it (from 1)."""

from __future__ import annotations

import json
from pathlib import Path

from workbench.errors import UserError


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a one-line UserError for bytes that are not UTF-8, a line
    that is not a JSON object, or a file without any row."""
    rows = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                found = raw[error.start : error.start + 1].hex()
                raise UserError(f"{path}:{number}: expected UTF-8 text, found the byte 0x{found}") from error
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                message = f"{path}:{number}: expected a JSON object, found invalid JSON ({error.msg})"
                raise UserError(message) from error
            if not isinstance(row, dict):
                raise UserError(f"{path}:{number}: expected a JSON object, found {type(row).__name__}")
            rows.append((number, row))
    if not rows:
        raise UserError(f"{path}: expected JSON Lines rows, found no rows (the file is empty)")
    return rows
