"""LocalBatch's AWS Batch semantics, with small Python commands as the jobs."""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.document import PipelineDocument
from pipeline.local import Fault, LocalBatch, LocalJobDefinition
from pipeline.local.backend import local_document
from pipeline.runs.chain import submit_pipeline
from pipeline.runs.progress import describe_jobs
from pipeline.runs.requests import run_config
from pipeline.runs.watch import watch
from pipeline.spec import DEFAULT_SPEC

RECORD = (
    "import json, os, sys, time; time.sleep(float(sys.argv[2]));"
    "open(sys.argv[1] + '/' + os.environ['AWS_BATCH_JOB_ID'].replace(':', '_') + '-' +"
    " os.environ['AWS_BATCH_JOB_ATTEMPT'], 'w').write(json.dumps({k: v for k, v in"
    " os.environ.items() if k.startswith(('AWS_BATCH', 'PIPELINE'))} | {'argv': sys.argv[1:]}));"
    "sys.exit(int(sys.argv[3]))"
)


def definition(
    name: str, out: Path, *, seconds: float = 0.0, exit_code: int = 0, **kw: Any
) -> LocalJobDefinition:
    return LocalJobDefinition(
        name=name,
        command=(sys.executable, "-c", RECORD, "Ref::Out", "Ref::Seconds", "Ref::Exit"),
        vcpus=kw.pop("vcpus", 1),
        memory_mib=128,
        parameters={"Out": str(out), "Seconds": str(seconds), "Exit": str(exit_code)},
        **kw,
    )


@pytest.fixture
def records(tmp_path: Path) -> Path:
    path = tmp_path / "records"
    path.mkdir()
    return path


@pytest.fixture
def pipeline_batch(tmp_path: Path, records: Path) -> Iterator[LocalBatch]:
    """The pipeline's five definitions (names, sizes, retry rules from the spec), each running
    the recording command instead of the job program."""
    definitions = {
        job.definition_name: definition(
            job.definition_name,
            records,
            seconds=0.15 if job.key == "JobD" else 0.0,
            vcpus=job.vcpus,
            retry_attempts=job.retry_attempts,
            timeout_seconds=job.timeout_seconds,
        )
        for job in DEFAULT_SPEC
    }
    with LocalBatch(
        queue="ProdQueue", definitions=definitions, vcpu_budget=2, log_dir=tmp_path / "logs"
    ) as batch:
        yield batch


def _targets() -> PipelineDocument:
    return PipelineDocument("ProdQueue", {j.key: j.definition_name for j in DEFAULT_SPEC})


def _children(batch: LocalBatch, parent_id: str) -> list[dict[str, Any]]:
    summaries = batch.list_jobs(arrayJobId=parent_id)["jobSummaryList"]
    return batch.describe_jobs(jobs=[s["jobId"] for s in summaries])["jobs"]


def test_the_pipeline_runs_in_dependency_order(pipeline_batch: LocalBatch, records: Path) -> None:
    run = submit_pipeline(pipeline_batch, _targets(), run_config(array_size=4))
    result = watch(pipeline_batch, run, interval=0.05)
    assert result.succeeded
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
    b_children = {c["arrayProperties"]["index"]: c for c in _children(pipeline_batch, ids["JobB"])}
    c_children = {c["arrayProperties"]["index"]: c for c in _children(pipeline_batch, ids["JobC"])}
    d_children = sorted(
        _children(pipeline_batch, ids["JobD"]), key=lambda c: c["arrayProperties"]["index"]
    )
    a = pipeline_batch.describe_jobs(jobs=[ids["JobA"]])["jobs"][0]
    # JobB children start after JobA; C[i] never starts before B[i] succeeded (N_TO_N)
    assert all(b["startedAt"] >= a["stoppedAt"] for b in b_children.values())
    for index, c in c_children.items():
        assert c["startedAt"] >= b_children[index]["stoppedAt"]
    # SEQUENTIAL: JobD's children never overlap
    for earlier, later in itertools.pairwise(d_children):
        assert later["startedAt"] >= earlier["stoppedAt"]
    assert len(d_children) == 10


