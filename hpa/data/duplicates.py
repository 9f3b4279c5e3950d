"""Near-duplicate samples: the same field of view saved at another size, compression or brightness.

HPA data is full of them (Kaggle train, Kaggle test and HPAv18 share fields of view). Each stain
of a sample gets a 256-bit perceptual hash (``imagehash.phash``: the signs of the 16 x 16
lowest frequencies of the DCT of the image shrunk to 64 x 64, against their median), so a sample has
four hashes. The distance of two samples is the sum of the Hamming distances of their four stain
hashes (0..1024); two samples are near-duplicates when it is at most a threshold
(``DEFAULT_THRESHOLD``; docs/duplicates-and-external-data.md gives the measurements behind it).

Hashes are computed once per data root, over a process pool, and cached like the image cache
(hpa.data.cache: ``ROOT/cache/`` or a folder of ``cache_dir`` when the root is read-only) in one
file, ``{image folder}-phash.npz``, holding the ids, the hashes and the fingerprint they were
computed from (ids, count, size and newest time of the files): changed files are hashed again.

Matching compares every pair, vectorised: tiles of XORed uint64 hashes counted with
``np.bitwise_count``, on threads (numpy releases the GIL), without a Python loop over pairs.

Command line: ``python -m hpa.data.duplicates ROOT [ROOT ...] --out FILE.csv`` lists the pairs
within and across Kaggle-layout roots (``ROOT/train.csv``, ``ROOT/train/``), one row a pair:
``root_a,Id_a,root_b,Id_b,distance``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import zipfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from itertools import repeat
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from hpa.core.errors import HPAInputError, exit_on_input_error
from hpa.core.io import atomic_path, write_csv
from hpa.core.labels import CHANNELS
from hpa.data.cache import (
    _init_build_worker,
    cache_folder,
    default_build_workers,
    ids_digest,
    source_stat,
)
from hpa.data.reader import find_channel_file, read_channel, read_ids_csv

log = logging.getLogger(__name__)

HASH_VERSION = 1
"""Bumped when the hash changes, so that cached hashes are computed again."""

HASH_SIZE = 16
"""phash's side: HASH_SIZE**2 = 256 bits per stain. The 64 bits of the usual 8 x 8 hash tell
distinct images apart by a factor 2.5 only (most distant degraded copy 8 bits, closest distinct
image 20) and join distinct synthetic images; 256 bits by a factor 5 (20 and 98)."""

WORDS_PER_STAIN = HASH_SIZE**2 // 64

HASH_METHOD = f"phash-{HASH_SIZE}x{HASH_SIZE} per stain"

DEFAULT_THRESHOLD = 160
"""Largest summed Hamming distance (of 4 x 256 bits) of two near-duplicate samples. Degraded
copies of real HPA channels measure at most 20 per stain (80 in all), distinct fields of view at
least 98 per stain, distinct synthetic samples at least 302 in all; see
docs/duplicates-and-external-data.md."""

HASH_INPUT_SIZE = 4 * HASH_SIZE
"""Channels are shrunk (area-averaged) to the size phash works at before hashing: with OpenCV
that is several times faster than PIL's resampling of a full 512 px image, with the same
separation of duplicates from distinct images."""

MAX_DISTANCE = HASH_SIZE**2 * len(CHANNELS)

PREFILTER_WORDS = 6
"""Matching first sums the distances of this many 64-bit words of each pair (one or two of each
stain): distinct samples are ~32 bits apart per word, so at the default threshold the partial
sum rules out all but a few pairs, whose remaining words are then counted."""

EXTERNAL = "external"
"""The name of the external images (data.external) in the leak report."""

CHUNK_SIZE = 32
"""Samples hashed per task of a process pool."""

SMALL_SET = 256
"""Sets smaller than this are hashed in the calling process by default."""

_ROW_BLOCK = 128
_COLUMN_BLOCK = 8192


# --------------------------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------------------------


def channel_hash(channel: np.ndarray) -> np.ndarray:
    """The perceptual hash of one uint8 H x W channel: WORDS_PER_STAIN uint64 words."""
    bits = imagehash.phash(Image.fromarray(channel), hash_size=HASH_SIZE).hash  # booleans
    return np.packbits(bits.ravel()).view(">u8").astype(np.uint64)


def sample_hashes(image_dir: str | Path, sample_id: str) -> np.ndarray:
    """The hashes of the four stains of one sample, in RGBY order, as one row of uint64 words."""
    return np.concatenate(
        [
            channel_hash(
                read_channel(find_channel_file(image_dir, sample_id, color), HASH_INPUT_SIZE)
            )
            for color in CHANNELS
        ]
    )


def _hash_chunk(image_dir: str, ids: list[str]) -> np.ndarray:
    return np.stack([sample_hashes(image_dir, sample_id) for sample_id in ids])


def _collect(hashes: np.ndarray, chunk_results: Iterable[np.ndarray], progress: tqdm) -> None:
    """Write the hashes of consecutive chunks, in order, into the rows of ``hashes``."""
    start = 0
    for chunk_hashes in chunk_results:
        hashes[start : start + len(chunk_hashes)] = chunk_hashes
        start += len(chunk_hashes)
        progress.update(len(chunk_hashes))


def compute_hashes(
    image_dir: str | Path, ids: np.ndarray, num_workers: int | None = None
) -> np.ndarray:
    """The hash rows of ``ids`` (N x 16 uint64), over a process pool, with a progress bar."""
    image_dir = Path(image_dir)
    ids = [str(sample_id) for sample_id in np.asarray(ids).tolist()]
    if num_workers is None:  # a pool's start-up costs more than it saves on a small set
        num_workers = default_build_workers() if len(ids) >= SMALL_SET else 1
    num_workers = max(1, min(num_workers, math.ceil(len(ids) / CHUNK_SIZE)))
    chunks = [ids[start : start + CHUNK_SIZE] for start in range(0, len(ids), CHUNK_SIZE)]
    hashes = np.zeros((len(ids), WORDS_PER_STAIN * len(CHANNELS)), dtype=np.uint64)
    progress = tqdm(total=len(ids), desc=f"hashing {image_dir}", unit="sample")
    with progress:
        if num_workers == 1:
            _collect(hashes, map(_hash_chunk, repeat(str(image_dir)), chunks), progress)
            return hashes
        # a fork server, not fork: see hpa.data.cache (OpenCV's and torch's threads)
        context = get_context("forkserver")
        context.set_forkserver_preload([__name__])
        with ProcessPoolExecutor(
            num_workers, mp_context=context, initializer=_init_build_worker
        ) as pool:
            _collect(hashes, pool.map(_hash_chunk, repeat(str(image_dir)), chunks), progress)
    return hashes


def hash_fingerprint(image_dir: str | Path, ids: np.ndarray) -> dict:
    return {
        "version": HASH_VERSION,
        "method": HASH_METHOD,
        "num_samples": len(ids),
        "ids_sha256": ids_digest(ids),
        "source": source_stat(image_dir, ids),
    }


def hash_file(image_dir: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Where the hashes of ``image_dir`` are cached (raises HPAInputError when nowhere)."""
    image_dir = Path(image_dir)
    return cache_folder(image_dir, cache_dir) / f"{image_dir.name}-phash.npz"


