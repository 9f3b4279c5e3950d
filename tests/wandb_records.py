"""Read back what an offline W&B run wrote: its ``run-<id>.wandb`` transaction log.

wandb ships no reader for these files. They are a LevelDB-style log: a 7-byte file header
(``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of records, each with a 7-byte header
(crc32 of type byte + data, uint32 little-endian; length, uint16; type, uint8: FULL=1, FIRST=2,
MIDDLE=3, LAST=4) whose payloads, joined, are ``wandb_internal_pb2.Record`` protobuf messages.
A block's tail shorter than a record header is zero padding.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK_SIZE = 32 * 1024
FILE_HEADER = struct.Struct("<4sHB")
RECORD_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> Iterator[bytes]:
    ident, magic, version = FILE_HEADER.unpack_from(data)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a W&B transaction log"
    offset, pending = FILE_HEADER.size, b""
    while offset + RECORD_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - offset % BLOCK_SIZE
        if left_in_block < RECORD_HEADER.size:
            offset += left_in_block  # zero padding at the end of a block
            continue
        checksum, length, kind = RECORD_HEADER.unpack_from(data, offset)
        if length == 0 and kind == 0:
            offset += left_in_block  # an unwritten rest of a block
            continue
        start = offset + RECORD_HEADER.size
        chunk = data[start : start + length]
        assert zlib.crc32(bytes([kind]) + chunk) == checksum, f"bad checksum at byte {offset}"
        offset = start + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    records = []
    for payload in _payloads(Path(path).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


class OfflineRun:
    """History rows, the final summary and the config of one offline run directory."""

    def __init__(self, run_dir: Path) -> None:
        (log_file,) = Path(run_dir).glob("run-*.wandb")
        self.records = read_records(log_file)
        self.history: list[dict] = []
        self.summary: dict = {}
        self.config: dict = {}
        self.run: wandb_internal_pb2.RunRecord | None = None
        for record in self.records:
            kind = record.WhichOneof("record_type")
            if kind == "history":
                self.history.append(
                    {_key(item): json.loads(item.value_json) for item in record.history.item}
                )
            elif kind == "summary":
                for item in record.summary.update:
                    self.summary[_key(item)] = json.loads(item.value_json)
            elif kind == "config":
                for item in record.config.update:
                    self.config[_key(item)] = json.loads(item.value_json)
            elif kind == "run":
                self.run = record.run

    def values(self, key: str) -> list:
        """Every logged value of ``key``, in logging order."""
        return [row[key] for row in self.history if key in row]