def test_batch_variables_and_parameters_reach_the_command(
    pipeline_batch: LocalBatch, records: Path
) -> None:
    config = run_config(array_size=2, source_bucket="s3://out-bucket", recipient="a@example.com")
    run = submit_pipeline(pipeline_batch, _targets(), config)
    assert watch(pipeline_batch, run, interval=0.05).succeeded
    child = json.loads((records / f"{run.job_ids['JobC'].replace(':', '_')}_1-1").read_text())
    assert child["AWS_BATCH_JOB_ARRAY_INDEX"] == "1"
    assert child["AWS_BATCH_JOB_ATTEMPT"] == "1"
    assert child["AWS_BATCH_JQ_NAME"] == "ProdQueue"
    assert child["AWS_BATCH_JOB_ID"] == f"{run.job_ids['JobC']}:1"
    assert child["PIPELINE_RUN_ID"] == config.run_id
    assert child["argv"][0] == str(records)  # Ref::Out substituted


def test_a_failed_child_fails_its_dependents_as_batch_reports_it(
    tmp_path: Path, records: Path
) -> None:
    definitions = LocalJobDefinition.from_document(local_document())
    definitions = {name: definition(name, records, retry_attempts=3) for name in definitions}
    faults = {("JobB", 2): Fault("exit", 2)}
    with LocalBatch(
        queue="ProdQueue",
        definitions=definitions,
        vcpu_budget=2,
        log_dir=tmp_path / "logs",
        faults=faults,
    ) as batch:
        run = submit_pipeline(batch, _targets(), run_config(array_size=4))
        result = watch(batch, run, interval=0.05, settle=True)
        ids = run.job_ids
        b = {c["arrayProperties"]["index"]: c for c in _children(batch, ids["JobB"])}
        c = {c["arrayProperties"]["index"]: c for c in _children(batch, ids["JobC"])}
        d = _children(batch, ids["JobD"])
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
    assert {c[i]["status"] for i in (0, 1, 3)} == {"SUCCEEDED"}  # N_TO_N: the others ran
    assert {child["status"] for child in d} == {"FAILED"}
    assert describe_jobs(batch, {"JobE": ids["JobE"]})[0].status_reason == "Dependent Job failed"


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
    definitions = {"Solo": definition("Solo", records, retry_attempts=3)}
    with LocalBatch(
        queue="Q",
        definitions=definitions,
        vcpu_budget=1,
        log_dir=tmp_path,
        faults={("solo", None): fault},
    ) as batch:
        job_id = batch.submit_job(jobName="solo", jobQueue="Q", jobDefinition="Solo")["jobId"]
        while (job := batch.describe_jobs(jobs=[job_id])["jobs"][0])["status"] not in (
            "SUCCEEDED",
            "FAILED",
        ):
            time.sleep(0.05)
    assert len(job["attempts"]) == attempts
    assert job["status"] == status
    if fault.kind == "host-terminated":
        assert job["attempts"][0]["statusReason"].startswith("Host EC2")
    if fault.kind == "timeout":
        assert job["statusReason"] == "Job attempt duration exceeded timeout"


def test_a_real_timeout_kills_the_attempt(tmp_path: Path, records: Path) -> None:
    definitions = {"Slow": definition("Slow", records, seconds=30, timeout_seconds=1)}
    with LocalBatch(queue="Q", definitions=definitions, vcpu_budget=1, log_dir=tmp_path) as batch:
        started = time.monotonic()
        job_id = batch.submit_job(jobName="slow", jobQueue="Q", jobDefinition="Slow")["jobId"]
        while batch.describe_jobs(jobs=[job_id])["jobs"][0]["status"] != "FAILED":
            time.sleep(0.05)
        assert time.monotonic() - started < 10


def test_cancel_leaves_running_jobs_and_terminate_stops_them(tmp_path: Path, records: Path) -> None:
    definitions = {"Slow": definition("Slow", records, seconds=30)}
    with LocalBatch(queue="Q", definitions=definitions, vcpu_budget=1, log_dir=tmp_path) as batch:
        running = batch.submit_job(jobName="a", jobQueue="Q", jobDefinition="Slow")["jobId"]
        queued = batch.submit_job(jobName="b", jobQueue="Q", jobDefinition="Slow")["jobId"]
        while batch.describe_jobs(jobs=[running])["jobs"][0]["status"] != "RUNNING":
            time.sleep(0.05)
        batch.cancel_job(jobId=running, reason="cancel")
        batch.cancel_job(jobId=queued, reason="cancel")
        time.sleep(0.3)
        states = {
            j["jobId"]: j["status"] for j in batch.describe_jobs(jobs=[running, queued])["jobs"]
        }
        assert states == {running: "RUNNING", queued: "FAILED"}
        batch.terminate_job(jobId=running, reason="stop")
        while batch.describe_jobs(jobs=[running])["jobs"][0]["status"] != "FAILED":
            time.sleep(0.05)
        job = batch.describe_jobs(jobs=[running])["jobs"][0]
    assert job["statusReason"] == "stop"
    assert len(job["attempts"]) == 1  # a terminated job is not retried