def _read_cached(path: Path, expected: dict) -> np.ndarray | None:
    try:
        with np.load(path) as stored:
            if json.loads(str(stored["fingerprint"])) == expected:
                return stored["hashes"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # unreadable: hashed again
    return None


def root_hashes(
    image_dir: str | Path,
    ids: np.ndarray,
    cache_dir: str | Path | None = None,
    num_workers: int | None = None,
) -> np.ndarray:
    """The hash rows of ``ids`` in ``image_dir`` (N x 16 uint64): read from the hash cache when
    its fingerprint matches the files, computed (and cached) otherwise."""
    image_dir = Path(image_dir)
    ids = np.asarray(ids).astype(str)
    expected = hash_fingerprint(image_dir, ids)
    try:
        path = hash_file(image_dir, cache_dir)
    except HPAInputError as error:
        log.warning("hashes of %s are not cached: %s", image_dir, error)
        return compute_hashes(image_dir, ids, num_workers)
    hashes = _read_cached(path, expected)
    if hashes is not None:
        log.info("using the hashes in %s (%d samples)", path, len(ids))
        return hashes
    log.info("hashing %d samples of %s into %s", len(ids), image_dir, path)
    hashes = compute_hashes(image_dir, ids, num_workers)
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, ids=ids, hashes=hashes, fingerprint=json.dumps(expected))
    return hashes


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------


