"""The local AWS Batch engine's semantics, through a boto3 Batch client, with small Python
commands as the jobs."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers.batch import PYTHON, ManualClock, ProcessBatch, engine_with_processes
from pipeline.document import PipelineDocument
from pipeline.local.batch.faults import Fault
from pipeline.runs.chain import submit_pipeline
from pipeline.runs.progress import JobProgress, describe_jobs
from pipeline.runs.requests import run_config
from pipeline.runs.watch import watch
from pipeline.spec import DEFAULT_SPEC, RETRY_RULES

RECORD = (
    "import json, os, sys, time; time.sleep(float(sys.argv[2]));"
    "open(sys.argv[1] + '/' + os.environ['AWS_BATCH_JOB_ID'].replace(':', '_') + '-' +"
    " os.environ['AWS_BATCH_JOB_ATTEMPT'], 'w').write(json.dumps({k: v for k, v in"
    " os.environ.items() if k.startswith(('AWS_BATCH', 'PIPELINE', 'TMPDIR', 'CORES'))} |"
    " {'argv': sys.argv[1:]}));"
    "sys.exit(int(sys.argv[3]))"
)
RECORDING = (PYTHON, "-c", RECORD, "Ref::Out", "Ref::Seconds", "Ref::Exit")
PIPELINE_RULES = [rule.as_evaluate_on_exit() for rule in RETRY_RULES]


@pytest.fixture
def records(tmp_path: Path) -> Path:
    path = tmp_path / "records"
    path.mkdir()
    return path


def _recording(
    batch: ProcessBatch,
    name: str,
    out: Path,
    *,
    seconds: float = 0,
    exit_code: int = 0,
    **kw: Any,
) -> str:
    return batch.register(
        name,
        RECORDING,
        parameters={"Out": str(out), "Seconds": str(seconds), "Exit": str(exit_code)},
        **kw,
    )


@pytest.fixture
def pipeline_batch(tmp_path: Path, records: Path) -> Iterator[ProcessBatch]:
    """The pipeline's five definitions (names, sizes, retry rules from the spec), each running
    the recording command instead of the job program."""
    with engine_with_processes(tmp_path / "work", queue="ProdQueue") as batch:
        for job in DEFAULT_SPEC:
            _recording(
                batch,
                job.definition_name,
                records,
                seconds=0.15 if job.key == "JobD" else 0.0,
                vcpus=job.vcpus,
                attempts=job.retry_attempts,
                rules=[rule.as_evaluate_on_exit() for rule in RETRY_RULES],
                timeout=job.timeout_seconds,
            )
        yield batch


def _targets() -> PipelineDocument:
    return PipelineDocument("ProdQueue", {j.key: j.definition_name for j in DEFAULT_SPEC})


def test_the_pipeline_runs_in_dependency_order(pipeline_batch: ProcessBatch) -> None:
    run = submit_pipeline(pipeline_batch.client, _targets(), run_config(array_size=4))
    arrays_seen: set[tuple[str, str]] = set()

    def seen(progress: list[JobProgress]) -> None:
        for job in progress:
            if job.array_size:
                active = job.children.get("STARTING", 0) + job.children.get("RUNNING", 0)
                arrays_seen.add((job.status, "children running" if active else "-"))

    result = watch(pipeline_batch.client, run, interval=0.05, on_poll=seen)
    assert result.succeeded
    # an array parent is only SUBMITTED, PENDING, FAILED or SUCCEEDED, as on AWS Batch:
    # PENDING while its children run
    assert {status for status, _ in arrays_seen} <= {"SUBMITTED", "PENDING", "SUCCEEDED"}
    assert ("PENDING", "children running") in arrays_seen
    assert [p.status for p in result.progress] == ["SUCCEEDED"] * 5
    assert result.progress[1].children == {
        "SUBMITTED": 0,
        "PENDING": 0,
        "RUNNABLE": 0,
        "STARTING": 0,
        "RUNNING": 0,
        "SUCCEEDED": 4,
        "FAILED": 0,
    }
    ids = run.job_ids
    b_children = pipeline_batch.children(ids["JobB"])
    c_children = pipeline_batch.children(ids["JobC"])
    d_children = pipeline_batch.children(ids["JobD"])
    a = pipeline_batch.describe(ids["JobA"])
    # JobB children start after JobA; C[i] never starts before B[i] succeeded (N_TO_N)
    assert all(b["startedAt"] >= a["stoppedAt"] for b in b_children)
    for b, c in zip(b_children, c_children, strict=True):
        assert c["startedAt"] >= b["stoppedAt"]
    # SEQUENTIAL: JobD's children never overlap
    for earlier, later in itertools.pairwise(d_children):
        assert later["startedAt"] >= earlier["stoppedAt"]
    assert len(d_children) == 10


def test_batch_variables_and_parameters_reach_the_command(
    pipeline_batch: ProcessBatch, records: Path
) -> None:
    config = run_config(array_size=2, source_bucket="s3://out-bucket", recipient="a@example.com")
    run = submit_pipeline(pipeline_batch.client, _targets(), config)
    assert watch(pipeline_batch.client, run, interval=0.05).succeeded
    child = json.loads((records / f"{run.job_ids['JobC'].replace(':', '_')}_1-1").read_text())
    assert child["AWS_BATCH_JOB_ARRAY_INDEX"] == "1"
    assert child["AWS_BATCH_JOB_ATTEMPT"] == "1"
    assert child["AWS_BATCH_JQ_NAME"] == "ProdQueue"
    assert child["AWS_BATCH_JOB_ID"] == f"{run.job_ids['JobC']}:1"
    assert child["AWS_BATCH_JOB_ARRAY_SIZE"] == "2"
    assert child["AWS_BATCH_CE_NAME"] == "local"
    assert child["PIPELINE_RUN_ID"] == config.run_id
    assert child["argv"][0] == str(records)  # Ref::Out substituted
    assert not Path(child["TMPDIR"]).exists()  # its scratch folder went with the attempt


def test_a_failed_child_fails_its_dependents_as_batch_reports_it(
    tmp_path: Path, records: Path
) -> None:
    with engine_with_processes(
        tmp_path / "work", queue="ProdQueue", faults={("JobB", 2): Fault("exit", 2)}
    ) as batch:
        for job in DEFAULT_SPEC:
            _recording(batch, job.definition_name, records, attempts=3, rules=PIPELINE_RULES)
        run = submit_pipeline(batch.client, _targets(), run_config(array_size=4))
        result = watch(batch.client, run, interval=0.05, settle=True)
        ids = run.job_ids
        b = batch.children(ids["JobB"])
        c = batch.children(ids["JobC"])
        d = batch.children(ids["JobD"])
        job_e = describe_jobs(batch.client, {"JobE": ids["JobE"]})[0]
    assert not result.succeeded
    assert result.failure is not None
    assert (result.failure.job_key, result.failure.child_index) == ("JobB", 2)
    assert result.failure.exit_code == 2
    assert [p.status for p in result.progress] == [
        "SUCCEEDED",
        "FAILED",
        "FAILED",
        "FAILED",
        "FAILED",
    ]
    assert len(b[2]["attempts"]) == 1  # an application error is not retried
    assert c[2]["status"] == "FAILED"
    assert c[2]["statusReason"] == "Dependent Job failed"
    assert "startedAt" not in c[2]  # it never ran
    assert "stoppedAt" not in c[2]
    assert {c[i]["status"] for i in (0, 1, 3)} == {"SUCCEEDED"}  # N_TO_N: the others ran
    assert {child["status"] for child in d} == {"FAILED"}
    assert job_e.status_reason == "Dependent Job failed"


@pytest.mark.parametrize(
    ("fault", "attempts", "status"),
    [
        (Fault("host-terminated"), 2, "SUCCEEDED"),  # retried by the Host EC2* rule
        (Fault("exit", 2), 1, "FAILED"),  # application error: EXIT
        (Fault("timeout"), 1, "FAILED"),  # Batch never retries a timed-out attempt
    ],
)
def test_retries_follow_the_job_definition(
    tmp_path: Path, records: Path, fault: Fault, attempts: int, status: str
) -> None:
    with engine_with_processes(tmp_path / "work", vcpus=1, faults={("solo", None): fault}) as batch:
        _recording(batch, "Solo", records, attempts=3, rules=PIPELINE_RULES)
        job = batch.wait_for(batch.submit("solo", "Solo"))
    assert len(job["attempts"]) == attempts
    assert job["status"] == status
    if fault.kind == "host-terminated":
        assert job["attempts"][0]["statusReason"].startswith("Host EC2")
    if fault.kind == "timeout":
        assert job["statusReason"] == "Job attempt duration exceeded timeout"


def test_evaluate_on_exit_retries_the_exit_code_it_names(tmp_path: Path, records: Path) -> None:
    # GIVEN a definition that retries exit code 75 and exits on anything else
    rules = [{"action": "RETRY", "onExitCode": "75"}, {"action": "EXIT", "onExitCode": "*"}]
    with engine_with_processes(tmp_path / "work", vcpus=1) as batch:
        _recording(batch, "Transient", records, exit_code=75, attempts=3, rules=rules)
        _recording(batch, "Final", records, exit_code=2, attempts=3, rules=rules)
        transient = batch.wait_for(batch.submit("t", "Transient"))
        final = batch.wait_for(batch.submit("f", "Final"))
    # THEN 75 is retried until the attempts are used up, 2 is not retried
    assert [a["container"]["exitCode"] for a in transient["attempts"]] == [75, 75, 75]
    assert [a["container"]["exitCode"] for a in final["attempts"]] == [2]


def test_a_real_timeout_stops_the_attempt(tmp_path: Path, records: Path) -> None:
    clock = ManualClock()
    with engine_with_processes(tmp_path / "work", vcpus=1, clock=clock) as batch:
        _recording(batch, "Slow", records, seconds=3600, timeout=60)
        job_id = batch.submit("slow", "Slow", timeout={"attemptDurationSeconds": 60})
        batch.wait_for(job_id, ("RUNNING",))
        # WHEN the scheduler's clock passes the attempt's 60 s (not waited out)
        clock.advance(61)
        batch.scheduler.wake()
        job = batch.wait_for(job_id)
    assert job["status"] == "FAILED"
    assert job["statusReason"] == "Job attempt duration exceeded timeout"
    assert len(job["attempts"]) == 1


def test_cancel_leaves_running_jobs_and_terminate_stops_them(tmp_path: Path, records: Path) -> None:
    with engine_with_processes(tmp_path / "work", vcpus=1) as batch:
        _recording(batch, "Slow", records, seconds=3600)
        running = batch.submit("a", "Slow")
        queued = batch.submit("b", "Slow")
        batch.wait_for(running, ("RUNNING",))
        batch.client.cancel_job(jobId=running, reason="cancel")
        batch.client.cancel_job(jobId=queued, reason="cancel")
        # CancelJob answers once it has done what it does: nothing to wait for
        assert batch.describe(running)["status"] == "RUNNING"
        cancelled = batch.describe(queued)
        assert cancelled["status"] == "FAILED"
        assert "stoppedAt" not in cancelled  # set only when a started job ends, as on AWS
        batch.client.terminate_job(jobId=running, reason="stop")
        job = batch.wait_for(running)
    assert job["statusReason"] == "stop"
    assert len(job["attempts"]) == 1  # a terminated job is not retried


def test_a_job_terminated_as_it_runs_still_has_the_log_stream_it_names(tmp_path: Path) -> None:
    # GIVEN services that ship each ended attempt's log, as they put it into CloudWatch Logs
    shipped: dict[str, bool] = {}

    def ship(group: str, stream: str, path: Path, failed: bool) -> None:
        shipped[stream] = path.exists()

    with engine_with_processes(tmp_path / "work", ship_log=ship) as batch:
        definition = batch.register("Sleeper", (PYTHON, "-c", "import time; time.sleep(60)"))
        # WHEN jobs are terminated the moment they are RUNNING, before their programs write
        # (or even open) their output
        ended = []
        for name in ("a", "b", "c"):
            job_id = batch.submit(name, definition)
            batch.wait_for(job_id, ("RUNNING",))
            batch.client.terminate_job(jobId=job_id, reason="now")
            ended.append(batch.wait_for(job_id))
    # THEN each still has the (empty) log its logStreamName names, as an awslogs stream exists
    # from the container's start
    streams = [job["container"]["logStreamName"] for job in ended]
    assert {stream: shipped.get(stream) for stream in streams} == dict.fromkeys(streams, True)


def test_a_job_larger_than_the_budget_runs_alone_with_all_of_it(
    tmp_path: Path, records: Path
) -> None:
    with engine_with_processes(tmp_path / "work", vcpus=2, cores_variable="CORES_GIVEN") as batch:
        _recording(batch, "Big", records, vcpus=32, seconds=0.2)
        parent = batch.submit("big", "Big", arrayProperties={"size": 3})
        batch.wait_for(parent)
        children = sorted(batch.children(parent), key=lambda c: c["startedAt"])
    for earlier, later in itertools.pairwise(children):
        assert later["startedAt"] >= earlier["stoppedAt"]
    env = json.loads(next(records.glob("*_0-1")).read_text())
    assert env["CORES_GIVEN"] == "2"  # the variable its caller named, for where none is pinned


def test_list_jobs_by_name_and_describe_limit(pipeline_batch: ProcessBatch) -> None:
    run = submit_pipeline(pipeline_batch.client, _targets(), run_config(array_size=2))
    named = pipeline_batch.client.list_jobs(
        jobQueue="ProdQueue", filters=[{"name": "JOB_NAME", "values": ["JobC"]}]
    )["jobSummaryList"]
    assert [j["jobId"] for j in named] == [run.job_ids["JobC"]]
    with pytest.raises(ClientError, match="Maximum number of jobs supported is 100"):
        pipeline_batch.client.describe_jobs(jobs=["x"] * 101)


@pytest.mark.slow  # a 250-child array run through: about 2 s
def test_list_jobs_pages_as_aws_does(tmp_path: Path, records: Path) -> None:
    with engine_with_processes(tmp_path / "work") as batch:
        _recording(batch, "One", records)
        parent = batch.submit("many", "One", arrayProperties={"size": 250})
        batch.wait_for(parent)
        pages = batch.client.get_paginator("list_jobs").paginate(
            arrayJobId=parent, jobStatus="SUCCEEDED", PaginationConfig={"PageSize": 100}
        )
        sizes = [len(page["jobSummaryList"]) for page in pages]
        whole = batch.client.list_jobs(arrayJobId=parent, jobStatus="SUCCEEDED")
        default = batch.client.list_jobs(arrayJobId=parent)["jobSummaryList"]
    assert sizes == [100, 100, 50]
    # without maxResults, a page by status holds up to 1,000 ("When --job-status is used,
    # Batch returns up to 1000 values", ListJobs, AWS Batch API Reference)
    assert (len(whole["jobSummaryList"]), "nextToken" in whole) == (250, False)
    assert default == []  # without a status or filter, ListJobs lists RUNNING jobs only


def test_a_timed_out_forked_child_and_its_own_children_are_stopped(tmp_path: Path) -> None:
    # GIVEN a job, forked by the fork server, that starts a grandchild and outlives its timeout
    marker = tmp_path / "grandchild"
    script = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen(['sleep', '3600']); open({str(marker)!r}, 'w').write(str(p.pid)); "
        "time.sleep(3600)"
    )
    clock = ManualClock()
    with engine_with_processes(tmp_path / "work", vcpus=1, clock=clock) as batch:
        batch.register("stuck", (PYTHON, "-c", script), timeout=60)
        job_id = batch.submit("stuck", "stuck")
        batch.wait_for(job_id, ("RUNNING",))
        deadline = time.monotonic() + 30
        while not marker.exists() or not marker.read_text():
            assert time.monotonic() < deadline, "the job did not start its grandchild"
            time.sleep(0.02)
        grandchild = int(marker.read_text())
        clock.advance(61)
        batch.scheduler.wake()
        job = batch.wait_for(job_id)
    # THEN it failed on its timeout, and neither it nor its grandchild is left
    assert job["statusReason"] == "Job attempt duration exceeded timeout"
    _gone(grandchild)


def test_without_its_fork_server_a_run_still_runs(tmp_path: Path, records: Path) -> None:
    with engine_with_processes(tmp_path / "work", vcpus=1) as batch:
        fork_server = batch.scheduler.fork_server
        assert fork_server is not None
        fork_server.process.kill()
        fork_server.process.wait()
        _recording(batch, "one", records)
        # WHEN a job is submitted, THEN it runs in a fresh process and succeeds
        job = batch.wait_for(batch.submit("one", "one"))
        assert job["status"] == "SUCCEEDED"
        assert batch.scheduler.fork_server is None


def test_a_fork_server_that_dies_mid_run_is_a_lost_host(tmp_path: Path) -> None:
    rules = [rule.as_evaluate_on_exit() for rule in RETRY_RULES]
    with engine_with_processes(tmp_path / "work", vcpus=1) as batch:
        batch.register("long", (PYTHON, "-c", "import time; time.sleep(3600)"), rules=rules)
        job_id = batch.submit("long", "long")
        batch.wait_for(job_id, ("RUNNING",))
        process = batch.engine.jobs[job_id].process
        assert process is not None
        assert batch.scheduler.fork_server is not None
        batch.scheduler.fork_server.process.kill()  # WHEN the fork server dies under a job
        job = batch.wait_for(job_id)
    # THEN the attempt ended as on a lost host, and its process is gone
    assert job["status"] == "FAILED"
    assert job["attempts"][0]["statusReason"].startswith("Host EC2")
    _gone(process.pid)


def _gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return  # killed, waiting for its parent to collect it
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.02)


def test_a_stopped_job_is_asked_first_and_cleans_up(tmp_path: Path) -> None:
    # GIVEN a job that removes a file of its own when asked to stop (SIGTERM); the file appears
    # once the handler is in place, so the stop cannot come before the job can hear it
    own = tmp_path / "own-file"
    script = (
        "import pathlib, signal, sys, time; p = pathlib.Path(sys.argv[1]);"
        "signal.signal(signal.SIGTERM, lambda *_: (p.unlink(), sys.exit(143)));"
        "p.write_text('x'); time.sleep(3600)"
    )
    with engine_with_processes(tmp_path / "work", vcpus=1) as batch:
        batch.register("polite", (PYTHON, "-c", script, str(own)))
        job_id = batch.submit("polite", "polite")
        batch.wait_for(job_id, ("RUNNING",))
        deadline = time.monotonic() + 30
        while not own.exists():
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.02)
        batch.client.terminate_job(jobId=job_id, reason="stopped by the test")
        job = batch.wait_for(job_id)
    # THEN it had the chance to clean up before it ended
    assert job["statusReason"] == "stopped by the test"
    assert not own.exists()
    assert signal.SIGTERM  # the stop it was asked with


def test_a_client_is_reused_only_in_the_same_client_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fork server makes the job programs' clients before forking; a child reuses one only
    # when its endpoint, credentials and region are those the client was made with.
    from pipeline.jobs import aws_calls

    monkeypatch.setattr(aws_calls, "_clients", {})
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    first = aws_calls.make_client("s3")
    assert aws_calls.make_client("s3") is first
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    other = aws_calls.make_client("s3")
    assert other is not first
    assert other.meta.endpoint_url == "http://127.0.0.1:2"


def test_the_engine_runs_where_cpu_affinity_does_not_exist(
    tmp_path: Path, records: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a system without sched_getaffinity/sched_setaffinity (macOS)
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.delattr(os, "sched_setaffinity")
    with engine_with_processes(tmp_path / "work", vcpus=None, fork=False) as batch:  # type: ignore[arg-type]
        _recording(batch, "one", records)
        job = batch.wait_for(batch.submit("one", "one"))
    assert job["status"] == "SUCCEEDED"
    assert batch.scheduler.vcpu_budget == (os.cpu_count() or 1)


# --- the API as AWS Batch serves it ---------------------------------------------------------


def test_job_definitions_have_revisions(tmp_path: Path, records: Path) -> None:
    with engine_with_processes(tmp_path / "work") as batch:
        first = _recording(batch, "d", records)
        second = _recording(batch, "d", records, exit_code=3)
        batch.client.deregister_job_definition(jobDefinition="d:2")
        by_name = batch.wait_for(batch.submit("n", "d"))  # the newest ACTIVE revision: 1
        by_arn = batch.wait_for(batch.submit("a", first))
        with pytest.raises(ClientError, match="INACTIVE"):
            batch.submit("x", second)
        with pytest.raises(ClientError, match="does not exist"):
            batch.submit("x", "d:9")
    assert first.endswith(":1")
    assert second.endswith(":2")
    assert by_name["jobDefinition"] == first
    assert by_arn["status"] == "SUCCEEDED"


def test_the_deprecated_vcpus_and_memory_overrides_are_mapped(
    tmp_path: Path, records: Path
) -> None:
    with engine_with_processes(tmp_path / "work") as batch:
        _recording(batch, "d", records)
        job_id = batch.submit("n", "d", containerOverrides={"vcpus": 4, "memory": 4096})
        job = batch.wait_for(job_id)
    assert job["container"]["resourceRequirements"] == [
        {"type": "VCPU", "value": "4"},
        {"type": "MEMORY", "value": "4096"},
    ]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"arrayProperties": {"size": 1}}, "Array size must be between 2 and 10000"),
        ({"arrayProperties": {"size": 10_001}}, "Array size must be between 2 and 10000"),
        ({"jobQueue": "Nope"}, "Job Queue Nope does not exist"),
        ({"jobDefinition": "nope"}, "Job definition nope does not exist"),
        ({"dependsOn": [{"jobId": "x"}] * 21}, "at most 20"),
        ({"dependsOn": [{"jobId": "no-such-job"}]}, "no-such-job does not exist"),
    ],
)
def test_bad_requests_are_refused_with_aws_error_codes(
    tmp_path: Path, records: Path, request_: dict[str, Any], message: str
) -> None:
    with engine_with_processes(tmp_path / "work") as batch:
        _recording(batch, "d", records)
        request = {"jobName": "n", "jobQueue": "Q", "jobDefinition": "d", **request_}
        with pytest.raises(ClientError) as raised:
            batch.client.submit_job(**request)
    assert raised.value.response["Error"]["Code"] == "ClientException"
    assert message in raised.value.response["Error"]["Message"]


def test_a_disabled_compute_environment_holds_jobs_and_a_disabled_queue_takes_none(
    tmp_path: Path, records: Path
) -> None:
    with engine_with_processes(tmp_path / "work") as batch:
        _recording(batch, "d", records)
        batch.client.update_compute_environment(computeEnvironment="local", state="DISABLED")
        held = batch.submit("held", "d")
        batch.wait_for(held, ("RUNNABLE",))
        snapshot = batch.client.get_job_queue_snapshot(jobQueue="Q")["frontOfQueue"]["jobs"]
        assert [j["jobArn"].rsplit("/", 1)[1] for j in snapshot] == [held]
        batch.client.update_compute_environment(computeEnvironment="local", state="ENABLED")
        assert batch.wait_for(held)["status"] == "SUCCEEDED"
        batch.client.update_job_queue(jobQueue="Q", state="DISABLED")
        with pytest.raises(ClientError, match="DISABLED"):
            batch.submit("refused", "d")


def test_tags_on_jobs_and_definitions(tmp_path: Path, records: Path) -> None:
    with engine_with_processes(tmp_path / "work") as batch:
        definition = _recording(batch, "d", records)
        job_id = batch.submit("n", "d", tags={"team": "data"}, propagateTags=True)
        arn = batch.describe(job_id)["jobArn"]
        batch.client.tag_resource(resourceArn=arn, tags={"stage": "test"})
        batch.client.tag_resource(resourceArn=definition, tags={"owner": "me"})
        batch.client.untag_resource(resourceArn=arn, tagKeys=["team"])
        assert batch.client.list_tags_for_resource(resourceArn=arn)["tags"] == {"stage": "test"}
        assert batch.client.list_tags_for_resource(resourceArn=definition)["tags"] == {
            "owner": "me"
        }


def test_an_operation_the_endpoint_does_not_serve_is_named(tmp_path: Path) -> None:
    with engine_with_processes(tmp_path / "work") as batch, pytest.raises(ClientError) as raised:
        batch.client.create_scheduling_policy(name="fair")
    assert raised.value.response["Error"]["Code"] == "UnknownOperationException"
    assert "CreateSchedulingPolicy" in raised.value.response["Error"]["Message"]
