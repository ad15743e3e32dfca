"""The library's own work, written as steps against the public contract (:mod:`pipeline.steps`),
as yours are: the default when a pipeline is given no steps.

- CPU: a SHA-256 digest and bzip2 compression at its highest level, streamed from disk to disk;
- memory: byte statistics (size, digest, entropy, distinct bytes, lines) of the decompressed
  result, in bounded memory whatever the object's size;
- a check: decompressing the CPU step's result gives back every input (same digest, same size).
"""

from __future__ import annotations

import bz2
import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.steps import ObjectRef, StepRecord

CHUNK = 1024 * 1024
"""Bytes read at a time, and at most this many decompressed at a time."""


def digest_and_compress(source: Path, target: Path, obj: ObjectRef) -> dict[str, Any]:
    """The CPU step: the object's SHA-256, and its bzip2 (level 9) in ``target``."""
    digest = hashlib.sha256()
    compressor = bz2.BZ2Compressor(9)
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            writer.write(compressor.compress(chunk))
        writer.write(compressor.flush())
        written = writer.tell()
    return {"sha256": digest.hexdigest(), "compressed_size": written}


class Measure:
    """Statistics of one object, fed in pieces."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.counts: Counter[int] = Counter()
        self.size = 0
        self.newlines = 0
        self.last = b""

    def update(self, piece: bytes) -> None:
        if not piece:
            return
        self.digest.update(piece)
        self.counts.update(piece)
        self.size += len(piece)
        self.newlines += piece.count(b"\n")
        self.last = piece[-1:]

    def result(self) -> dict[str, Any]:
        size = self.size
        entropy = -sum(c / size * math.log2(c / size) for c in self.counts.values()) if size else 0
        return {
            "sha256": self.digest.hexdigest(),
            "size": size,
            "entropy_bits_per_byte": round(entropy, 6),
            "distinct_bytes": len(self.counts),
            "lines": self.newlines + (1 if size and self.last != b"\n" else 0),
        }


def measure_compressed(chunks: Iterable[bytes]) -> dict[str, Any]:
    """Statistics of what a bzip2 stream decompresses to, never holding more than one
    compressed chunk and :data:`CHUNK` decompressed bytes (a small input that decompresses to
    gigabytes is taken a piece at a time)."""
    stats = Measure()
    decompressor = bz2.BZ2Decompressor()
    for chunk in chunks:
        stats.update(decompressor.decompress(chunk, max_length=CHUNK))
        while not decompressor.eof and decompressor.needs_input is False:
            stats.update(decompressor.decompress(b"", max_length=CHUNK))
    if not decompressor.eof:
        raise ValueError("the compressed stream ends early")
    return stats.result()


def byte_statistics(source: Path, target: Path, obj: ObjectRef) -> dict[str, Any]:
    """The memory step: statistics of the decompressed CPU result, also written to
    ``target`` as the object's output."""

    def chunks() -> Iterable[bytes]:
        with source.open("rb") as reader:
            while chunk := reader.read(CHUNK):
                yield chunk

    stats = measure_compressed(chunks())
    target.write_text(json.dumps({"key": obj.key, **stats}, sort_keys=True))
    return stats


def round_trip(records: Iterable[StepRecord]) -> list[str]:
    """The check: every object's round trip (compressed by the CPU step, decompressed by the
    memory step) gives back its digest and size."""
    problems = []
    for record in records:
        if record.cpu.get("sha256") != record.memory.get("sha256"):
            problems.append(f"{record.key!r}: digest after the round trip differs from the input's")
        if record.memory.get("size") != record.size:
            problems.append(
                f"{record.key!r}: {record.memory.get('size')} bytes after the round trip, "
                f"{record.size} in"
            )
    return problems
