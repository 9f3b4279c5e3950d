"""Artifacts written atomically: to a temporary file beside the target, then renamed."""

from __future__ import annotations

import json
import logging
import os
import shutil
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


def move_folder_into_place(
    work_dir: str | Path, root: str | Path, already_there: Callable[[], bool]
) -> None:
    """Replace the folder ``root`` with the finished ``work_dir`` (a sibling). An old ``root`` is
    moved aside in one rename before it is deleted, so that a process killed while deleting it
    never leaves a half-deleted set under ``root``. When the final rename fails because another
    process put its own copy there first (``already_there()`` says it is the same), that copy is
    kept and ``work_dir`` deleted."""
    work_dir, root = Path(work_dir), Path(root)
    old = root.with_name(f"{root.name}.old-{os.getpid()}")
    if root.is_dir():
        os.rename(root, old)
        shutil.rmtree(old)
    try:
        os.rename(work_dir, root)
    except OSError:
        if already_there():
            logging.getLogger(__name__).info(
                "%s was completed by another process meanwhile; using it", root
            )
            shutil.rmtree(work_dir, ignore_errors=True)
            return
        raise
