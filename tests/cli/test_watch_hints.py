"""What the watch says while a run runs: its progress is never silent for long, a job is said
to wait to be placed only when nothing of it runs, and a child long on one object is named
with that object."""

from __future__ import annotations

import io

from pipeline.cli.output import Output, busy_hint, progress_printer, runnable_hint
from pipeline.runs.logs import BusyChild
from pipeline.runs.progress import JobProgress


def _array(**children: int) -> list[JobProgress]:
    return [JobProgress("JobB", "b", "PENDING", array_size=8, children=children)]


def test_a_run_that_does_not_change_is_said_again_every_4_s() -> None:
    # GIVEN a watch polled every 0.2 s, as a local run's is
    now = [0.0]
    err = io.StringIO()
    printer = progress_printer(Output(False, io.StringIO(), err), clock=lambda: now[0])
    # WHEN JobB's children count for 2 s, then one child works 10 s on without a change
    for tick in range(60):
        now[0] = tick * 0.2
        printer(_array(SUCCEEDED=min(tick, 10), RUNNING=1, RUNNABLE=max(7 - tick, 0)))
    lines = err.getvalue().splitlines()
    # THEN a line came at most every second while the counts moved, and the unchanged line
    # again every 4 s after, so nothing is silent for longer
    assert [line[:8] for line in lines] == [
        "[    0s]",
        "[    1s]",
        "[    2s]",
        "[    6s]",
        "[   10s]",
    ]
    assert lines[-1] == lines[-2].replace("[    6s]", "[   10s]")


def test_children_waiting_while_others_of_theirs_run_are_not_waiting_to_be_placed() -> None:
    # GIVEN an array whose one child runs (a hung step) while seven wait for its cores
    now = [0.0]
    err = io.StringIO()
    hint = runnable_hint(
        Output(False, io.StringIO(), err), "r", "--local", 600, clock=lambda: now[0]
    )
    # WHEN the watch sees it for eleven minutes
    for minute in range(12):
        now[0] = minute * 60.0
        hint(_array(RUNNING=1, RUNNABLE=7))
    # THEN it never says the job waits to be placed
    assert err.getvalue() == ""
    # AND once nothing of it runs, the wait is counted from then
    for minute in range(12, 22):
        now[0] = minute * 60.0
        hint(_array(RUNNABLE=8))
    assert err.getvalue() == ""
    now[0] = 23 * 60.0
    hint(_array(RUNNABLE=8))
    assert "JobB has waited 11 min to be placed" in err.getvalue()


def test_a_child_long_on_one_object_is_named_once_and_looked_for_every_30_s() -> None:
    # GIVEN a watch whose look finds child 3 on one object
    now = [0.0]
    err = io.StringIO()
    looks: list[float] = []
    found = [BusyChild("JobB", 3, "cpu", "sales/big.csv", since=0.0)]

    def look(_progress: object) -> list[BusyChild]:
        looks.append(now[0])
        return found

    hint = busy_hint(Output(False, io.StringIO(), err), look, clock=lambda: now[0])
    # WHEN the watch polls every 10 s for two minutes while children run
    for second in range(0, 130, 10):
        now[0] = float(second)
        hint(_array(RUNNING=2, RUNNABLE=6))
    # THEN it looked at most every 30 s, and said once which object the child is on
    assert looks == [30.0, 60.0, 90.0, 120.0]
    lines = err.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("JobB:3 has been on 'sales/big.csv' for ")
    assert lines[0].endswith(", running")


def test_nothing_is_looked_for_while_no_child_runs() -> None:
    looks: list[int] = []
    now = [100.0]
    hint = busy_hint(
        Output(False, io.StringIO(), io.StringIO()),
        lambda _p: looks.append(1) or [],
        clock=lambda: now[0],
    )
    now[0] = 1000.0
    hint(_array(RUNNABLE=8))
    assert looks == []
