"""Small durable files: a reader never sees half of one, a crash never leaves a torn one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Any, fsync: bool = True) -> None:
    """Write ``data`` as JSON to a temporary file beside ``path``, fsync it, rename it over ``path``.

    ``fsync=False`` for state that is rebuilt from durable records after a crash: a process
    crash still sees the new file (the page cache survives it), and a reader never sees half.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