def test_a_job_larger_than_the_budget_runs_alone_with_all_of_it(
    tmp_path: Path, records: Path
) -> None:
    definitions = {"Big": definition("Big", records, vcpus=32, seconds=0.2)}
    with LocalBatch(queue="Q", definitions=definitions, vcpu_budget=2, log_dir=tmp_path) as batch:
        parent = batch.submit_job(
            jobName="big", jobQueue="Q", jobDefinition="Big", arrayProperties={"size": 3}
        )["jobId"]
        while batch.describe_jobs(jobs=[parent])["jobs"][0]["status"] != "SUCCEEDED":
            time.sleep(0.05)
        children = sorted(_children(batch, parent), key=lambda c: c["startedAt"])
    for earlier, later in itertools.pairwise(children):
        assert later["startedAt"] >= earlier["stoppedAt"]
    env = json.loads(next(records.glob("*_0-1")).read_text())
    assert env["PIPELINE_WORKERS"] == "2"


def test_list_jobs_by_name_and_describe_limit(pipeline_batch: LocalBatch) -> None:
    run = submit_pipeline(pipeline_batch, _targets(), run_config(array_size=2))
    named = pipeline_batch.list_jobs(
        jobQueue="ProdQueue", filters=[{"name": "JOB_NAME", "values": ["JobC"]}]
    )["jobSummaryList"]
    assert [j["jobId"] for j in named] == [run.job_ids["JobC"]]
    with pytest.raises(Exception, match="A maximum of 100 jobs"):
        pipeline_batch.describe_jobs(jobs=["x"] * 101)


