"""Reading the project's JSONL data files (eval sets, manifests, corpora) with errors that name
the file and line, so a user can fix their data without guessing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import json


def read_jsonl(path: Path, error: type[Exception] = ValueError) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line; a line that is not JSON raises
    `error("FILE:LINE: not JSON (...)")`."""
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{number}: not JSON ({exc})") from exc
