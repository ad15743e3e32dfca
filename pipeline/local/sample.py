"""The inputs of a local run: a generated sample, or the user's own folder."""

from __future__ import annotations

import random
from pathlib import Path

from pipeline.errors import SpecError
from pipeline.local.resources import LOCAL_MAX_OBJECT_BYTES

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


NOT_UTF8 = "name is not valid UTF-8, which S3 object keys must be"


def read_input_dir(path: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """(key -> contents, name -> reason) of the files under ``path``: every file becomes an
    object of BucketA, or is listed with the reason it could not (its name is not UTF-8, so no
    S3 key can hold it; shown with its undecodable bytes escaped)."""
    if not path.is_dir():
        raise SpecError(f"--input {str(path)!r} is not a folder; name a folder of files to process")
    files: dict[str, bytes] = {}
    not_seeded: dict[str, str] = {}
    for file in sorted(path.rglob("*")):
        if not file.is_file():
            continue
        name = file.relative_to(path).as_posix()
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            not_seeded[shown] = NOT_UTF8
            continue
        files[name] = file.read_bytes()
    if not files and not not_seeded:
        raise SpecError(f"--input {str(path)!r} has no files")
    if not files:
        raise SpecError(
            f"--input {str(path)!r} has no file whose name S3 can hold (not valid UTF-8)"
        )
    return files, not_seeded
