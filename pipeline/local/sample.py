"""The inputs of a local run: a generated sample, or the user's own folder."""

from __future__ import annotations

import errno
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
    no S3 key can hold are listed, never skipped silently.

    Folders are walked, and files opened, through descriptors of the folders above them
    without following a link (``O_NOFOLLOW``), and a link's target is opened the same way
    from the top: a folder swapped for a link while it is read (by anyone who can
    write in it) cannot send the read outside ``path``."""
    if not path.is_dir():
        raise SpecError(f"--input {str(path)!r} is not a folder; name a folder of files to process")
    root = path.resolve()
    files: dict[str, bytes] = {}
    not_seeded: dict[str, str] = {}

    def walk(folder_fd: int, folder: Path) -> None:
        for name in sorted(os.listdir(folder_fd)):
            key = (folder / name).as_posix()
            try:
                is_folder = stat.S_ISDIR(os.lstat(name, dir_fd=folder_fd).st_mode)
            except OSError:
                not_seeded[_shown(key)] = "it went away while --input was read"
                continue
            if is_folder:
                try:
                    inner = os.open(name, _OPEN_FOLDER, dir_fd=folder_fd)
                except OSError as error:
                    not_seeded[_shown(key)] = f"folder cannot be read: {error.strerror}"
                    continue
                try:
                    walk(inner, folder / name)
                finally:
                    os.close(inner)
                continue
            reason = _not_a_key(key)
            if reason is None:
                try:
                    files[key] = _read_file(root_fd, root, folder_fd, path / folder, name)
                    continue
                except NotSeededError as why:
                    reason = str(why)
            not_seeded[_shown(key)] = reason

    root_fd = os.open(root, _OPEN_FOLDER)
    try:
        walk(root_fd, Path())
    finally:
        os.close(root_fd)
    if not files and not not_seeded:
        raise SpecError(f"--input {str(path)!r} has no files")
    if not files:
        raise SpecError(
            f"--input {str(path)!r} has no file that can be an S3 object: "
            f"{next(iter(not_seeded.items()))[1]} ({next(iter(not_seeded))})"
        )
    return files, not_seeded


class NotSeededError(Exception):
    """A file of ``--input`` that is not seeded; the message says why."""


_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""A file's open: never through a link, and a FIFO answers at once instead of waiting."""


def _read_file(root_fd: int, root: Path, folder_fd: int, folder: Path, name: str) -> bytes:
    """The contents of regular file ``name`` in ``folder`` (open as ``folder_fd``), or of the
    regular file inside ``root`` it links to; :class:`NotSeededError` saying why not."""
    try:
        fd = os.open(name, _OPEN_FILE, dir_fd=folder_fd)
    except FileNotFoundError:
        raise NotSeededError("it went away while --input was read") from None
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise NotSeededError(f"cannot be read: {error.strerror}") from None
        fd = _open_link_target(root_fd, root, folder / name)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise NotSeededError("a link to a folder, not followed")
        kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a device"}
        kind = next((k for test, k in kinds.items() if test(mode)), "a special file")
        raise NotSeededError(f"{kind}, not a regular file")
    with os.fdopen(fd, "rb") as handle:
        try:
            return handle.read()
        except OSError as error:
            raise NotSeededError(f"cannot be read: {error.strerror}") from None


def _open_link_target(root_fd: int, root: Path, link: Path) -> int:
    """An open descriptor of what ``link`` points to, when that is inside ``root``: opened
    part by part from ``root_fd``, never through another link (a part that became a link
    since the target was resolved is refused)."""
    try:
        target = link.resolve(strict=True)
    except FileNotFoundError:
        raise NotSeededError("a link to nothing") from None
    except (RuntimeError, OSError):  # RuntimeError: a loop (Python 3.11)
        raise NotSeededError("a link that loops") from None
    if not target.is_relative_to(root):
        raise NotSeededError(f"a link out of --input (to {target}), not followed")
    *folders, name = target.relative_to(root).parts or (".",)
    fd = os.dup(root_fd)
    try:
        for part in folders:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(name, _OPEN_FILE, dir_fd=fd)
    except OSError:
        raise NotSeededError("a link whose target changed while --input was read") from None
    finally:
        os.close(fd)


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
