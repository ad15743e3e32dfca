"""The inputs of a local run: a generated sample, or the user's own folder."""

from __future__ import annotations

import random
from pathlib import Path

from pipeline.local.services import LOCAL_MAX_OBJECT_BYTES
from pipeline.spec import SpecError

LOCAL_SAMPLE_OBJECTS = 300

ODD_KEYS = (
    "with space/file one.txt",
    "unicode/naïve café ✓.txt",
    "日本語/ファイル.txt",
    "symbols/a+b=c&d;e,f.txt",
    "deep/a/b/c/d/e/f.bin",
)
"""Keys a pipeline must handle: spaces, unicode, reserved URL characters, deep paths."""


def sample_objects(
    count: int = LOCAL_SAMPLE_OBJECTS,
    *,
    max_object_bytes: int = LOCAL_MAX_OBJECT_BYTES,
    seed: int = 7,
) -> dict[str, bytes]:
    """A deterministic sample: text and random bytes of mixed sizes, keys with spaces and
    unicode, one empty object, one over the size limit, and a directory marker."""
    rng = random.Random(seed)
    words = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
    objects: dict[str, bytes] = {}
    for number in range(max(count - len(ODD_KEYS) - 3, 0)):
        size = rng.choice((1, 200, 2_000, 20_000, 80_000))
        if number % 3:
            text = " ".join(rng.choice(words) for _ in range(size // 5 + 1))
            body = text.encode()[:size]
        else:
            body = rng.randbytes(size)
        objects[f"data/{number % 17:02d}/object-{number:05d}.dat"] = body
    for key in ODD_KEYS:
        objects[key] = f"contents of {key}\n".encode() * 3
    objects["empty/zero-bytes.txt"] = b""
    objects["big/oversize.bin"] = b"\x01" * (max_object_bytes + 1)
    objects["folder/"] = b""
    return objects


def read_input_dir(path: Path) -> dict[str, bytes]:
    if not path.is_dir():
        raise SpecError(f"--input {str(path)!r} is not a folder; name a folder of files to process")
    files = {
        str(f.relative_to(path).as_posix()): f.read_bytes()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }
    if not files:
        raise SpecError(f"--input {str(path)!r} has no files")
    return files
