"""See a run: the report (collected in about one DescribeJobs call per 100 children, usage
from the children's real times), its HTML as a browser renders it, and `diagnose`, on the
engine's Batch (:func:`helpers.batch.engine_batch`), whose GetJobQueueSnapshot answers with
the jobs RUNNABLE at the front of the queue."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from helpers.batch import STACK, EngineBatch, cli_in_process, engine_batch, stack_document
from pipeline.backends.aws import Aws
from pipeline.cli.commands import main
from pipeline.runs.diagnose import diagnose
from pipeline.runs.report import collect

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


@pytest.mark.slow  # a few seconds: in the full suite, not the fast loop
def test_a_report_of_1000_children_costs_about_one_describe_per_100(aws: EngineBatch) -> None:
    # GIVEN a run whose JobB and JobC have 500 children each (1,000), with known run times:
    # every JobB child 60 s at 32 vCPU, every JobC child 30 s at 1 vCPU / 32 GiB
    aws.hold_new_jobs()
    code, out, err = cli_in_process(aws, "--stack", STACK, "--array-size", "500", "--json")
    assert code == 0, err
    ids = {j["job"]: j["jobId"] for j in json.loads(out)["jobs"]}
    aws.succeed(ids["JobA"])
    for i in range(500):
        aws.set_times(f"{ids['JobB']}:{i}", T0, 60)
        aws.set_times(f"{ids['JobC']}:{i}", T0 + timedelta(minutes=2), 30)
    aws.run_at_once()
    aws.count_calls()
    document = stack_document(aws.queue_arn, aws.definition_arns)
    # WHEN the report is collected
    report = collect(aws.batch, document, json.loads(out)["runId"])
    # THEN the calls stay near N/100, and usage matches a hand computation
    assert aws.calls["DescribeJobs"] <= math.ceil(1000 / 100) + 10
    by_key = {j.key: j for j in report.jobs}
    assert by_key["JobB"].vcpu_hours == pytest.approx(500 * 60 * 32 / 3600)
    assert by_key["JobC"].vcpu_hours == pytest.approx(500 * 30 * 1 / 3600)
    assert by_key["JobC"].gib_hours == pytest.approx(500 * 30 * 32 / 3600)
    as_json = report.as_json()
    job_b = next(j for j in as_json["jobs"] if j["job"] == "JobB")
    assert job_b["runSeconds"] == {"p50": 60.0, "p90": 60.0, "max": 60.0}
    assert sum(job_b["histogram"]["counts"]) == 500
    assert job_b["worstCaseVcpuHours"] == pytest.approx(500 * 32 * 2 * 3)


def test_the_cli_prints_progress_and_writes_the_html(aws: EngineBatch, tmp_path: Path) -> None:
    code, out, _ = cli_in_process(aws, "--stack", STACK, "--array-size", "4", "--json")
    run_id = json.loads(out)["runId"]
    page = tmp_path / "report.html"
    code, out, err = cli_in_process(aws, "report", run_id, "--stack", STACK, "--html", str(page))
    assert code == 0, err
    assert out.startswith(f"run {run_id}\n  JobA")
    assert "collected " in err
    html = page.read_text()
    assert "default-src 'none'" in html
    assert "<script" not in html
    assert "http://" not in html.replace("http://www.w3.org", "")


# --- diagnose ---------------------------------------------------------------------------------


def _held_run(aws: EngineBatch) -> str:
    aws.hold_new_jobs()
    code, out, err = cli_in_process(aws, "--stack", STACK, "--array-size", "2", "--json")
    assert code == 0, err
    return str(json.loads(out)["runId"])


def _document(aws: EngineBatch) -> Any:
    return stack_document(aws.queue_arn, aws.definition_arns)


def _on_queue(aws: EngineBatch, queue: str) -> tuple[str, Any]:
    from dataclasses import replace

    aws.hold_new_jobs()
    document = replace(_document(aws), queue=queue)
    code, out, err = cli_in_process(
        aws, "--stack", STACK, "--queue", queue, "--array-size", "2", "--json"
    )
    assert code == 0, err
    return str(json.loads(out)["runId"]), document


def test_diagnose_names_an_invalid_compute_environment(aws: EngineBatch) -> None:
    run_id = _held_run(aws)

    # the engine reports every environment VALID (it places jobs itself); this one answers
    # as an invalid one does
    def invalid(parsed: dict[str, Any], **_: Any) -> None:
        for environment in parsed["computeEnvironments"]:
            environment["status"] = "INVALID"
            environment["statusReason"] = "CLIENT_ERROR - The instance role is not valid"

    aws.batch.meta.events.register("after-call.batch.DescribeComputeEnvironments", invalid)
    findings = diagnose(aws.batch, _document(aws), run_id)
    invalid = [f for f in findings if f.kind == "environment-invalid"]
    assert invalid
    assert invalid[0].reason == (
        "compute environment Unmanaged is INVALID: CLIENT_ERROR - The instance role is not valid"
    )


def test_diagnose_names_an_environment_at_its_maxvcpus(aws: EngineBatch) -> None:
    queue = aws.managed_queue("c6i.8xlarge", desiredvCpus=64)
    run_id, document = _on_queue(aws, queue)
    findings = diagnose(aws.batch, document, run_id)
    assert any(f.kind == "max-vcpus" and "at its maxvCpus (64)" in f.reason for f in findings), (
        findings
    )


def test_diagnose_names_a_job_no_instance_type_fits(aws: EngineBatch) -> None:
    # GIVEN a held run whose JobA has succeeded, so JobB's children wait to be placed, and then
    # its queue moved onto 16-vCPU instances (r6i.4xlarge), where JobB's 32 vCPUs never fit
    # (pre-flight refuses this before a run; queues change later)
    run_id = _held_run(aws)
    job_a = next(j for j in aws.parents() if j.job_name == "JobA")
    aws.succeed(job_a.job_id)
    managed = aws.managed_queue("r6i.4xlarge")
    (environment,) = aws.batch.describe_job_queues(jobQueues=[managed])["jobQueues"][0][
        "computeEnvironmentOrder"
    ]
    aws.batch.update_job_queue(
        jobQueue=aws.queue_arn,
        computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": environment["computeEnvironment"]}
        ],
    )
    findings = diagnose(aws.batch, _document(aws), run_id)
    no_fit = [f for f in findings if f.kind == "no-fit"]
    assert [f.job for f in no_fit] == ["JobB"]
    assert no_fit[0].reason.startswith("no instance type of the queue fits 32 vCPU and 4,096 MiB")


def test_diagnose_gives_the_position_at_the_front_of_the_queue(aws: EngineBatch) -> None:
    # GIVEN two jobs waiting to be placed on the queue, then a held run whose JobA waits
    # behind them (GetJobQueueSnapshot: the engine's queue as it is)
    aws.hold_new_jobs()
    ahead = [
        str(
            aws.reader.submit_job(
                jobName=f"other-{n}",
                jobQueue=aws.queue_arn,
                jobDefinition=aws.definition_arns["JobA"],
            )["jobId"]
        )
        for n in (1, 2)
    ]
    run_id = _held_run(aws)
    # WHEN the run is diagnosed
    findings = diagnose(aws.batch, _document(aws), run_id)
    # THEN JobA is third at the front of the queue, behind the two
    position = [f for f in findings if f.kind == "queue-position"]
    assert [(f.job, f.reason) for f in position] == [
        ("JobA", "position 3 of 3 at the front of the queue")
    ]
    assert position[0].action.startswith("it waits behind 2 job(s)")
    # AND once they have been placed, it is first
    for job_id in ahead:
        aws.start(job_id)
    findings = diagnose(aws.batch, _document(aws), run_id)
    assert [(f.job, f.reason) for f in findings if f.kind == "queue-position"] == [
        ("JobA", "position 1 of 1 at the front of the queue")
    ]


def test_diagnose_cli(aws: EngineBatch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = _held_run(aws)
    code, out, err = cli_in_process(aws, "diagnose", run_id, "--stack", STACK, "--json")
    assert code == 0, err
    assert json.loads(out)["runId"] == run_id
    # a local run is diagnosed the same way, once it exists
    monkeypatch.setenv("PIPELINE_LOCAL_STATE_DIR", str(tmp_path))
    code, _, err = cli_in_process(None, "diagnose", run_id, "--local")
    assert code == 252
    assert err.startswith(f"error: no local run {run_id!r} in ")


@pytest.mark.parametrize(
    "slow_service",
    [
        pytest.param(False, id="prompt-service"),
        # A service that answers late: the delay is the fault injected, not a wait for
        # something; the test must pass whatever the calls take.
        pytest.param(True, id="slow-service", marks=pytest.mark.slow),
    ],
)
def test_watch_offers_diagnose_when_a_job_waits_too_long(
    aws: EngineBatch, slow_service: bool
) -> None:
    # GIVEN jobs that wait to be placed until the watch has said how to see why (or until it
    # has polled 2,000 times, and the test fails saying so): events, not a timer, so the
    # machine's speed does not matter
    if slow_service:
        delays = {"SubmitJob": 0.25, "DescribeJobs": 0.5}
        for operation, seconds in delays.items():
            aws.batch.meta.events.register(
                f"before-call.batch.{operation}", lambda seconds=seconds, **_: time.sleep(seconds)
            )
    aws.hold_new_jobs()
    err = io.StringIO()
    polls: list[int] = []

    def release(**_: Any) -> None:
        polls.append(1)
        if "to be placed" in err.getvalue() or len(polls) > 2000:
            aws.run_at_once()

    aws.batch.meta.events.register("after-call.batch.DescribeJobs", release)
    argv = ["--stack", STACK, "--array-size", "2", "--watch", "--poll-interval", "0.05"]
    code = main(
        [*argv, "--diagnose-after", "0.2", "--run-id", "slow"],
        connector=lambda *_: Aws(aws.batch, aws.cloudformation),
        stdout=io.StringIO(),
        stderr=err,
    )
    assert code == 0, err.getvalue()
    assert len(polls) <= 2000, "the watch never said how to see why the jobs wait"
    # how long it had waited depends on the service's pace; what to run does not
    assert re.search(
        r"^JobA has waited \d+ s to be placed; see why with "
        + re.escape(f"`python -m pipeline.submit diagnose slow --stack {STACK}`")
        + "$",
        err.getvalue(),
        re.MULTILINE,
    ), err.getvalue()


def test_an_array_parent_pending_while_its_children_run_is_shown_running() -> None:
    from pipeline.cli.output import format_progress
    from pipeline.runs.progress import JobProgress

    def array(status: str, **children: int) -> JobProgress:
        return JobProgress("JobB", "b", status, array_size=4, children=children)

    # GIVEN parents as AWS Batch reports them: PENDING until every child has ended
    line = format_progress(
        [
            array("PENDING", RUNNING=1, SUCCEEDED=1, PENDING=2),
            array("PENDING", SUCCEEDED=1, RUNNABLE=3),
            array("PENDING", RUNNABLE=4),
            array("PENDING", PENDING=4),
            array("FAILED", FAILED=1, SUCCEEDED=3),
        ]
    )
    # THEN a person reads what the children do; an ended parent keeps its own status
    assert line == (
        "JobB RUNNING 1/4 done | JobB RUNNING 1/4 done | JobB RUNNABLE 0/4 done | "
        "JobB PENDING 0/4 done | JobB FAILED 4/4 done, 1 failed"
    )


def test_the_hint_is_said_once_per_job_after_the_wait_given() -> None:
    from pipeline.cli.output import Output, runnable_hint
    from pipeline.runs.progress import JobProgress

    now = [0.0]
    err = io.StringIO()
    hint = runnable_hint(
        Output(False, io.StringIO(), err), "r", "--local", 600, clock=lambda: now[0]
    )
    waiting = [JobProgress("JobB", "b", "RUNNING", children={"RUNNABLE": 3})]
    hint(waiting)
    now[0] = 599.0
    hint(waiting)
    assert err.getvalue() == ""
    now[0] = 601.0
    hint(waiting)
    hint(waiting)
    assert err.getvalue().count("JobB has waited 10 min to be placed") == 1


# --- the page, as a browser shows it ----------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_a_local_runs_report_renders_offline_in_a_real_browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert CHROMIUM, "Chromium is not installed: .ci/run installs Debian's chromium"
    monkeypatch.setenv("PIPELINE_LOCAL_STATE_DIR", str(tmp_path / "state"))
    folder = tmp_path / "in"
    folder.mkdir()
    for number in range(8):
        (folder / f"f{number}.txt").write_text("data\n" * (number + 1))
    code, _, err = cli_in_process(
        None,
        "--local",
        "--array-size",
        "4",
        "--input",
        str(folder),
        "--run-id",
        "seen",
        "--inject",
        "JobB:1=host-terminated",
    )
    assert code == 0, err[-2000:]
    page = tmp_path / "out.html"
    code, _, err = cli_in_process(None, "report", "seen", "--local", "--html", str(page))
    assert code == 0, err
    browser = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--hide-scrollbars",
        f"--log-net-log={tmp_path / 'net.json'}",
        "--net-log-capture-mode=Everything",
    ]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*browser, "--window-size=1280,1200", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    dom = subprocess.run(
        [*browser, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # THEN the timeline has the five jobs with running bars, and the arrays have histograms
    assert dom.count('class="job-row"') == 5
    assert 'class="running"' in dom
    for key in ("JobB", "JobC", "JobD"):
        assert f'class="histogram" data-job="{key}"' in dom
    assert dom.count('class="bar"') >= 3
    assert 'class="retry"' in dom  # the lost host's retried attempt is marked
    # AND the screenshot is a drawn page, not a blank one
    assert shot.stat().st_size > 30_000
    # AND the page made no network request: Chromium's log of every URL it requested holds
    # only the browser's own background checks (update, time, accounts), nothing of the page
    assert _requested_urls(tmp_path / "net.json") == set()
    # (the log does show a page's requests: a control page with an image on loopback)
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://127.0.0.1:9/x.png"></body></html>')
    subprocess.run(
        [
            *browser[:-2],
            f"--log-net-log={tmp_path / 'control.json'}",
            "--net-log-capture-mode=Everything",
            "--dump-dom",
            control.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert _requested_urls(tmp_path / "control.json") == {"http://127.0.0.1:9/x.png"}


_BROWSER_OWN = ("clients2.google.com", "update.googleapis.com", "accounts.google.com")


def _requested_urls(net_log: Path) -> set[str]:
    import re

    urls = set(re.findall(r'"url":"(https?://[^"]+)"', net_log.read_text(errors="replace")))
    return {u for u in urls if u.split("/")[2] not in _BROWSER_OWN}