def test_a_timed_out_forked_child_and_its_own_children_are_killed(tmp_path: Path) -> None:
    # GIVEN a job, forked by the launcher, that starts a grandchild and outlives its timeout
    marker = f"{time.time():.6f}"
    script = (
        "import subprocess, sys, time; "
        f"subprocess.Popen(['sleep', '3600', '{marker}']); time.sleep(3600)"
    )
    definition = LocalJobDefinition(
        name="stuck",
        command=(sys.executable, "-c", script),
        vcpus=1,
        memory_mib=64,
        timeout_seconds=1,
    )
    with LocalBatch(
        queue="Q", definitions={"stuck": definition}, vcpu_budget=1, log_dir=tmp_path / "logs"
    ) as batch:
        job_id = batch.submit_job(jobName="stuck", jobQueue="Q", jobDefinition="stuck")["jobId"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            (job,) = batch.describe_jobs(jobs=[job_id])["jobs"]
            if job["status"] == "FAILED":
                break
            time.sleep(0.1)
    # THEN it failed on its timeout, and neither it nor its grandchild is left
    assert job["statusReason"] == "Job attempt duration exceeded timeout"
    time.sleep(0.3)
    left = [
        p.name
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and marker.encode() in _cmdline(p)
    ]
    assert left == []


def _cmdline(process: Path) -> bytes:
    try:
        return (process / "cmdline").read_bytes()
    except OSError:
        return b""


def test_without_its_launcher_a_run_still_runs(tmp_path: Path, records: Path) -> None:
    # GIVEN a LocalBatch whose pre-loaded launcher has died
    definitions = {"one": definition("one", records)}
    with LocalBatch(
        queue="Q", definitions=definitions, vcpu_budget=1, log_dir=tmp_path / "logs"
    ) as batch:
        assert batch._launcher is not None
        batch._launcher.process.kill()
        batch._launcher.process.wait()
        # WHEN a job is submitted, THEN it runs in a fresh process and succeeds
        job_id = batch.submit_job(jobName="one", jobQueue="Q", jobDefinition="one")["jobId"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            (job,) = batch.describe_jobs(jobs=[job_id])["jobs"]
            if job["status"] in ("SUCCEEDED", "FAILED"):
                break
            time.sleep(0.05)
    assert job["status"] == "SUCCEEDED"
    assert batch._launcher is None


def test_a_launcher_that_dies_mid_run_leaves_no_child_running(tmp_path: Path) -> None:
    marker = f"{time.time():.6f}"
    definition = LocalJobDefinition(
        name="long",
        command=(sys.executable, "-c", f"import time; time.sleep(3600)  # {marker}"),
        vcpus=1,
        memory_mib=64,
    )
    with LocalBatch(
        queue="Q", definitions={"long": definition}, vcpu_budget=1, log_dir=tmp_path / "logs"
    ) as batch:
        job_id = batch.submit_job(jobName="long", jobQueue="Q", jobDefinition="long")["jobId"]
        deadline = time.monotonic() + 30
        while batch.describe_jobs(jobs=[job_id])["jobs"][0]["status"] != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert batch._launcher is not None
        # (a forked job's command line is the launcher's: it is found by its pid)
        process = batch._jobs[job_id].process
        assert process is not None
        batch._launcher.process.kill()  # WHEN the launcher dies under a running job
        while batch.describe_jobs(jobs=[job_id])["jobs"][0]["status"] == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (job,) = batch.describe_jobs(jobs=[job_id])["jobs"]
    # THEN the job ended (failed: its process was killed) and its process is gone, even when
    # the launcher died before the job's process had become the job
    assert job["status"] == "FAILED"
    _gone(process.pid)
    assert not [
        p for p in Path("/proc").iterdir() if p.name.isdigit() and marker.encode() in _cmdline(p)
    ]


def _gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":  # killed, and waiting for its parent to collect it
            return
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.05)


def test_a_client_is_reused_only_in_the_same_client_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The launcher makes the job programs' clients before forking; a child reuses one only
    # when its endpoint, credentials and region are those the client was made with.
    from batch_jobs import common

    monkeypatch.setattr(common, "_clients", {})
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    first = common.make_client("s3")
    assert common.make_client("s3") is first
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    other = common.make_client("s3")
    assert other is not first
    assert other.meta.endpoint_url == "http://127.0.0.1:2"


# --- the launcher's spare: a fork made ahead of the next request --------------------------------

REPORT = (
    "import json, os, sys; print(json.dumps({'pid': os.getpid(), 'group': os.getpgid(0),"
    " 'session': os.getsid(0), 'cores': sorted(os.sched_getaffinity(0)),"
    " 'env': dict(os.environ)})); sys.exit(3)"
)


def _launcher_children(launcher_pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # the field after the parenthesised command name: state, then the parent's pid
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == launcher_pid:
            found.add(int(entry.name))
    return found


def _spares(launcher_pid: int) -> set[int]:
    """The launcher's spares, once it has made as many as it keeps."""
    from pipeline.local.launcher import spare_count

    wanted = spare_count()
    deadline = time.monotonic() + 30
    while len(children := _launcher_children(launcher_pid)) < wanted:
        assert time.monotonic() < deadline, "the launcher made no spare"
        time.sleep(0.05)
    return children


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Any]:
    from pipeline.local.batch import _Launcher
    from pipeline.local.services import job_environment

    # An endpoint nothing listens on: the spare's warm-up request fails at once, unretried.
    started = _Launcher(job_environment("http://127.0.0.1:9"), tmp_path / "logs", lambda: None)
    try:
        yield started
    finally:
        started.close()


def test_a_job_runs_in_the_spare_forked_before_it_was_asked_for(
    launcher: Any, tmp_path: Path
) -> None:
    # GIVEN a launcher, which forks its spares as soon as it has loaded the job programs
    spares = _spares(launcher.process.pid)
    # WHEN a job is launched on core 0 with an environment of its own
    log = tmp_path / "job.log"
    job = launcher.launch([sys.executable, "-c", REPORT], {"ONLY": "this"}, log, [0])
    # THEN the spare runs it (its warm-up did not wait out retries against a dead endpoint),
    # as a process of its own: own session and group, its cores, only its environment, its
    # exit code, its log
    spare = job.pid
    assert spare in spares
    assert job.wait(10) == 3
    seen = json.loads(log.read_text())
    assert seen == {
        "pid": spare,
        "group": spare,
        "session": spare,
        "cores": [0],
        "env": {"ONLY": "this"},
    }
    # AND, once the job is reaped (its exit is reported as it exits, a moment before), a new
    # spare has taken its place
    deadline = time.monotonic() + 10
    while spare in _launcher_children(launcher.process.pid):
        assert time.monotonic() < deadline, "the job was not reaped"
        time.sleep(0.02)
    after = _spares(launcher.process.pid)
    assert len(after - spares) == 1


def test_a_request_the_spare_cannot_take_at_once_gets_a_fresh_fork(
    launcher: Any, tmp_path: Path
) -> None:
    # GIVEN spares, and a request larger than a pipe holds (its environment is 200 KB)
    spares = _spares(launcher.process.pid)
    large = "x" * 200_000
    log = tmp_path / "job.log"
    # WHEN it is launched
    job = launcher.launch([sys.executable, "-c", REPORT], {"LARGE": large}, log, [])
    # THEN a fresh fork runs it, whole, and the spare that was offered it ends unused (its
    # exit is not reported as the job's)
    assert job.pid not in spares
    assert job.wait(10) == 3
    assert json.loads(log.read_text())["env"] == {"LARGE": large}
    deadline = time.monotonic() + 10
    while spares <= _launcher_children(launcher.process.pid):
        assert time.monotonic() < deadline, "the unused spare did not end"
        time.sleep(0.05)


def test_closing_the_launcher_ends_its_spare_at_once(launcher: Any) -> None:
    # GIVEN a launcher with its spares
    spares = _spares(launcher.process.pid)
    # WHEN it is closed
    started = time.monotonic()
    launcher.close()
    # THEN it ends at once (its closing does not wait for warm-ups), and so do the spares
    assert time.monotonic() - started < 3
    assert launcher.process.returncode == 0
    assert not [pid for pid in spares if Path(f"/proc/{pid}").exists()]  # ended and reaped


def test_a_job_ended_by_a_signal_is_reported_with_it(launcher: Any, tmp_path: Path) -> None:
    # A job's process tells the launcher its exit code as it exits; one killed by a signal
    # says nothing, and its exit is reported when it is reaped, with the signal
    script = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    job = launcher.launch([sys.executable, "-c", script], {}, tmp_path / "job.log", [])
    assert job.wait(10) == -9
    job = launcher.launch([sys.executable, "-c", "raise SystemExit(7)"], {}, tmp_path / "b.log", [])
    assert job.wait(10) == 7


def _pages_can_be_copied_ahead() -> bool:
    """Whether this system has /proc's page map and MADV_POPULATE_WRITE (Linux 5.14+): the
    spares' page lesson needs both; without them spares send the warm-up requests."""
    from pipeline.local.launcher import PAGE, copy_pages

    if not Path("/proc/self/pagemap").exists():
        return False
    memory = bytearray(3 * PAGE)
    base = ctypes.addressof((ctypes.c_char * len(memory)).from_buffer(memory))
    first = -(-base // PAGE) * PAGE
    return copy_pages([(first, first + PAGE)])


PAGES_COPIED_AHEAD = pytest.mark.skipif(
    not _pages_can_be_copied_ahead(), reason="needs Linux 5.14+ (/proc, MADV_POPULATE_WRITE)"
)


@pytest.mark.parametrize(
    ("runs", "mappings", "inside"),
    [
        (
            [(0, 10), (20, 30), (40, 50)],
            [(5, 25), (26, 28), (45, 99)],
            [(5, 10), (20, 25), (26, 28), (45, 50)],
        ),
        ([(0, 100)], [(10, 20), (30, 40)], [(10, 20), (30, 40)]),
        ([(10, 20)], [(0, 5), (25, 30)], []),
        ([(0, 5)], [], []),
    ],
)
def test_pages_are_copied_only_within_the_process_own_writable_mappings(
    runs: list[tuple[int, int]], mappings: list[tuple[int, int]], inside: list[tuple[int, int]]
) -> None:
    from pipeline.local.launcher import within

    assert within(runs, mappings) == inside


@PAGES_COPIED_AHEAD
def test_a_fork_finds_the_pages_it_wrote_and_copies_others_ahead_unchanged() -> None:
    from pipeline.local.launcher import PAGE, copy_pages, pages_held_alone, writable_mappings

    # GIVEN memory written before a fork, so that the fork shares every page of it
    memory = bytearray(b"x" * (32 * PAGE))
    base = ctypes.addressof((ctypes.c_char * len(memory)).from_buffer(memory))
    first = -(-base // PAGE) * PAGE  # the first whole page of it

    def page(number: int) -> int:
        return first + number * PAGE

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the fork
        try:
            mappings = writable_mappings()
            # WHEN it writes to page 2, and copies pages 10 to 12 ahead of any write
            memory[page(2) - base] = ord("y")
            copied = copy_pages([(page(10), page(13))])
            alone = pages_held_alone(mappings)

            def held(number: int) -> bool:
                return any(start <= page(number) < end for start, end in alone)

            seen = {
                "copied": copied,
                "held": [n for n in range(20) if held(n)],
                "unchanged": memory[page(10) - base : page(13) - base] == b"x" * 3 * PAGE,
            }
            os.write(write, json.dumps(seen).encode())
        finally:
            os._exit(0)
    os.close(write)
    seen = json.loads(os.read(read, 65536))
    os.close(read)
    os.waitpid(pid, 0)
    # THEN it holds alone exactly the page it wrote and those it copied, whose bytes are as
    # they were; the others it still shares
    assert seen == {"copied": True, "held": [2, 10, 11, 12], "unchanged": True}


@pytest.mark.slow  # starts the local services and waits out the first spares' warm-ups
@PAGES_COPIED_AHEAD
def test_spares_copy_the_pages_a_warm_up_wrote_instead_of_sending_requests(
    tmp_path: Path,
) -> None:
    from pipeline.local.batch import _Launcher
    from pipeline.local.launcher import MAX_SPARES
    from pipeline.local.server import STATS_PATH
    from pipeline.local.services import job_environment, local_aws

    def requests_served(endpoint: str) -> int:
        with urllib.request.urlopen(endpoint + STATS_PATH) as answer:
            return int(json.load(answer)["requests"])

    with local_aws() as aws:
        # GIVEN a launcher whose first spare has warmed up against the local services and
        # said which pages that copied
        log = tmp_path / "logs" / "launcher.log"
        launcher = _Launcher(job_environment(aws.endpoint), tmp_path / "logs", lambda: None)
        try:
            deadline = time.monotonic() + 30
            while "a warm-up copies" not in (log.read_text() if log.exists() else ""):
                assert time.monotonic() < deadline, "no spare said what its warm-up copied"
                time.sleep(0.05)
            assert not log.read_text().startswith("launcher: a warm-up copies 0 pages")
            time.sleep(1)  # the other first spares' warm-ups are answered
            before = requests_served(aws.endpoint)
            # WHEN jobs that take every core run one after another, each taken by a spare and
            # replaced by a new one, which warms up
            every_core = sorted(os.sched_getaffinity(0))
            for number in range(MAX_SPARES + 2):
                job = launcher.launch(
                    [sys.executable, "-c", "pass"], {}, tmp_path / f"{number}.log", every_core
                )
                assert job.wait(10) == 0
            time.sleep(1)
            # THEN the new spares warmed up by copying those pages: none sent a request
            assert requests_served(aws.endpoint) == before
        finally:
            launcher.close()


def test_a_job_stopped_before_its_process_became_the_job_is_gone(tmp_path: Path) -> None:
    # GIVEN local services that accept connections and never answer, so every spare is still
    # warming up (its one request unanswered) when it is handed a job
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    environment = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{silent.getsockname()[1]}",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    definition = LocalJobDefinition(
        name="long",
        command=(sys.executable, "-c", "import time; time.sleep(3600)"),
        vcpus=1,
        memory_mib=64,
    )
    with LocalBatch(
        queue="Q",
        definitions={"long": definition},
        vcpu_budget=1,
        log_dir=tmp_path / "logs",
        environment=environment,
    ) as batch:
        job_id = batch.submit_job(jobName="long", jobQueue="Q", jobDefinition="long")["jobId"]
        deadline = time.monotonic() + 30
        while batch.describe_jobs(jobs=[job_id])["jobs"][0]["status"] != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process = batch._jobs[job_id].process
        assert process is not None
        # WHEN it is stopped at once
        batch.terminate_job(jobId=job_id, reason="stopped by the test")
        while batch.describe_jobs(jobs=[job_id])["jobs"][0]["status"] == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # THEN its process is gone (killed by its group, which a spare has from birth)
        _gone(process.pid)
    silent.close()
