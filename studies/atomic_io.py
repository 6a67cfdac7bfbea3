"""Results on disk: atomic writes (a reader sees the old file or the new one, never half of it) and JSON lines."""
from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_atomic(path: str | Path, text: str) -> None:
    """Write text so that readers see the old file or the new one, never half of it."""
    write_atomic_bytes(path, text.encode())


def write_atomic_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        # The temporary name is chosen before the file exists (tempfile.mkstemp returns it only after creating
        # the file): a signal that stops the writer anywhere after the file is created still finds the name
        # here, and the file is removed.
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # open()'s mode, less the umask
            except FileExistsError:
                continue  # another writer's temporary file (a 48-bit name taken): not ours to remove
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            return
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
