"""A packed uint8 cache of decoded images: one ``.npy`` file of N x S x S x 4 (RGBY) samples.

Decoding four PNGs per sample every epoch is the bottleneck of an HPA pipeline. The cache decodes
every image once (in parallel over all cores), resizes it to the size the run reads
(``data.load_size`` when set, whose crops it trains on, else ``data.image_size``) and packs all
samples into one uint8 array stored as a standard ``.npy`` file, with two small companions::

    CACHE/{name}-s{S}.npy        the images, N x S x S x 4 uint8 (np.load(..., mmap_mode="r"))
    CACHE/{name}-s{S}.ids.npy    the sample id of each row
    CACHE/{name}-s{S}.json       the fingerprint the cache was built from

CACHE is ``ROOT/cache`` beside the data, or ``cache_dir/{root name}-{digest of root path}`` when
the data folder is not writable. The fingerprint holds a digest of the ids (so a changed csv
rebuilds the cache), the image size, and a cheap stat of the source files (count, total size,
newest modification time; not a re-hash of their content). A build writes the array under a
temporary name, renames it when every row is written, and writes the fingerprint last: a cache
without a matching fingerprint, such as an interrupted build, is never read and is rebuilt.

Rows are channels-last (S x S x 4, the four stains of a pixel side by side): the layout that
albumentations transforms and that the models run in (``channels_last``), so a row goes from the
file to a training batch without a transposing copy. Reading (``PackedImages``) copies one row
out of the file with ``os.preadv``; each process (each
DataLoader worker) opens the file lazily on first use. The pages stay in the kernel's page cache,
shared by all workers and reclaimable, instead of in each process's memory, so a cache larger
than RAM works and a process's resident memory does not grow with the data set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from hpa.core.errors import HPAInputError
from hpa.core.io import atomic_path, write_json
from hpa.data.reader import read_sample

log = logging.getLogger(__name__)

CACHE_VERSION = 2
"""Bumped when the layout or the decoding changes, so that old caches are rebuilt (2: rows
channels-last)."""

CHUNK_SIZE = 32
"""Samples decoded per task of a parallel build."""

SMALL_SET = 256
"""Sets smaller than this are built in the calling process by default."""


# --------------------------------------------------------------------------------------------
# Where a cache lives and what it was built from
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheFiles:
    """The three files of one cache."""

    images: Path
    ids: Path
    fingerprint: Path

    @classmethod
    def at(cls, folder: Path, stem: str) -> CacheFiles:
        return cls(folder / f"{stem}.npy", folder / f"{stem}.ids.npy", folder / f"{stem}.json")


def _is_writable_folder(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def cache_folder(image_dir: str | Path, cache_dir: str | Path | None = None) -> Path:
    """``ROOT/cache`` beside ``image_dir`` (``ROOT/train``) when it is writable, else a folder of
    ``cache_dir`` named after the data root (its name and a digest of its absolute path)."""
    root = Path(image_dir).resolve().parent
    beside_data = root / "cache"
    if _is_writable_folder(beside_data):
        return beside_data
    if cache_dir is None:
        raise HPAInputError(
            f"cannot write a cache beside the data ({beside_data} is not writable): set "
            "paths.cache_dir (data.cache_dir) to a writable folder, or data.cache=false"
        )
    root_digest = hashlib.sha256(str(root).encode()).hexdigest()[:10]
    folder = Path(cache_dir) / f"{root.name}-{root_digest}"
    if not _is_writable_folder(folder):
        raise HPAInputError(f"cache folder {folder} is not writable (data.cache_dir)")
    return folder


def ids_digest(ids: np.ndarray) -> str:
    return hashlib.sha256("\n".join(np.asarray(ids).astype(str)).encode()).hexdigest()


def source_stat(image_dir: str | Path, ids: np.ndarray) -> dict[str, int]:
    """Count, total size and newest mtime (ns) of the channel files of ``ids`` in ``image_dir``:
    one directory listing and one stat per file, no reading of their content."""
    wanted = set(np.asarray(ids).astype(str))
    count = total_bytes = newest_mtime_ns = 0
    with os.scandir(image_dir) as entries:
        for entry in entries:
            sample_id, separator, _ = entry.name.rpartition("_")
            if not separator or sample_id not in wanted:
                continue
            stat = entry.stat()  # follows links: the linked file's size and time count
            count += 1
            total_bytes += stat.st_size
            newest_mtime_ns = max(newest_mtime_ns, stat.st_mtime_ns)
    return {"count": count, "total_bytes": total_bytes, "newest_mtime_ns": newest_mtime_ns}


def fingerprint(image_dir: str | Path, ids: np.ndarray, image_size: int) -> dict:
    return {
        "version": CACHE_VERSION,
        "image_size": int(image_size),
        "num_samples": len(ids),
        "ids_sha256": ids_digest(ids),
        "source": source_stat(image_dir, ids),
    }


def _read_fingerprint(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _init_build_worker() -> None:
    cv2.setNumThreads(1)  # one decoding process per core; OpenCV's own threads would compete


def _fill_rows(array_path: str, image_dir: str, ids: list[str], start: int, size: int) -> int:
    """Decode ``ids`` and write them into rows ``start...`` of the array at ``array_path``."""
    images = np.load(array_path, mmap_mode="r+")
    for offset, sample_id in enumerate(ids):
        images[start + offset] = read_sample(image_dir, sample_id, size).transpose(1, 2, 0)
    images.flush()
    del images
    return len(ids)


def _fill_all_rows(
    array_path: Path, image_dir: Path, ids: np.ndarray, size: int, num_workers: int
) -> None:
    chunks = [
        (start, [str(i) for i in ids[start : start + CHUNK_SIZE]])
        for start in range(0, len(ids), CHUNK_SIZE)
    ]
    progress = tqdm(total=len(ids), desc=f"caching {image_dir.name} at {size} px", unit="image")
    with progress:
        if num_workers <= 1:
            for start, chunk in chunks:
                progress.update(_fill_rows(str(array_path), str(image_dir), chunk, start, size))
            return
        # Not fork: a child forked after OpenCV or torch started their thread pools can hang.
        # A fork server imports this module once and forks clean workers from it.
        context = get_context("forkserver")
        context.set_forkserver_preload([__name__])
        with ProcessPoolExecutor(
            num_workers, mp_context=context, initializer=_init_build_worker
        ) as pool:
            futures = [
                pool.submit(_fill_rows, str(array_path), str(image_dir), chunk, start, size)
                for start, chunk in chunks
            ]
            for future in as_completed(futures):
                progress.update(future.result())


def default_build_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _remove_stale_temporaries(files: CacheFiles) -> None:
    """Temporary files of builds that were killed (an interrupted build leaves its temp file)."""
    for stale in files.images.parent.glob(f".{files.images.name}.*.tmp"):
        log.info("removing %s, left by an interrupted cache build", stale)
        stale.unlink(missing_ok=True)


def build_cache(
    files: CacheFiles,
    image_dir: str | Path,
    ids: np.ndarray,
    image_size: int,
    num_workers: int | None = None,
) -> None:
    """Decode every sample into ``files``; the fingerprint is written last, once all is done."""
    image_dir = Path(image_dir)
    ids = np.asarray(ids).astype(str)
    if num_workers is None:  # a pool's start-up costs more than it saves on a small set
        num_workers = default_build_workers() if len(ids) >= SMALL_SET else 1
    num_workers = max(1, min(num_workers, math.ceil(len(ids) / CHUNK_SIZE)))
    expected = fingerprint(image_dir, ids, image_size)
    files.fingerprint.unlink(missing_ok=True)  # from here on the old cache is invalid
    _remove_stale_temporaries(files)
    log.info(
        "building the image cache %s: %d samples at %d px, %d process(es)",
        files.images,
        len(ids),
        image_size,
        num_workers,
    )
    shape = (len(ids), int(image_size), int(image_size), 4)
    with atomic_path(files.images) as temporary:
        np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape).flush()
        _fill_all_rows(temporary, image_dir, ids, int(image_size), num_workers)
    with atomic_path(files.ids) as temporary:
        with open(temporary, "wb") as handle:
            np.save(handle, ids)
    write_json(files.fingerprint, expected)


def ensure_cache(
    image_dir: str | Path,
    ids: np.ndarray,
    image_size: int,
    cache_dir: str | Path | None = None,
    num_workers: int | None = None,
) -> PackedImages:
    """The cache of ``ids`` from ``image_dir`` at ``image_size``: reused when its fingerprint
    matches the data, (re)built otherwise."""
    image_dir = Path(image_dir)
    ids = np.asarray(ids).astype(str)
    files = CacheFiles.at(cache_folder(image_dir, cache_dir), f"{image_dir.name}-s{image_size}")
    stored = _read_fingerprint(files.fingerprint)
    if stored == fingerprint(image_dir, ids, image_size) and files.images.is_file():
        log.info("using the image cache %s (%d samples)", files.images, len(ids))
    else:
        reason = "none built yet" if stored is None else "the data or image size changed"
        log.info("image cache %s: %s", files.images, reason)
        build_cache(files, image_dir, ids, image_size, num_workers)
    return PackedImages(files.images)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


class PackedImages:
    """Rows of a packed cache, read on demand: ``images[row]`` is a fresh uint8 4 x S x S array
    (a view of the row's S x S x 4 pixels); ``images.read_into(row, out)`` fills an S x S x 4
    buffer.

    Pickles (to DataLoader workers) as its path only; each process opens the file on first use.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        mapped = np.load(self.path, mmap_mode="r")  # reads the header only
        shape, offset = mapped.shape, mapped.offset
        is_packed = mapped.dtype == np.uint8 and mapped.flags.c_contiguous
        del mapped
        if not is_packed or len(shape) != 4 or shape[3] != 4 or shape[1] != shape[2]:
            raise HPAInputError(f"{self.path} is not a packed N x S x S x 4 uint8 image cache")
        self.shape: tuple[int, int, int, int] = tuple(shape)
        self.image_size = int(shape[1])
        self.offset = int(offset)
        self.row_bytes = int(np.prod(shape[1:]))
        self._descriptor: int | None = None
        self._owner_pid: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def _file(self) -> int:
        if self._descriptor is None or self._owner_pid != os.getpid():
            self._descriptor = os.open(self.path, os.O_RDONLY)
            self._owner_pid = os.getpid()
        return self._descriptor

    def __getitem__(self, row: int) -> np.ndarray:
        return self.read_into(row, np.empty(self.shape[1:], dtype=np.uint8)).transpose(2, 0, 1)

    def read_into(self, row: int, out: np.ndarray) -> np.ndarray:
        """Copy row ``row`` into ``out``, a C-contiguous S x S x 4 uint8 array; returns ``out``."""
        if not 0 <= row < self.shape[0]:
            raise IndexError(f"row {row} out of range for {self.path} ({self.shape[0]} samples)")
        if out.shape != self.shape[1:] or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"read_into needs a C-contiguous {self.shape[1:]} uint8 array")
        read = os.preadv(self._file(), [out], self.offset + int(row) * self.row_bytes)
        if read != self.row_bytes:
            raise HPAInputError(f"{self.path} is truncated (row {row}): delete it to rebuild")
        return out

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_descriptor": None, "_owner_pid": None}

    def __del__(self) -> None:
        if self._descriptor is not None and self._owner_pid == os.getpid():
            os.close(self._descriptor)
