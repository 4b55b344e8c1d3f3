"""Line-numbered JSONL reading for training files: a bad line is named, never half-read."""
from __future__ import annotations

import json
from pathlib import Path


def read_jsonl(path: Path, required: set[str], check=None) -> list[dict]:
    """Every non-blank line as an object holding ``required`` (and passing ``check``, which returns a complaint
    or None); ValueError naming the file and line otherwise."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(row, dict) or not required <= set(row):
            raise ValueError(f"{path}:{number}: a row needs {', '.join(sorted(required))}")
        complaint = check(row) if check else None
        if complaint:
            raise ValueError(f"{path}:{number}: {complaint}")
        rows.append(row)
    return rows
