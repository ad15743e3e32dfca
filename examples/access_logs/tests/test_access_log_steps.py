"""The steps on their own: plain functions over files, tested without the pipeline."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from access_logs.steps import STEPS, mostly_parsed, summarise, totals
from pipeline import ObjectRef, StepRecord

SAMPLES = Path(__file__).resolve().parents[1] / "sample_logs"


def compressed(source: Path, folder: Path) -> Path:
    """What the CPU step (gzip -9 -c) makes of ``source``."""
    target = folder / (source.name + ".gz")
    with source.open("rb") as reader, gzip.open(target, "wb", compresslevel=9) as writer:
        shutil.copyfileobj(reader, writer)
    return target


def test_a_log_is_summarised_into_its_item_and_report(tmp_path: Path) -> None:
    log = SAMPLES / "www" / "access-2026-11-24.log"
    lines = log.read_text().splitlines()
    attributes = summarise(
        compressed(log, tmp_path), tmp_path / "report.json", ObjectRef("www/a.log", 1, "e")
    )
    assert attributes["requests"] == len(lines)
    assert attributes["unparsed_lines"] == 0
    statuses = [line.split('"')[2].split()[0] for line in lines]
    assert attributes["server_errors"] == sum(status.startswith("5") for status in statuses)
    assert '"log": "www/a.log"' in (tmp_path / "report.json").read_text()


def test_a_file_that_is_not_a_log_is_rejected_with_why(tmp_path: Path) -> None:
    notes = SAMPLES / "www" / "rotation-notes.txt"
    with pytest.raises(ValueError, match="no Common Log Format line in it \\(2 other lines\\)"):
        summarise(compressed(notes, tmp_path), tmp_path / "out", ObjectRef("n", 1, "e"))


def test_totals_and_the_check() -> None:
    items = [
        {"key": "a", "requests": 10, "server_errors": 1, "bytes_sent": 100},
        {"key": "b", "requests": 30, "server_errors": 1, "bytes_sent": 50},
    ]
    assert totals(items) == {
        "logs": 2,
        "requests": 40,
        "server_error_rate": 0.05,
        "bytes_sent": 150,
        "busiest_log": "b",
    }
    record = StepRecord("odd.log", 9, "e", {}, {"requests": 1, "unparsed_lines": 5})
    assert mostly_parsed([record]) == ["'odd.log': 5 lines unparsed, 1 requests"]


def test_the_steps_pass_the_librarys_checks() -> None:
    assert STEPS.check() is STEPS
