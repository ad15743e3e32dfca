"""The inputs of a local run: a generated sample, or the user's own folder."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

from pipeline.errors import SpecError
from pipeline.local.deployment import LOCAL_MAX_OBJECT_BYTES

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
MAX_KEY_BYTES = 1024
"""S3's longest object key, in UTF-8 bytes."""


def read_input_dir(path: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """(key -> contents, name -> reason) of what is under ``path``: every regular file becomes
    an object of BucketA, or is listed with the reason it could not. Links are followed only
    to a regular file inside ``path``; special files, unreadable files and folders, and names
    no S3 key can hold are listed, never skipped silently."""
    if not path.is_dir():
        raise SpecError(f"--input {str(path)!r} is not a folder; name a folder of files to process")
    root = path.resolve()
    files: dict[str, bytes] = {}
    not_seeded: dict[str, str] = {}

    def unreadable(error: OSError) -> None:
        shown = _shown(Path(str(error.filename)).relative_to(path).as_posix() or ".")
        not_seeded[shown] = f"folder cannot be read: {error.strerror}"

    for folder, folders, names in os.walk(path, onerror=unreadable):
        for name in sorted([*names, *(d for d in folders if Path(folder, d).is_symlink())]):
            file = Path(folder, name)
            key = file.relative_to(path).as_posix()
            reason = _not_a_key(key) or _not_a_file(file, root)
            if reason is None:
                try:
                    files[key] = file.read_bytes()
                    continue
                except OSError as error:
                    reason = f"cannot be read: {error.strerror}"
            not_seeded[_shown(key)] = reason
    if not files and not not_seeded:
        raise SpecError(f"--input {str(path)!r} has no files")
    if not files:
        raise SpecError(
            f"--input {str(path)!r} has no file that can be an S3 object: "
            f"{next(iter(not_seeded.items()))[1]} ({next(iter(not_seeded))})"
        )
    return files, not_seeded


def _shown(name: str) -> str:
    """A name as it can be printed: undecodable bytes and control characters escaped."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _not_a_key(key: str) -> str | None:
    """Why ``key`` cannot be an S3 object key of BucketA (None: it can)."""
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return NOT_UTF8
    if size > MAX_KEY_BYTES:
        return f"name is {size:,} bytes in UTF-8; S3 object keys are at most {MAX_KEY_BYTES:,}"
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        # S3's object key naming guidelines: ASCII control characters need special handling
        # (its XML listings cannot carry all of them).
        return "name has a control character (a newline, a tab ...), which S3 keys avoid"
    return None


def _not_a_file(file: Path, root: Path) -> str | None:
    """Why ``file`` is not seeded as a regular file inside ``root`` (None: it is)."""
    if file.is_symlink():
        try:
            target = file.resolve(strict=True)
        except FileNotFoundError:
            return "a link to nothing"
        except (RuntimeError, OSError):  # RuntimeError: a loop (Python 3.11)
            return "a link that loops"
        if not target.is_relative_to(root):
            return f"a link out of --input (to {target}), not followed"
        if not target.is_file():
            return "a link to a folder, not followed"
        return None
    mode = file.lstat().st_mode
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a device"}
    kind = next((k for test, k in kinds.items() if test(mode)), "a special file")
    return f"{kind}, not a regular file"