class RowPairs(NamedTuple):
    """Pairs of rows, ``first[k]`` and ``second[k]``, at ``distance[k]``."""

    first: np.ndarray
    second: np.ndarray
    distance: np.ndarray

    @classmethod
    def empty(cls) -> RowPairs:
        nothing = np.zeros(0, dtype=np.int64)
        return cls(nothing, nothing.copy(), nothing.copy())

    @classmethod
    def concatenate(cls, parts: Sequence[RowPairs]) -> RowPairs:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate(columns) for columns in zip(*parts, strict=True)))


def _tile_pairs(rows: np.ndarray, columns: np.ndarray, threshold: int) -> RowPairs:
    """Pairs of ``rows`` (r x W hash words) and ``columns`` (W x c) within ``threshold``."""
    partial = np.zeros((len(rows), columns.shape[1]), dtype=np.uint16)
    for word in range(PREFILTER_WORDS):
        partial += np.bitwise_count(rows[:, word, None] ^ columns[word])
    first, second = np.nonzero(partial <= threshold)
    distance = partial[first, second].astype(np.int64)
    for word in range(PREFILTER_WORDS, rows.shape[1]):
        distance += np.bitwise_count(rows[first, word] ^ columns[word, second])
    keep = distance <= threshold
    return RowPairs(first[keep], second[keep], distance[keep])


def near_duplicate_pairs(
    hashes: np.ndarray,
    other: np.ndarray | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    num_threads: int | None = None,
) -> RowPairs:
    """Row pairs whose summed stain-hash distance is at most ``threshold``: within ``hashes``
    (``first < second``) when ``other`` is None, else between rows of ``hashes`` (first) and of
    ``other`` (second). Sorted by (first, second)."""
    check_threshold(threshold)
    within = other is None
    # words in the order word 0 of every stain, word 1 of every stain, ...: the prefilter's
    # words come from all four stains
    interleaved = np.arange(hashes.shape[1]).reshape(len(CHANNELS), -1).T.ravel()
    hashes = np.asarray(hashes, dtype=np.uint64)[:, interleaved]
    other = hashes if within else np.asarray(other, dtype=np.uint64)[:, interleaved]
    columns = np.ascontiguousarray(other.T)  # W x M: one row per hash word

    def block(start: int) -> RowPairs:
        rows = hashes[start : start + _ROW_BLOCK]
        found = []
        for column in range(start if within else 0, len(other), _COLUMN_BLOCK):
            tile = _tile_pairs(rows, columns[:, column : column + _COLUMN_BLOCK], threshold)
            first, second = tile.first + start, tile.second + column
            keep = second > first if within else slice(None)
            found.append(RowPairs(first[keep], second[keep], tile.distance[keep]))
        return RowPairs.concatenate(found)

    num_threads = num_threads or default_build_workers()
    with ThreadPoolExecutor(num_threads) as pool:
        pairs = RowPairs.concatenate(list(pool.map(block, range(0, len(hashes), _ROW_BLOCK))))
    order = np.lexsort((pairs.second, pairs.first))
    return RowPairs(pairs.first[order], pairs.second[order], pairs.distance[order])


def check_threshold(threshold: int) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, int | np.integer):
        raise HPAInputError(f"duplicate threshold must be an integer, got {threshold!r}")
    if not 0 <= threshold < MAX_DISTANCE // 2:
        raise HPAInputError(
            f"duplicate threshold must be in 0..{MAX_DISTANCE // 2 - 1} (distinct images are "
            f"about {MAX_DISTANCE // 2} apart), got {threshold}"
        )


def duplicate_groups(num_rows: int, pairs: RowPairs) -> np.ndarray:
    """Group number of each row: the connected components of the pair graph (a row without a
    duplicate is a group of its own)."""
    graph = coo_matrix(
        (np.ones(len(pairs.first), dtype=np.int8), (pairs.first, pairs.second)),
        shape=(num_rows, num_rows),
    )
    return connected_components(graph, directed=False)[1]


