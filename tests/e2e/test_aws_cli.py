"""The local services as an AWS endpoint, driven by the AWS CLI from outside this library's code:
the User Guide's five SubmitJob requests chained by a shell script, and Batch's rules (retries
with evaluate-on-exit, timeouts, a failed dependency, TerminateJob) seen through the CLI."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.cli import served

pytestmark = pytest.mark.slow

AWS = str(Path(sys.executable).with_name("aws"))
LOCAL_ARRAY_SIZE = 8
"""The local deployment's array size, which the guide's requests are sized to here (the
guide's 10,000 children take minutes on one machine; the stack's size is what to send)."""

# The AWS Batch User Guide's requests ("Example Array Job Workflow"), their JSON syntax fixed
# (two missing commas, one trailing comma), the deprecated containerOverrides.vcpus/memory
# kept as written; JobA_job_ID .. JobD_job_ID and the bucket are the user's to fill in.
GUIDE_REQUESTS = {
    "JobA": {
        "jobName": "JobA",
        "jobQueue": "ProdQueue",
        "jobDefinition": "JobA-list-and-validate:1",
    },
    "JobB": {
        "jobName": "JobB",
        "jobQueue": "ProdQueue",
        "jobDefinition": "JobB-CPU-Intensive-Processing:1",
        "containerOverrides": {"vcpus": 32, "memory": 4096},
        "arrayProperties": {"size": 10000},
        "dependsOn": [{"jobId": "JobA_job_ID"}],
    },
    "JobC": {
        "jobName": "JobC",
        "jobQueue": "ProdQueue",
        "jobDefinition": "JobC-Memory-Intensive-Processing:1",
        "containerOverrides": {"vcpus": 1, "memory": 32768},
        "arrayProperties": {"size": 10000},
        "dependsOn": [{"jobId": "JobB_job_ID", "type": "N_TO_N"}],
    },
    "JobD": {
        "jobName": "JobD",
        "jobQueue": "ProdQueue",
        "jobDefinition": "JobD-Sequential-Validation:1",
        "containerOverrides": {"vcpus": 1, "memory": 32768},
        "arrayProperties": {"size": 10},
        "dependsOn": [{"jobId": "JobC_job_ID"}, {"type": "SEQUENTIAL"}],
    },
    "JobE": {
        "jobName": "JobE",
        "jobQueue": "ProdQueue",
        "jobDefinition": "JobE-Cleanup-and-Notification:1",
        "parameters": {
            "SourceBucket": "s3://JobD-Output-Bucket",
            "Recipient": "pipeline-notifications@mycompany.com",
        },
        "dependsOn": [{"jobId": "JobD_job_ID"}],
    },
}

CHAIN = """\
set -euo pipefail
submit() { aws batch submit-job --cli-input-json "file://$1" --query jobId --output text; }
fill() { sed -e "s/JobA_job_ID/${A:-}/" -e "s/JobB_job_ID/${B:-}/" -e "s/JobC_job_ID/${C:-}/" \\
             -e "s/JobD_job_ID/${D:-}/" -e "s#s3://JobD-Output-Bucket#$OUTPUT#" "$1" > "$2"; }
A=$(submit JobA.json)
fill JobB.json b.json; B=$(submit b.json)
fill JobC.json c.json; C=$(submit c.json)
fill JobD.json d.json; D=$(submit d.json)
fill JobE.json e.json; E=$(submit e.json)
echo "$A $B $C $D $E"
"""


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``python -m pipeline.local serve --with-pipeline`` in a process of its own; the
    environment that points the AWS CLI at it."""
    folder = tmp_path_factory.mktemp("served")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = str(folder / "none")
    with served(folder, env) as ready:
        env.update(
            AWS_ENDPOINT_URL=ready["endpoint"],
            AWS_DEFAULT_REGION=ready["region"],
            PATH=os.pathsep.join([str(Path(AWS).parent), env.get("PATH", "")]),
            **ready["credentials"],
        )
        yield env


