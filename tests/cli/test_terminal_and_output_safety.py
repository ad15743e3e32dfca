"""What a local run writes and prints stays where it is sent: files only under --output
(never through a symbolic link already there, never at a key's ``..``), and nothing from a
log, a key or a reason can drive the terminal (escape sequences are written as escapes)."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest

from pipeline.backends.local_outputs import output_paths, plain_path, write_inside
from pipeline.cli.output import Output, printable


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/etc/passwd", "a//b", "./a", ""])
def test_a_key_that_is_not_a_plain_path_is_never_a_path(key: str, tmp_path: Path) -> None:
    assert not plain_path(key)
    with pytest.raises(OSError, match="not a plain relative path"):
        write_inside(tmp_path, key, [b"x"])
    assert output_paths([key])[key].startswith("outputs-by-digest/")


def test_a_symbolic_link_in_the_output_folder_is_not_followed(tmp_path: Path) -> None:
    # GIVEN an output folder whose run folder already holds a link to somewhere else
    target, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (target / "run").mkdir(parents=True)
    elsewhere.mkdir()
    (target / "run" / "outputs").symlink_to(elsewhere)
    (target / "run" / "summary.json").symlink_to(elsewhere / "summary.json")
    # WHEN files are written below it, through the link's name
    for relative in ("run/outputs/a.txt", "run/summary.json"):
        # a link opened with O_NOFOLLOW: the system says "Too many levels of symbolic
        # links", or "Not a directory"
        with pytest.raises(OSError, match=r"symbolic links|Not a directory") as refused:
            write_inside(target, relative, [b"x"])
        assert refused.value.errno in (errno.ELOOP, errno.ENOTDIR)
    # THEN nothing reached the other folder
    assert list(elsewhere.iterdir()) == []


def test_a_fifo_where_a_copy_goes_is_refused_at_once(tmp_path: Path) -> None:
    # GIVEN a FIFO where the summary's copy would go (nobody reads it)
    (tmp_path / "run").mkdir()
    os.mkfifo(tmp_path / "run" / "summary.json")
    # WHEN the copy is written, THEN it is refused at once instead of waiting for a reader
    with pytest.raises(OSError, match=r"No such device or address|not a regular file") as refused:
        write_inside(tmp_path, "run/summary.json", [b"{}"])
    assert refused.value.errno in (errno.ENXIO, errno.EINVAL)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a folder of another user")
def test_a_folder_another_user_made_in_the_output_folder_gets_nothing(tmp_path: Path) -> None:
    # GIVEN a run folder another user made in a shared output folder before the run
    (tmp_path / "run").mkdir()
    os.chown(tmp_path / "run", 65534, 65534)
    # WHEN a copy is written there, THEN it is refused and nothing is written
    with pytest.raises(OSError, match="a folder of another user"):
        write_inside(tmp_path, "run/outputs/a.txt", [b"x"])
    assert list((tmp_path / "run").iterdir()) == []


def test_a_plain_path_is_written_under_the_folder(tmp_path: Path) -> None:
    write_inside(tmp_path, "run/outputs/deep/a.txt", [b"he", b"llo"])
    assert (tmp_path / "run/outputs/deep/a.txt").read_bytes() == b"hello"
    assert not os.path.islink(tmp_path / "run")


def test_control_characters_reach_the_terminal_as_escapes() -> None:
    # GIVEN a log line that would set the terminal's title, colour it and overwrite a line
    hostile = "done\x1b]0;owned\x07 \x1b[2J\rok\x9b31m"
    err, out = io.StringIO(), io.StringIO()
    output = Output(False, out, err)
    # WHEN it is printed as progress and as a result
    output.progress(hostile)
    output.result(f"tail:\n{hostile}", None)
    # THEN no control character is left, newlines are, and what it said is still readable
    for text in (err.getvalue(), out.getvalue()):
        assert not any((ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F for c in text)
        assert "\\x1b]0;owned\\x07" in text
    assert printable("a\tb\nc") == "a\tb\nc"
