"""`python -m pipeline.submit --local` end to end, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from helpers.cli import run_cli, start_cli
from helpers.processes import run_processes

pytestmark = pytest.mark.slow


def _local(tmp_path: Path, *args: str, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    return run_cli(tmp_path, "--local", *args, timeout=timeout)


@pytest.fixture(scope="module")
def default_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The README's local run: the generated sample, default array size, outputs copied."""
    tmp = tmp_path_factory.mktemp("local")
    before = os.umask(0o022)  # files anyone may read, unless the command makes them private
    try:
        result = _local(
            tmp, "--json", "--output", str(tmp / "out"), "--recipient", "me@example.com"
        )
    finally:
        os.umask(before)
    return result, tmp / "out"


def test_default_local_run_succeeds_and_accounts_for_every_object(
    default_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, _ = default_run
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    objects = data["local"]["summary"]["objects"]
    assert objects["listed"] == 300
    assert objects["processed"] + objects["rejected"] == objects["listed"]
    assert data["local"]["summary"]["rejects_by_reason"] == {
        "empty object": 1,
        "larger than the 1,048,576-byte limit": 1,
        "directory marker, not an object": 1,
    }
    assert [c["passed"] for c in data["local"]["summary"]["checks"]] == [True] * 10
    assert set(data["local"]["summary"]["seconds_by_job"]) == {"JobA", "JobB", "JobC", "JobD"}


def test_a_local_runs_folder_is_the_users_alone_whatever_the_umask(
    default_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    # GIVEN a run made under the umask 022 (files anyone may read)
    saved = Path(json.loads(default_run[0].stdout)["local"]["savedTo"])
    # THEN its folder, and each folder and file in it (logs, journals, the services' log),
    # is its user's alone
    modes = {path: path.stat().st_mode & 0o777 for path in [saved, *saved.rglob("*")]}
    assert (saved / "services.log") in modes
    assert {p: m for p, m in modes.items() if m not in (0o700, 0o600)} == {}


def test_default_local_run_shows_the_notification_with_the_link(
    default_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, _ = default_run
    (notification,) = json.loads(result.stdout)["local"]["notifications"]
    assert notification["MessageAttributes"]["Recipient"]["Value"] == "me@example.com"
    # the link points at the run's copy of the summary, which outlives the services
    # (said as this machine's file: a presigned URL's expiry means nothing for it)
    link = re.search(r"Summary \(this machine's file\): (file://\S+)", notification["Message"])
    assert link is not None
    assert link.group(1).endswith("/summary.json")
    assert (
        "Summary in S3: s3://arrayjobpipeline-output-bucket-local/runs/" in notification["Message"]
    )
    assert re.search(r"\[\s*\d+s\] JobA ", result.stderr)  # progress was shown
    assert "JobE SUCCEEDED" in result.stderr


def test_default_local_run_copies_the_report_and_outputs(
    default_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, out = default_run
    data = json.loads(result.stdout)
    copied = Path(data["local"]["copiedTo"])
    assert copied.parent == out
    assert len(list((copied / "report").glob("check-*.json"))) == 10
    # the memory step's outputs by input key, each listed in outputs.json
    listed = json.loads((copied / "outputs.json").read_text())
    assert len(listed) == data["local"]["summary"]["objects"]["processed"]
    assert all((copied / path).is_file() for path in listed.values())
    assert (copied / "rejects.json").is_file()
    assert json.loads((copied / "summary.json").read_text())["status"] == "SUCCEEDED"


def test_a_failing_child_stops_the_run_with_a_non_zero_exit(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for number in range(12):
        (inputs / f"file-{number}.txt").write_text(f"line {number}\n" * (number + 1))
    result = _local(
        tmp_path, "--input", str(inputs), "--array-size", "4", "--inject", "JobB:3=exit:2"
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "FAILED: JobB[3] failed" in result.stdout
    assert "exit code 2" in result.stdout
    assert "JobE FAILED" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--inject", "JobZ:1=exit:2"], "error: --inject 'JobZ:1=exit:2' must look like"),
        (["--inject", "JobB:1=explode"], "error: --inject 'JobB:1=explode': fault 'explode'"),
        (["--input", "/no/such/folder"], "error: --input '/no/such/folder' is not a folder"),
        (["--array-size", "1"], "error: --array-size must be from 2 to 10,000; got 1"),
    ],
)
def test_bad_local_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = _local(tmp_path, *args, timeout=60)
    assert result.returncode == 252
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _until(condition: Any, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"after {seconds} s: {what}"
        time.sleep(0.05)


HELD_STEPS = """
import time
from pathlib import Path

from pipeline.jobs.default_steps import digest_and_compress
from pipeline.steps import DEFAULT_STEPS, PipelineSteps, Step

HOLD = Path(__file__).with_name("hold")


def held(source, target, obj):
    # Deaf to its run's services while it waits: only the engine can stop this job.
    while HOLD.exists():
        time.sleep(0.05)
    return digest_and_compress(source, target, obj)


STEPS = PipelineSteps(
    cpu=Step.python("heldsteps:held"), memory=DEFAULT_STEPS.memory, checks=DEFAULT_STEPS.checks
)
"""


def _during_job_b(
    tmp_path: Path, *args: str, children: int = 16
) -> tuple[subprocess.Popen[str], str]:
    """A local run of ``children`` children started, watched until JobB's jobs run: (its
    process, its services' endpoint). JobB's children hold (they outlive their services)
    until ``tmp_path / "hold"`` is removed, so only the engine can stop them."""
    (tmp_path / "heldsteps.py").write_text(HELD_STEPS)
    (tmp_path / "hold").touch()
    process = start_cli(
        tmp_path,
        "--local",
        "--steps",
        "heldsteps:STEPS",
        "--array-size",
        str(children),
        *args,
        cwd=tmp_path,
    )
    assert process.stderr is not None
    endpoint = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if match := re.search(r"services at (http://127\.0\.0\.1:\d+)", line):
            endpoint = match.group(1)
        if "JobB RUNNING" in line:  # jobs are running now
            break
    assert endpoint, "the local run did not start"
    # the services, the fork server, and a job at least
    state = tmp_path / "state"
    _until(lambda: len(run_processes(endpoint, state)) >= 3, "no job process was seen")
    return process, endpoint


def _resumed_to_the_end(tmp_path: Path, run_id: str) -> None:
    """``status`` sees the stopped run; ``resume`` completes it (its held steps released),
    every input accounted for."""
    status = run_cli(tmp_path, "status", run_id, "--local", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"run {run_id} ")
    (tmp_path / "hold").unlink(missing_ok=True)  # the held steps, where the run has them
    resumed = run_cli(tmp_path, "resume", run_id, "--local", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout)["local"]["summary"]
    assert summary["objects"] == {"listed": 300, "processed": 297, "rejected": 3}
    assert [c["passed"] for c in summary["checks"]] == [True] * 10


@pytest.mark.slow
def test_a_killed_command_leaves_nothing_running_and_its_run_resumes(tmp_path: Path) -> None:
    process, endpoint = _during_job_b(tmp_path, "--run-id", "killed", children=64)
    process.kill()  # kill -9: no handler runs; the services see their standard input close
    process.wait(timeout=10)
    _until(lambda: not run_processes(endpoint, tmp_path / "state"), "processes left", 10)
    _resumed_to_the_end(tmp_path, "killed")


@pytest.mark.slow
def test_dead_services_end_the_command_in_one_line_and_the_run_resumes(tmp_path: Path) -> None:
    process, endpoint = _during_job_b(tmp_path, "--run-id", "orphaned", children=64)
    services = next(
        int(line.split(":")[0])
        for line in run_processes(endpoint, tmp_path / "state")
        if "pipeline.local serve" in line
    )
    os.kill(services, signal.SIGKILL)
    assert process.wait(timeout=30) == 255
    assert process.stderr is not None
    errors = [line for line in process.stderr.read().splitlines() if line.startswith("error")]
    assert errors == [
        f"error: the local services stopped while this command used them (killed by signal 9: "
        f"no output; their log: {tmp_path / 'state' / 'runs' / 'orphaned' / 'services.log'}); "
        "what ran is saved: `status orphaned --local`, `resume orphaned --local`"
    ]
    _until(lambda: not run_processes(endpoint, tmp_path / "state"), "processes left", 10)
    _resumed_to_the_end(tmp_path, "orphaned")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stopped_command_leaves_no_process_of_its_run(tmp_path: Path, stop: int) -> None:
    process, endpoint = _during_job_b(tmp_path)
    state = tmp_path / "state"
    process.send_signal(stop)
    assert process.wait(timeout=30) == 130
    assert process.stderr is not None  # and it said where the run is and how to go on
    assert process.stderr.read().splitlines()[-1] == (
        "interrupted: the run is kept; `python -m pipeline.submit status --local` shows it and "
        "how to resume it"
    )
    _until(lambda: not run_processes(endpoint, state), "processes of the run are left")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(endpoint.rsplit(":", 1)[1])), timeout=1).close()


def test_an_injected_failure_sends_one_notification_and_a_grouped_report(tmp_path: Path) -> None:
    result = _local(tmp_path, "--array-size", "4", "--inject", "JobB:3=exit:2", "--json")
    assert result.returncode == 1, result.stderr[-2000:]
    data = json.loads(result.stdout)
    (notification,) = data["local"]["notifications"]
    assert "AWS Batch job JobB (" in notification
    assert "failed children: 1." in notification
    groups = {(g["job"], g["indices"]): g for g in data["failures"]}
    job_b = groups[("JobB", "3")]
    assert (job_b["count"], job_b["exitCode"]) == (1, 2)
    assert job_b["logTail"] == ["injected fault: exit 2"]
    assert groups[("JobC", "3")]["statusReason"] == "Dependent Job failed"
    causes = [g for g in data["failures"] if not g["notRun"]]
    assert [(g["job"], g["indices"]) for g in causes] == [("JobB", "3")]  # one group


def test_the_failure_report_folds_the_jobs_that_never_ran_into_one_line(tmp_path: Path) -> None:
    result = _local(tmp_path, "--array-size", "4", "--inject", "JobB:3=exit:2")
    report = result.stdout.split("failure report:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert (
        report[0] == "  JobB[3]: 1 failed, exit code 2, reason: Essential container in task exited"
    )
    assert report[-1] == "  not run, as a job they depend on failed: JobC[3], JobD[0-9], JobE"


def test_a_lost_host_is_retried_and_the_run_succeeds(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for number in range(6):
        (inputs / f"f{number}.txt").write_text("data\n" * (number + 1))
    result = _local(
        tmp_path,
        "--input",
        str(inputs),
        "--array-size",
        "2",
        "--inject",
        "JobB:1=host-terminated",
        "--json",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)
    assert data["local"]["summary"]["objects"]["processed"] == 6
    assert data["local"]["attempts"]["JobB"] == 3  # two children, one retried once


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(tmp_path, *args)


def test_resume_failed_only_completes_a_failed_local_run(tmp_path: Path) -> None:
    # GIVEN a local run whose JobB child 3 failed
    failed = _run(
        tmp_path,
        "--local",
        "--array-size",
        "4",
        "--inject",
        "JobB:3=exit:2",
        "--run-id",
        "resume-me",
        "--json",
    )
    assert failed.returncode == 1
    assert "resume resume-me --failed-only --local" not in failed.stdout  # JSON on stdout
    assert json.loads(failed.stdout)["local"]["savedTo"].endswith("runs/resume-me")
    # WHEN only what failed is run again
    resumed = _run(tmp_path, "resume", "resume-me", "--failed-only", "--local", "--json")
    # THEN exactly one JobB child and one JobC child ran, and every input is accounted for
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    data = json.loads(resumed.stdout)
    assert data["local"]["attempts"] == {"JobA": 0, "JobB": 1, "JobC": 1, "JobD": 10, "JobE": 1}
    objects = data["local"]["summary"]["objects"]
    assert objects == {"listed": 300, "processed": 297, "rejected": 3}
    assert [c["passed"] for c in data["local"]["summary"]["checks"]] == [True] * 10
    # AND the run's folder keeps its whole history: its state and every attempt's log
    kept = tmp_path / "state" / "runs" / "resume-me"
    assert {"batch.jsonl", "services.journal", "logs", "summary.json"} <= {
        p.name for p in kept.iterdir()
    }
    # AND its report shows that history: the first JobB with its failed child, then the resume's
    report = _run(tmp_path, "report", "resume-me", "--local", "--json")
    assert report.returncode == 0, report.stderr[-2000:]
    jobs = [(j["job"], j["submission"], j["failed"]) for j in json.loads(report.stdout)["jobs"]]
    assert ("JobB", 0, 1) in jobs
    assert ("JobB", 1, 0) in jobs
    assert [key for key, submission, _ in jobs if submission == 0] == [
        "JobA",
        "JobB",
        "JobC",
        "JobD",
        "JobE",
    ]


def test_resume_of_an_unknown_local_run(tmp_path: Path) -> None:
    result = _run(tmp_path, "resume", "nope", "--failed-only", "--local")
    assert result.returncode == 252
    assert result.stderr.startswith("error: no local run 'nope' in ")


def test_a_local_upload_trigger_runs_only_the_markers_prefix(tmp_path: Path) -> None:
    # GIVEN the sample in BucketA, WHEN a ready marker lands under data/03/ (the deployed
    # rule's event, handed to the starter's own code)
    from pipeline.local.sample import sample_objects

    result = _local(tmp_path, "--on-upload", "data/03/", "--json")
    # THEN one run lists that prefix only: its objects, and the marker as not an input
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    objects = data["local"]["summary"]["objects"]
    under = [k for k in sample_objects() if k.startswith("data/03/")]
    assert objects["listed"] == len(under) + 1
    assert objects["processed"] == len(under)
    assert data["local"]["summary"]["rejects_by_reason"] == {"ready marker, not an input": 1}
    assert "upload trigger (s3://" in result.stderr
    assert "listing data/03/" in result.stderr
    # AND `status` lists it as started by the upload, with its prefix
    listed = _run(tmp_path, "status", "--local", "--json")
    (run,) = json.loads(listed.stdout)["runs"]
    assert run["runId"] == data["runId"]
    assert (run["startedBy"], run["inputPrefix"], run["status"]) == (
        "upload",
        "data/03/",
        "SUCCEEDED",
    )


def test_a_triggered_run_is_found_by_the_id_it_prints_when_the_second_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a clock a second later at each look (a trigger's run id holds its event's time)
    from datetime import UTC, datetime, timedelta

    from helpers.batch import cli_in_process
    from pipeline.backends import local_trigger

    looks = iter(range(1000))

    class Ticking(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Ticking:
            moment = datetime(2026, 12, 7, 12, tzinfo=UTC) + timedelta(seconds=next(looks))
            return cls.fromtimestamp(moment.timestamp(), tz)

    monkeypatch.setattr(local_trigger, "datetime", Ticking)
    monkeypatch.setenv("PIPELINE_LOCAL_STATE_DIR", str(tmp_path / "state"))
    # WHEN an upload trigger starts a run
    code, out, err = cli_in_process(None, "--local", "--on-upload", "data/03/", "--json")
    assert code == 0, err[-3000:]
    run_id = json.loads(out)["runId"]
    # THEN its folder has the id it printed, and the commands that take that id find it
    assert [p.name for p in (tmp_path / "state" / "runs").iterdir()] == [run_id]
    code, out, err = cli_in_process(None, "logs", run_id, "JobA", "--local")
    assert code == 0, err


def test_a_local_schedule_over_the_cost_guard_publishes_its_refusal(tmp_path: Path) -> None:
    result = _local(tmp_path, "--on-schedule", "--max-vcpu-hours", "1")
    assert result.returncode == 252
    assert "notification published: array-job pipeline: schedule run not started" in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: the schedule trigger started no run: the run's worst case is")
    )


def test_a_damaged_run_is_one_line_and_hides_no_other_run(tmp_path: Path) -> None:
    # GIVEN two saved runs, one of whose journal is then damaged
    inputs = tmp_path / "in"
    inputs.mkdir()
    for number in range(4):
        (inputs / f"f{number}.txt").write_text("data\n" * (number + 1))
    for run_id in ("good", "damaged"):
        run = _run(
            tmp_path, "--local", "--input", str(inputs), "--array-size", "2", "--run-id", run_id
        )
        assert run.returncode == 0, run.stderr[-2000:]
    journal = tmp_path / "state" / "runs" / "damaged" / "batch.jsonl"
    journal.write_bytes(b"not a record\n" + journal.read_bytes())
    # WHEN the runs are listed, THEN the good one is, and the damaged one is named, with why
    listed = _run(tmp_path, "status", "--local")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["good"]
    assert f"note: run damaged is left out: {journal} line 1 is damaged" in listed.stderr
    # AND each command on the damaged run is one line, exit code 255, no traceback
    for command in (["status"], ["resume"]):
        result = _run(tmp_path, command[0], "damaged", "--local")
        assert result.returncode == 255, (command, result.stderr)
        assert result.stderr == (
            f"error: {journal} line 1 is damaged; remove the run or that line\n"
        )
    # AND it can be removed
    assert _run(tmp_path, "prune", "damaged", "--local").returncode == 0
    assert not journal.exists()


@pytest.mark.slow
def test_a_run_killed_while_saving_is_seen_as_it_was_and_resumes(tmp_path: Path) -> None:
    """A run's state is appended as it happens; a kill while a record is written leaves a
    partial last line. A job's S3 writes are journaled before its end is, so at any moment
    the services' journal holds at least what the Batch journal implies. Cut the Batch journal
    at random points, and the services' journal in its last record (as kills at random
    moments would), and the run is still seen, as it was then, and resumes to the end."""
    import random
    import shutil

    inputs = tmp_path / "in"
    inputs.mkdir()
    for number in range(24):
        (inputs / f"f{number:02}.txt").write_text("data\n" * (number + 1))
    first = _run(
        tmp_path,
        *("--local", "--input", str(inputs), "--array-size", "4", "--run-id", "cut"),
        *("--inject", "JobC:1=exit:1"),
    )
    assert first.returncode == 1
    saved = tmp_path / "state" / "runs" / "cut"
    batch_size = (saved / "batch.jsonl").stat().st_size
    services_size = (saved / "services.journal").stat().st_size
    rng = random.Random(20261130)
    for attempt in range(2):
        home = tmp_path / f"copy{attempt}"
        shutil.copytree(tmp_path / "state", home / "state")
        copied = home / "state" / "runs" / "cut"
        with (copied / "batch.jsonl").open("r+b") as handle:
            handle.truncate(int(batch_size * rng.uniform(0.3, 0.99)))
        with (copied / "services.journal").open("r+b") as handle:
            handle.truncate(services_size - rng.randint(1, 20))
        status = run_cli(home, "status", "cut", "--local")
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith("run cut ")
        if attempt == 0:
            resumed = run_cli(home, "resume", "cut", "--local", "--json")
            assert resumed.returncode == 0, resumed.stderr[-2000:]
            summary = json.loads(resumed.stdout)["local"]["summary"]
            assert summary["objects"] == {"listed": 24, "processed": 24, "rejected": 0}


@pytest.mark.slow
def test_a_full_disk_for_the_state_stops_the_run_in_one_line_and_it_resumes(
    tmp_path: Path,
) -> None:
    """A file-size limit (RLIMIT_FSIZE) stands in for a full disk: writes past it fail with
    EFBIG, as they would with ENOSPC."""
    import resource
    import sys

    from helpers.cli import cli_env

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8_000_000, 8_000_000))

    full = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.submit",
            "--local",
            "--array-size",
            "8",
            "--run-id",
            "full",
        ],
        env=cli_env(tmp_path),
        preexec_fn=limited,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert full.returncode == 255
    assert "Traceback" not in full.stderr
    (error,) = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    journal = tmp_path / "state" / "runs" / "full" / "services.journal"
    assert f"the run's state cannot be written to {journal}: File too large" in error
    assert "`resume full --local`" in error
    # WHEN there is room again, THEN the run resumes to the end
    _resumed_to_the_end(tmp_path, "full")


@pytest.mark.slow
def test_a_second_run_with_the_same_id_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    process, _ = _during_job_b(tmp_path, "--run-id", "twice")
    try:
        second = _run(tmp_path, "--local", "--array-size", "2", "--run-id", "twice")
        assert second.returncode == 252
        assert second.stderr.startswith("error: a local run 'twice' exists in ")
        resumed = _run(tmp_path, "resume", "twice", "--local")
        assert resumed.returncode == 252
        assert "run twice is still running in another command" in resumed.stderr
    finally:
        process.terminate()
        process.wait(timeout=30)


def _held_run(tmp_path: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """A local run whose JobB holds, with its output going where ``popen`` says."""
    import sys

    from helpers.cli import cli_env

    (tmp_path / "heldsteps.py").write_text(HELD_STEPS)
    (tmp_path / "hold").touch()
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.submit", "--local", "--steps", "heldsteps:STEPS"],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdin=subprocess.DEVNULL,
        **popen,
    )


def _until_jobs_run(tmp_path: Path) -> None:
    runs = tmp_path / "state" / "runs"
    _until(
        lambda: (
            any((folder / "logs" / "JobB").is_dir() for folder in runs.iterdir() if folder.is_dir())
            if runs.is_dir()
            else False
        ),
        "JobB did not start",
        60,
    )


@pytest.mark.slow
def test_a_closed_terminal_ends_the_command_130_and_its_run_is_kept(tmp_path: Path) -> None:
    import pty

    # GIVEN a run whose progress goes to a terminal
    main, terminal = pty.openpty()
    process = _held_run(tmp_path, stdout=terminal, stderr=terminal)
    os.close(terminal)
    _until_jobs_run(tmp_path)
    # WHEN the terminal goes away (its reader closes, the command is hung up on)
    os.close(main)
    process.send_signal(signal.SIGHUP)
    # THEN it ends as interrupted, though nothing could be written any more, and its run
    # is there to be seen
    assert process.wait(timeout=60) == 130
    (run,) = (tmp_path / "state" / "runs").iterdir()
    status = run_cli(tmp_path, "status", run.name, "--local", cwd=tmp_path)
    assert f"run {run.name} INTERRUPTED" in status.stdout, status.stderr


@pytest.mark.slow
def test_nohup_keeps_a_run_going_when_its_terminal_hangs_up(tmp_path: Path) -> None:
    # GIVEN a run started as nohup starts it (SIGHUP ignored)
    process = _held_run(
        tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    _until_jobs_run(tmp_path)
    # WHEN it is hung up on, THEN it goes on
    process.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    assert process.poll() is None
    # AND it still stops when asked to
    process.terminate()
    assert process.wait(timeout=60) == 130


def test_a_run_killed_while_it_started_leaves_its_id_free(tmp_path: Path) -> None:
    # GIVEN the folder a run killed at start-up leaves: made, but no job ever submitted
    abandoned = tmp_path / "state" / "runs" / "again"
    abandoned.mkdir(parents=True)
    (abandoned / "credentials.json").write_text("{}")
    # WHEN a run is started with that id, THEN it runs there
    run = _run(tmp_path, "--local", "--array-size", "2", "--run-id", "again")
    assert run.returncode == 0, run.stderr[-2000:]
    assert (abandoned / "summary.json").is_file()
    # AND serving its folder without the pipeline the run used is one line naming the flag
    served = subprocess.run(
        [sys.executable, "-m", "pipeline.local", "serve", "--state-dir", str(abandoned)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert served.returncode == 255, served.stderr
    assert served.stderr.startswith("error: ")
    assert served.stderr.count("\n") == 1
    assert "holds a job whose queue or job definition these services do not have" in served.stderr
    assert served.stderr.rstrip().endswith(
        "; start them as they were started for it (for a run of the pipeline: with --with-pipeline)"
    )
