"""COCO's compressed run-length encoding of a binary mask, written out in plain numpy.

This is our own reading of the format that ``pycocotools`` writes (``rleToString`` and
``rleFrString`` in its ``maskApi.c``), kept independent of pycocotools so that the tests can
cross-check a submission's masks against a second decoder, and so that ``decode_mask`` can
refuse a truncated RLE (pycocotools fills the pixels it was not told about with whatever the
memory held).

The format, for a mask of ``height`` x ``width`` pixels:

1. Runs: the pixels are read in column-major (Fortran) order, column 0 top to bottom, then
   column 1, ...; the counts are the lengths of alternating runs of 0s and 1s, starting with a
   run of 0s (of length 0 when pixel (0, 0) is set). They add up to ``height * width``.
2. Delta coding: count ``i`` for ``i >= 3`` (the fourth count on) is stored as its difference
   from count ``i - 2`` (the previous run of the same value), so it may be negative; counts
   0, 1 and 2 are stored as they are.
3. Each stored number is a variable-length signed integer in 5-bit chunks, least significant
   chunk first, one ASCII character per chunk: ``character = 48 + chunk (+ 32 when another
   chunk follows)``, so characters ``'0'`` (48) to ``'o'`` (111). The number is negative when
   bit 0x10 of its last chunk is set (two's-complement sign extension).
"""

from __future__ import annotations

import numpy as np

_OFFSET = 48  # ASCII '0'
_MORE = 0x20  # another chunk follows
_SIGN = 0x10  # in the last chunk: the number is negative
_CHUNK = 0x1F  # five bits of the number


def mask_to_runs(mask: np.ndarray) -> list[int]:
    """The run lengths of a 2-D 0/1 mask in column-major order, starting with a run of 0s."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    pixels = mask.astype(bool).ravel(order="F")
    if pixels.size == 0:
        raise ValueError(f"the mask has no pixels (shape {mask.shape})")
    changes = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    edges = np.concatenate([[0], changes, [pixels.size]])
    runs = np.diff(edges).tolist()
    if pixels[0]:
        runs.insert(0, 0)
    return runs


def runs_to_counts(runs: list[int]) -> bytes:
    """Delta-code and pack run lengths into COCO's compressed counts (ASCII bytes)."""
    characters = bytearray()
    for index, run in enumerate(runs):
        value = int(run) - (int(runs[index - 2]) if index > 2 else 0)
        more = True
        while more:
            chunk = value & _CHUNK
            value >>= 5  # arithmetic shift: a negative number stays negative, ending at -1
            more = value != -1 if chunk & _SIGN else value != 0
            characters.append(_OFFSET + chunk + (_MORE if more else 0))
    return bytes(characters)


def counts_to_runs(counts: bytes) -> list[int]:
    """Unpack COCO's compressed counts into run lengths; ValueError if they are malformed."""
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    runs: list[int] = []
    value = shift = 0
    pending = False
    for position, character in enumerate(bytes(counts)):
        chunk = character - _OFFSET
        if not 0 <= chunk < 64:
            raise ValueError(
                f"RLE counts: character {chr(character)!r} at position {position} is outside "
                "'0'..'o'"
            )
        value |= (chunk & _CHUNK) << shift
        shift += 5
        pending = bool(chunk & _MORE)
        if pending:
            continue
        if chunk & _SIGN:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError(f"RLE counts: run {len(runs)} has a negative length ({value})")
        runs.append(value)
        value = shift = 0
    if pending:
        raise ValueError("RLE counts: the last number is cut off (its final chunk is missing)")
    return runs


def encode_coco_rle_counts(mask: np.ndarray) -> bytes:
    """A 2-D 0/1 mask as COCO compressed counts: what ``pycocotools.mask.encode`` puts in
    ``"counts"`` for ``np.asfortranarray(mask.astype(np.uint8))``."""
    return runs_to_counts(mask_to_runs(mask))


def decode_coco_rle_counts(counts: bytes, height: int, width: int) -> np.ndarray:
    """The ``height`` x ``width`` bool mask that COCO compressed ``counts`` describe.

    ValueError when the counts are malformed or their runs do not add up to ``height * width``.
    """
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"mask size must be positive, got height {height}, width {width}")
    runs = counts_to_runs(counts)
    if sum(runs) != height * width:
        raise ValueError(
            f"RLE counts cover {sum(runs)} pixels, but a {height} x {width} mask has "
            f"{height * width}"
        )
    values = np.arange(len(runs)) % 2 == 1  # runs alternate 0, 1, 0, ... from a run of 0s
    pixels = np.repeat(values, runs)
    return pixels.reshape((height, width), order="F")
