"""The local services left running, and what goes wrong around them: they are killed with
SIGKILL mid-array and leave no job process behind, and started again on the same state they
finish the array, an interrupted attempt retried as AWS retries one lost with its host; a
client deleting the job log group while a 300-child array fails does not freeze them; a thread
that dies, a stopped server and too few file descriptors each end the command in front in one
line, exit code 255, never a silent wait."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest

from helpers.cli import cli_env, run_cli, start_cli
from helpers.cli import serving as serving_in
from helpers.paths import REPO
from helpers.processes import run_processes

pytestmark = pytest.mark.slow  # each test runs the services and real job processes

HOST_LOST_RETRIED = [
    {"action": "RETRY", "onStatusReason": "Host EC2*"},
    {"action": "EXIT", "onExitCode": "*"},
]


@contextmanager
def serving(home: Path, state: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], Any]]:
    """``serve --state-dir STATE`` in a session of its own; (its process, its handshake)."""
    with serving_in(REPO, cli_env(home), f"--state-dir={state}", *extra) as served:
        yield served


def _client(ready: dict[str, Any], service: str) -> Any:
    credentials = ready["credentials"]
    return boto3.client(
        service,
        endpoint_url=ready["endpoint"],
        region_name=ready["region"],
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
    )


def _queue(batch: Any) -> None:
    batch.create_compute_environment(computeEnvironmentName="here", type="UNMANAGED")
    batch.create_job_queue(
        jobQueueName="q",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": "here"}],
    )


def _definition(batch: Any, name: str, command: list[str], **request: Any) -> None:
    batch.register_job_definition(
        jobDefinitionName=name,
        type="container",
        containerProperties={
            "image": "local",
            "command": command,
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "64"},
            ],
        },
        **request,
    )


def _until(condition: Any, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"after {seconds} s: {what}"
        time.sleep(0.05)


def _children(batch: Any, parent: str) -> list[dict[str, Any]]:
    size = batch.describe_jobs(jobs=[parent])["jobs"][0]["arrayProperties"]["size"]
    ids = [f"{parent}:{index}" for index in range(size)]
    return sorted(
        (
            j
            for start in range(0, size, 100)
            for j in batch.describe_jobs(jobs=ids[start : start + 100])["jobs"]
        ),
        key=lambda j: j["arrayProperties"]["index"],
    )


def test_a_killed_server_leaves_no_job_process_and_a_restart_finishes_its_array(
    tmp_path: Path,
) -> None:
    # GIVEN an array of six children, two running at a time (a Python program and a plain
    # one), whose definition retries an attempt lost with its host
    state = tmp_path / "state"
    with serving(tmp_path, state, "--vcpus", "2") as (server, ready):
        batch = _client(ready, "batch")
        _queue(batch)
        _definition(
            batch,
            "slow",
            ["sh", "-c", "sleep 2 && exec python3 -c 'import time; time.sleep(1)'"],
            retryStrategy={"attempts": 2, "evaluateOnExit": HOST_LOST_RETRIED},
        )
        parent = batch.submit_job(
            jobName="slow", jobQueue="q", jobDefinition="slow", arrayProperties={"size": 6}
        )["jobId"]
        _until(
            lambda: sum(c["status"] == "RUNNING" for c in _children(batch, parent)) == 2,
            "two children running",
        )
        assert len(run_processes(ready["endpoint"], state)) >= 3  # services, fork server, jobs
        # WHEN the services are killed outright
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        # THEN within ten seconds nothing of theirs runs on this machine
        _until(
            lambda: run_processes(ready["endpoint"], state) == [],
            f"processes left: {run_processes(ready['endpoint'], state)}",
            seconds=10,
        )
    # WHEN they are started again on the same state
    with serving(tmp_path, state, "--vcpus", "2") as (_, again):
        batch = _client(again, "batch")
        _until(
            lambda: batch.describe_jobs(jobs=[parent])["jobs"][0]["status"] == "SUCCEEDED",
            "the array finished",
            seconds=120,
        )
        children = _children(batch, parent)
    # THEN every child succeeded; the two that ran when the services died were retried after
    # an attempt lost with its host
    assert {c["status"] for c in children} == {"SUCCEEDED"}
    retried = [c for c in children if len(c["attempts"]) == 2]
    assert len(retried) == 2
    assert {c["attempts"][0]["statusReason"] for c in retried} == {
        "Host EC2 (instance i-0local) terminated."
    }


def test_a_deleted_log_group_does_not_stop_the_services(tmp_path: Path) -> None:
    # GIVEN a 300-child array whose every child fails (so each ships its log at once)
    state = tmp_path / "state"
    with serving(tmp_path, state) as (server, ready):
        batch, logs = _client(ready, "batch"), _client(ready, "logs")
        _queue(batch)
        _definition(batch, "fails", [sys.executable, "-c", "print('no'); raise SystemExit(3)"])
        _definition(batch, "works", [sys.executable, "-c", "print('yes')"])
        parent = batch.submit_job(
            jobName="f", jobQueue="q", jobDefinition="fails", arrayProperties={"size": 300}
        )["jobId"]
        # WHEN a client deletes the job log group over and over while it runs
        stop = threading.Event()

        def delete_the_log_group() -> None:
            while not stop.is_set():
                with contextlib.suppress(logs.exceptions.ResourceNotFoundException):
                    logs.delete_log_group(logGroupName="/aws/batch/job")
                time.sleep(0.01)

        deleter = threading.Thread(target=delete_the_log_group, daemon=True)
        deleter.start()
        try:
            _until(
                lambda: batch.describe_jobs(jobs=[parent])["jobs"][0]["status"] == "FAILED",
                "the array ended",
                seconds=240,
            )
        finally:
            stop.set()
            deleter.join()
        # THEN the array ended, every child with its exit code, and a new job still runs
        children = _children(batch, parent)
        assert [c["container"]["exitCode"] for c in children] == [3] * 300
        job = batch.submit_job(jobName="w", jobQueue="q", jobDefinition="works")["jobId"]
        _until(
            lambda: batch.describe_jobs(jobs=[job])["jobs"][0]["status"] == "SUCCEEDED",
            "a new job ran",
        )
        assert server.poll() is None
    # AND every log is kept on disk
    assert len(list((state / "logs").rglob("*.log"))) >= 301


def test_a_thread_that_dies_ends_the_run_in_one_line_naming_the_log(tmp_path: Path) -> None:
    # GIVEN a saved run with a failed child, whose logs folder is then replaced by a file
    failed = run_cli(
        tmp_path, "--local", "--array-size", "2", "--run-id", "r", "--inject", "JobB:1=exit:2"
    )
    assert failed.returncode == 1, failed.stderr[-2000:]
    folder = tmp_path / "state" / "runs" / "r"
    for path in sorted((folder / "logs").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (folder / "logs").rmdir()
    (folder / "logs").write_text("not a folder\n")
    # WHEN it is resumed, THEN the scheduler's death ends the command at once: exit 255, one
    # line naming the error and the services' log, which holds the traceback
    started = time.monotonic()
    resumed = run_cli(tmp_path, "resume", "r", "--local", timeout=120)
    assert resumed.returncode == 255, resumed.stderr[-2000:]
    assert time.monotonic() - started < 60
    last = resumed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the local services stopped while this command used them")
    assert "scheduler thread failed: NotADirectoryError" in last
    assert f"their log: {folder / 'services.log'}" in last
    assert "Traceback (most recent call last)" in (folder / "services.log").read_text()
    assert "Traceback" not in resumed.stderr


def test_a_stopped_server_is_ended_and_said(tmp_path: Path) -> None:
    # GIVEN a local run under way
    command = start_cli(tmp_path, "--local", "--array-size", "200", "--run-id", "s")
    assert command.stderr is not None
    said = [command.stderr.readline()]
    while "services at" not in said[-1]:  # the command has its services' handshake
        said.append(command.stderr.readline())
        assert said[-1], said
    endpoint = tmp_path / "state" / "runs" / "s" / "endpoint.json"
    pid = json.loads(endpoint.read_text())["pid"]
    # WHEN its services are stopped by a signal (SIGSTOP), THEN the command ends them and
    # exits 255 saying so, within seconds of the limit, and nothing of them is left
    os.kill(pid, signal.SIGSTOP)
    try:
        _, err = command.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert command.returncode == 255, err[-2000:]
    assert "stopped by a signal (SIGSTOP)" in err.strip().splitlines()[-1]
    _until(lambda: not _alive(pid), "the stopped services are gone", 10)


def test_too_few_file_descriptors_is_one_line(tmp_path: Path) -> None:
    import resource

    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    served = subprocess.run(
        [sys.executable, "-m", "pipeline.local", "serve", f"--state-dir={tmp_path / 'state'}"],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=few_files,
    )
    assert served.returncode == 255, served.stderr
    assert served.stderr == (
        "error: the open-file limit is 64 (ulimit -n), and the local services need 256 or "
        "more: raise it with `ulimit -n 1024` and start again\n"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)


def _state(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/status").read_text()
    return ""