# --------------------------------------------------------------------------------------------
# Leak report
# --------------------------------------------------------------------------------------------

# external, then hpa.data.split.SPLITS (not imported: it loads scikit-learn, which the processes
# of the hashing pool would load for nothing)
_REPORT_ORDER = (EXTERNAL, "train", "val", "test")
REPORT_ROWS: tuple[str, ...] = (
    "train-val",
    "train-test",
    "val-test",
    "train-train",
    "val-val",
    "test-test",
    "external-train",
    "external-val",
    "external-test",
)
LEAKS = frozenset({"train-val", "train-test", "val-test", "external-val", "external-test"})


def split_pair_counts(splits_a: np.ndarray, splits_b: np.ndarray) -> dict[str, int]:
    """Number of pairs per pair of split names (``train-val``, ``external-test``, ...)."""
    counts = dict.fromkeys(REPORT_ROWS, 0)
    for a, b in zip(np.asarray(splits_a).tolist(), np.asarray(splits_b).tolist(), strict=True):
        a, b = sorted((a, b), key=_REPORT_ORDER.index)
        counts[f"{a}-{b}"] += 1
    return counts


def leak_report(ignoring_duplicates: dict[str, int], this_run: dict[str, int]) -> pd.DataFrame:
    """One row per pair of splits: ``splits``, ``leak`` (whether such a pair puts one image on
    both sides of training and evaluation), the pair counts of the split made
    ``ignoring_duplicates`` (with every external image) and of ``this_run``."""
    return pd.DataFrame(
        {
            "splits": REPORT_ROWS,
            "leak": [name in LEAKS for name in REPORT_ROWS],
            "ignoring_duplicates": [ignoring_duplicates[name] for name in REPORT_ROWS],
            "this_run": [this_run[name] for name in REPORT_ROWS],
        }
    )


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

PAIR_COLUMNS = ("root_a", "Id_a", "root_b", "Id_b", "distance")


def pair_table(
    roots: Sequence[str], ids: Sequence[np.ndarray], hashes: Sequence[np.ndarray], threshold: int
) -> pd.DataFrame:
    """Near-duplicate pairs within and across roots, ``PAIR_COLUMNS``."""
    tables = []
    for a in range(len(roots)):
        for b in range(a, len(roots)):
            pairs = near_duplicate_pairs(hashes[a], None if a == b else hashes[b], threshold)
            tables.append(
                pd.DataFrame(
                    {
                        "root_a": roots[a],
                        "Id_a": ids[a][pairs.first],
                        "root_b": roots[b],
                        "Id_b": ids[b][pairs.second],
                        "distance": pairs.distance,
                    },
                    columns=list(PAIR_COLUMNS),
                )
            )
    return pd.concat(tables, ignore_index=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hpa.data.duplicates",
        description="List near-duplicate samples within and across Kaggle-layout roots "
        "(ROOT/train.csv, ROOT/train/{Id}_{color}.png).",
    )
    parser.add_argument("roots", nargs="+", type=Path, metavar="ROOT")
    parser.add_argument("--out", required=True, type=Path, help="the csv of pairs to write")
    parser.add_argument(
        "--threshold",
        type=int,
        default=DEFAULT_THRESHOLD,
        help=f"largest summed distance of the 4 stain hashes (default {DEFAULT_THRESHOLD})",
    )
    parser.add_argument("--workers", type=int, default=None, help="hashing processes")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="hash cache of read-only roots"
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with exit_on_input_error():
        check_threshold(arguments.threshold)
        roots = [str(root) for root in arguments.roots]
        if len(set(roots)) != len(roots):
            raise HPAInputError(f"a root is given twice: {roots}")
        all_ids, all_hashes = [], []
        for root in arguments.roots:
            ids = read_ids_csv(root / "train.csv")
            all_ids.append(ids)
            all_hashes.append(
                root_hashes(root / "train", ids, arguments.cache_dir, arguments.workers)
            )
        table = pair_table(roots, all_ids, all_hashes, arguments.threshold)
        write_csv(arguments.out, table)
        log.info("%d near-duplicate pair(s) written to %s", len(table), arguments.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