def aws(env: dict[str, str], *args: str, cwd: Path | None = None) -> Any:
    done = subprocess.run(
        [AWS, *args, "--output", "json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else None


def wait_until_ended(env: dict[str, str], job_id: str, timeout: float = 240) -> dict[str, Any]:
    """The job as the CLI describes it once it has ended."""
    return wait_until(env, job_id, ("SUCCEEDED", "FAILED"), timeout)


def wait_until(
    env: dict[str, str], job_id: str, statuses: tuple[str, ...], timeout: float = 240
) -> dict[str, Any]:
    """The job as the CLI describes it once its status is one of ``statuses``. The waiting
    itself is done with boto3 in this process: an AWS CLI process a poll would take the CPU
    the jobs need."""
    import time

    import boto3

    batch = boto3.client(
        "batch",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (job,) = batch.describe_jobs(jobs=[job_id])["jobs"]
        if job["status"] in statuses:
            (described,) = aws(env, "batch", "describe-jobs", "--jobs", job_id)["jobs"]
            return dict(described)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} was not {' or '.join(statuses)} within {timeout} s")


def children(env: dict[str, str], parent: str, size: int) -> list[dict[str, Any]]:
    ids = [f"{parent}:{index}" for index in range(size)]
    found = aws(env, "batch", "describe-jobs", "--jobs", *ids)["jobs"]
    return sorted(found, key=lambda j: j["arrayProperties"]["index"])


def submit_the_guides_chain(env: dict[str, str], folder: Path) -> list[str]:
    folder.mkdir()
    for key, request in GUIDE_REQUESTS.items():
        if "arrayProperties" in request and request["arrayProperties"]["size"] == 10000:
            request = {**request, "arrayProperties": {"size": LOCAL_ARRAY_SIZE}}
        (folder / f"{key}.json").write_text(json.dumps(request))
    output = aws(env, "s3api", "list-buckets")["Buckets"]
    bucket = next(b["Name"] for b in output if "output-bucket" in b["Name"])
    done = subprocess.run(
        ["bash", "-c", CHAIN],
        env={**env, "OUTPUT": f"s3://{bucket}"},
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.fixture(scope="module")
def timing_out(endpoint: dict[str, str]) -> str:
    """A job whose only attempt runs into its 60 s timeout (Batch's minimum), submitted first
    so that the module's other cases run while it waits; its definition also serves
    TerminateJob."""
    _definition(
        endpoint,
        "sleeps",
        ["sleep", "120"],
        retryStrategy={"attempts": 2},
        timeout={"attemptDurationSeconds": 60},
    )
    return _submit(endpoint, "slow", "sleeps", "--timeout", "attemptDurationSeconds=60")


def test_the_guides_five_requests_run_in_the_order_batch_promises(
    endpoint: dict[str, str], timing_out: str, tmp_path: Path
) -> None:
    # GIVEN two runs of the guide's requests submitted at once by a shell script, each job ID
    # fed to the next request's dependsOn; neither carries this library's run environment
    first = submit_the_guides_chain(endpoint, tmp_path / "first")
    second = submit_the_guides_chain(endpoint, tmp_path / "second")
    for a, b, c, d, e in (first, second):
        # THEN each completes: JobE last, every array parent with its statusSummary
        job_e = wait_until_ended(endpoint, e)
        assert job_e["status"] == "SUCCEEDED", job_e.get("statusReason")
        parents = {
            j["jobName"]: j
            for j in aws(endpoint, "batch", "describe-jobs", "--jobs", b, c, d)["jobs"]
        }
        for name, size in (("JobB", LOCAL_ARRAY_SIZE), ("JobC", LOCAL_ARRAY_SIZE), ("JobD", 10)):
            assert parents[name]["status"] == "SUCCEEDED"
            assert parents[name]["arrayProperties"]["statusSummary"]["SUCCEEDED"] == size
        # AND N_TO_N: JobC[i] started after JobB[i] stopped, for every i
        for cpu, memory in zip(
            children(endpoint, b, LOCAL_ARRAY_SIZE),
            children(endpoint, c, LOCAL_ARRAY_SIZE),
            strict=True,
        ):
            assert memory["startedAt"] >= cpu["stoppedAt"]
        # AND SEQUENTIAL: JobD[k] after JobD[k-1]; JobE after JobD
        checks = children(endpoint, d, 10)
        for earlier, later in itertools.pairwise(checks):
            assert later["startedAt"] >= earlier["stoppedAt"]
        assert job_e["startedAt"] >= parents["JobD"]["stoppedAt"]
        # AND the run is named after its JobA: its summary accounts for every input
        summary = _summary(endpoint, tmp_path, a)
        assert summary["run_id"] == a
        assert summary["objects"] == {"listed": 300, "processed": 297, "rejected": 3}
        assert [c["passed"] for c in summary["checks"]] == [True] * 10
    # AND the two runs did not mix
    assert first[0] != second[0]


def _summary(env: dict[str, str], folder: Path, run_id: str) -> dict[str, Any]:
    buckets = aws(env, "s3api", "list-buckets")["Buckets"]
    bucket = next(b["Name"] for b in buckets if "output-bucket" in b["Name"])
    target = folder / f"{run_id}.json"
    key = f"runs/{run_id}/summary.json"
    aws(env, "s3api", "get-object", "--bucket", bucket, "--key", key, str(target))
    return dict(json.loads(target.read_text()))


def _definition(env: dict[str, str], name: str, command: list[str], **extra: Any) -> None:
    request = {
        "jobDefinitionName": name,
        "type": "container",
        "containerProperties": {
            "image": "busybox",
            "command": command,
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "128"},
            ],
        },
        **extra,
    }
    aws(env, "batch", "register-job-definition", "--cli-input-json", json.dumps(request))


def _submit(env: dict[str, str], name: str, definition: str, *args: str) -> str:
    submitted = aws(
        env,
        "batch",
        "submit-job",
        "--job-name",
        name,
        "--job-queue",
        "ProdQueue",
        "--job-definition",
        definition,
        *args,
    )
    return str(submitted["jobId"])


def test_retry_strategy_timeout_dependency_and_terminate_through_the_cli(
    endpoint: dict[str, str], timing_out: str
) -> None:
    # A job exiting 3 under "RETRY on exit code 3, else EXIT", with three attempts: three
    # attempts, each with its exit code, then FAILED
    _definition(
        endpoint,
        "exits-3",
        ["sh", "-c", "exit 3"],
        retryStrategy={
            "attempts": 3,
            "evaluateOnExit": [
                {"onExitCode": "3", "action": "RETRY"},
                {"onExitCode": "*", "action": "EXIT"},
            ],
        },
    )
    retried = wait_until_ended(endpoint, _submit(endpoint, "retried", "exits-3"))
    assert retried["status"] == "FAILED"
    assert [a["container"]["exitCode"] for a in retried["attempts"]] == [3, 3, 3]
    # "EXIT on exit code 3" ends it at the first attempt
    _definition(
        endpoint,
        "exits-3-no-retry",
        ["sh", "-c", "exit 3"],
        retryStrategy={"attempts": 3, "evaluateOnExit": [{"onExitCode": "3", "action": "EXIT"}]},
    )
    ended = wait_until_ended(endpoint, _submit(endpoint, "not-retried", "exits-3-no-retry"))
    assert len(ended["attempts"]) == 1
    # A job depending on a failed one fails without running
    dependent = _submit(
        endpoint, "dependent", "exits-3", "--depends-on", f"jobId={retried['jobId']}"
    )
    never_ran = wait_until_ended(endpoint, dependent)
    assert never_ran["status"] == "FAILED"
    assert never_ran["statusReason"] == "Dependent Job failed"
    assert never_ran.get("attempts", []) == []
    # TerminateJob stops a running job, with the reason given
    running = _submit(endpoint, "terminated", "sleeps")
    wait_until(endpoint, running, ("RUNNING",))
    aws(endpoint, "batch", "terminate-job", "--job-id", running, "--reason", "stopped by the test")
    terminated = wait_until_ended(endpoint, running)
    assert terminated["status"] == "FAILED"
    assert terminated["statusReason"] == "stopped by the test"
    # A timeout: the attempt is stopped and never retried, whatever the attempts left
    timed_out = wait_until_ended(endpoint, timing_out, timeout=150)
    assert timed_out["status"] == "FAILED"
    assert len(timed_out["attempts"]) == 1
    assert timed_out["attempts"][0]["statusReason"] == "Job attempt duration exceeded timeout"
