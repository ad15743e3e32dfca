"""`status` without a run id: a table whose columns hold their longest value."""

from __future__ import annotations

import io

from pipeline.cli.output import Output, print_runs
from pipeline.runs.progress import RunSummary


def test_every_row_lines_up_whatever_its_status_and_run_id() -> None:
    out = io.StringIO()
    runs = [
        RunSummary("a-run-id-longer-than-twenty-four", "INTERRUPTED", 0, "command line", "in/"),
        RunSummary("20261207T120000-abcdef", "SUCCEEDED", 60_000, "upload", None),
    ]
    print_runs(Output(False, out, io.StringIO()), runs, "--local")
    header, *rows = out.getvalue().splitlines()
    # each column starts where its heading does, on every row
    for heading in ("STATUS", "SUBMITTED (UTC)", "STARTED BY", "INPUT"):
        column = header.index(heading)
        assert all(row[column - 2 : column] == "  " and row[column] != " " for row in rows)
    assert rows[0].split() == [
        "a-run-id-longer-than-twenty-four",
        "INTERRUPTED",
        "1970-01-01",
        "00:00:00",
        "command",
        "line",
        "in/",
    ]
    assert rows[1].endswith("upload        (whole bucket)")


def test_no_local_runs_says_nothing_of_aws_batchs_retention() -> None:
    out = io.StringIO()
    print_runs(Output(False, out, io.StringIO()), [], "--local")
    assert out.getvalue().strip() == "no runs (--local)"
