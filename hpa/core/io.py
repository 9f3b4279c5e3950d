"""Artifacts written atomically: to a temporary file beside the target, then renamed."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path in the target's folder; on success rename it to ``path``.

    On error the temporary file is removed and an existing ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        # mkstemp creates files readable by their owner only; give the artifact the mode any
        # other new file gets (0666 less the umask), so colleagues can read a shared run dir
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: os.umask can only be read by setting it, and the umask is the process's,
# so flipping it on every write would let a file another thread creates meanwhile get mode 0666.
_UMASK = _read_umask()


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    with atomic_path(path) as temporary:
        write(temporary)


def write_json(path: str | Path, data: Mapping) -> None:
    write_atomic(path, lambda p: p.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    write_atomic(path, lambda p: frame.to_csv(p, index=False))


def write_bytes(path: str | Path, data: bytes) -> None:
    write_atomic(path, lambda p: p.write_bytes(data))
