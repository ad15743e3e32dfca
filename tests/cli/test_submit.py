"""The submitter against the engine's Batch API: requests, chaining, watching, faults, CLI."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError

from helpers.batch import STACK, EngineBatch, cli_in_process, engine_batch, error_answer
from pipeline.cli.commands import main
from pipeline.document import PipelineDocument
from pipeline.runs.chain import submit_pipeline
from pipeline.runs.requests import run_config
from pipeline.runs.watch import watch
from pipeline.spec import RUN_TAG, SUBMISSION_TAG


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


def _targets(aws: EngineBatch) -> PipelineDocument:
    return PipelineDocument(aws.queue_arn, aws.definition_arns)


def _describe(aws: EngineBatch, job_id: str) -> dict[str, Any]:
    (job,) = aws.batch.describe_jobs(jobs=[job_id])["jobs"]
    return job


# --- the five requests -----------------------------------------------------------------------


def test_submits_five_jobs_chained_as_the_workflow_says(aws: EngineBatch) -> None:
    # GIVEN the requests as sent
    sent: list[dict[str, Any]] = []
    aws.batch.meta.events.register(
        "before-parameter-build.batch.SubmitJob", lambda params, **_: sent.append(dict(params))
    )
    config = run_config(
        array_size=100, source_bucket="s3://out-bucket", recipient="ops@example.com"
    )
    # WHEN the run is submitted
    run = submit_pipeline(aws.batch, _targets(aws), config)
    ids = run.job_ids
    # THEN each job has its definition, size, dependencies, parameters and tags
    jobs = {key: _describe(aws, job_id) for key, job_id in ids.items()}
    for key, job in jobs.items():
        assert job["jobDefinition"] == aws.definition_arns[key]
        assert job["jobName"] == key
        assert job["tags"][RUN_TAG] == config.run_id
        assert len(job["tags"][SUBMISSION_TAG]) == 36  # one per request
    assert "arrayProperties" not in sent[0]
    assert [r.get("arrayProperties", {}).get("size") for r in sent] == [None, 100, 100, 10, None]
    assert jobs["JobB"]["dependsOn"] == [{"jobId": ids["JobA"]}]
    assert jobs["JobC"]["dependsOn"] == [{"jobId": ids["JobB"], "type": "N_TO_N"}]
    assert jobs["JobD"]["dependsOn"] == [{"jobId": ids["JobC"]}, {"type": "SEQUENTIAL"}]
    assert jobs["JobE"]["dependsOn"] == [{"jobId": ids["JobD"]}]
    assert jobs["JobE"]["parameters"] == {
        "SourceBucket": "s3://out-bucket",
        "Recipient": "ops@example.com",
    }
    assert sent[1]["containerOverrides"]["resourceRequirements"] == [
        {"type": "VCPU", "value": "32"},
        {"type": "MEMORY", "value": "4096"},
    ]
    assert sent[2]["containerOverrides"]["resourceRequirements"][1] == {
        "type": "MEMORY",
        "value": "32768",
    }
    assert all("vcpus" not in r["containerOverrides"] for r in sent)
    environment = {e["name"]: e["value"] for e in sent[3]["containerOverrides"]["environment"]}
    assert environment == {"PIPELINE_RUN_ID": config.run_id, "PIPELINE_ARRAY_SIZE": "100"}
    assert all(r["propagateTags"] is True for r in sent)


@pytest.mark.parametrize("size", [10, pytest.param(10_000, marks=pytest.mark.slow)])
def test_watch_costs_one_describe_call_per_poll_whatever_the_array_size(
    aws: EngineBatch, size: int
) -> None:
    run = submit_pipeline(aws.batch, _targets(aws), run_config(array_size=size))
    aws.count_calls()
    polls: list[int] = []
    result = watch(aws.batch, run, interval=0, on_poll=lambda p: polls.append(1))
    assert result.succeeded
    assert aws.calls == {"DescribeJobs": len(polls)}
    assert [p.array_size for p in result.progress] == [None, size, size, 10, None]
    assert result.progress[1].children["SUCCEEDED"] == size


# --- faults ---------------------------------------------------------------------------------


def _reject(job_name: str) -> Any:
    """A before-send handler: SubmitJob for ``job_name`` gets a non-retryable 400."""

    def handler(request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        if not event_name.endswith("SubmitJob") or json.loads(request.body)["jobName"] != job_name:
            return None
        return error_answer(request.url, 400, "ClientException")

    return handler


@pytest.mark.parametrize("failing", ["JobA", "JobB", "JobC", "JobD", "JobE"])
def test_failed_submit_leaves_no_job_of_the_run_behind(aws: EngineBatch, failing: str) -> None:
    # GIVEN jobs that stay queued (JobA starts running) and a SubmitJob that fails for good
    aws.hold_new_jobs()
    aws.intercept(_reject(failing))
    aws.batch.meta.events.register(
        "after-call.batch.SubmitJob",
        lambda parsed, **_: aws.start(parsed["jobId"]) if parsed.get("jobName") == "JobA" else None,
    )
    aws.count_calls()
    # WHEN the CLI submits the run
    code, _out, err = cli_in_process(aws, "--stack", STACK, "--array-size", "20")
    # THEN it exits non-zero, says which jobs it stopped, and nothing of the run is left active
    assert code == 254
    assert f"SubmitJob for {failing} failed: ClientException: injected" in err
    assert aws.non_terminal() == []
    expected_stops = ["JobA", "JobB", "JobC", "JobD", "JobE"].index(failing)
    assert aws.calls.get("CancelJob", 0) + aws.calls.get("TerminateJob", 0) == expected_stops
    if failing != "JobA":
        assert "JobA terminated" in err  # it was running: CancelJob would not stop it
        assert aws.calls["TerminateJob"] == 1
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert error_lines == [err.strip().splitlines()[-1]]  # one error line, and last


@pytest.mark.slow  # a few seconds: in the full suite, not the fast loop
def test_throttled_submits_are_retried_and_succeed(aws: EngineBatch) -> None:
    # GIVEN every SubmitJob's first attempt is throttled
    attempts: dict[str, int] = {}

    def throttle(request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        if not event_name.endswith("SubmitJob"):
            return None
        name = json.loads(request.body)["jobName"]
        attempts[name] = attempts.get(name, 0) + 1
        if attempts[name] > 1:
            return None
        return error_answer(request.url, 429, "TooManyRequestsException", "Too Many Requests")

    aws.intercept(throttle)
    # WHEN the run is submitted
    run = submit_pipeline(aws.batch, _targets(aws), run_config(array_size=5))
    # THEN each job was sent twice and exists once
    assert attempts == {"JobA": 2, "JobB": 2, "JobC": 2, "JobD": 2, "JobE": 2}
    assert sorted(j.job_name for j in aws.parents()) == ["JobA", "JobB", "JobC", "JobD", "JobE"]
    assert len(run.jobs) == 5


def test_lost_response_gives_exactly_one_job(aws: EngineBatch) -> None:
    # GIVEN the first SubmitJob for JobB reaches the service but its response is lost
    lost: list[str] = []
    params: dict[str, Any] = {}
    aws.batch.meta.events.register(
        "before-parameter-build.batch.SubmitJob", lambda **kwargs: params.update(kwargs["params"])
    )

    def lose_response(request: Any, event_name: str, **_: Any) -> None:
        if event_name.endswith("SubmitJob") and params["jobName"] == "JobB" and not lost:
            lost.append("sent")
            accepted = aws.batch.submit_job(**params)  # the service accepts it ...
            lost[0] = accepted["jobId"]
            raise ReadTimeoutError(endpoint_url=request.url)  # ... and the answer never arrives

    aws.intercept(lose_response)
    # AND a JobB of an earlier attempt of the same run (a resumed run has one)
    config = run_config(array_size=5)
    earlier = submit_pipeline(aws.batch, _targets(aws), config).job_ids["JobB"]
    lost.clear()
    # WHEN the run is submitted (botocore retries the read timeout)
    run = submit_pipeline(aws.batch, _targets(aws), config)
    # THEN the retry was answered with the accepted job instead of creating a second one
    assert [j.job_name for j in aws.parents()].count("JobB") == 2  # the earlier one and this
    assert run.job_ids["JobB"] == lost[0]
    assert run.job_ids["JobB"] != earlier
    assert _describe(aws, run.job_ids["JobC"])["dependsOn"][0]["jobId"] == lost[0]


def test_job_failure_exits_non_zero_naming_job_child_reason_and_log(aws: EngineBatch) -> None:
    # GIVEN JobC's child 7 fails once submitted while its other children still run, so JobD
    # and JobE still wait (PENDING: JobC has not ended)
    ids: dict[str, str] = {}

    def fail_c(parsed: dict[str, Any], **_: Any) -> None:
        ids[parsed["jobName"]] = parsed["jobId"]
        if parsed["jobName"] == "JobC":
            aws.succeed(ids["JobA"])
            aws.succeed(ids["JobB"])
            aws.start(ids["JobC"])
            aws.fail_child(ids["JobC"], 7, "Essential container in task exited", exit_code=3)

    aws.hold_new_jobs()
    aws.batch.meta.events.register("after-call.batch.SubmitJob", fail_c)
    # WHEN the run is submitted and watched
    code, _out, err = cli_in_process(
        aws, "--stack", STACK, "--array-size", "12", "--watch", "--poll-interval", "0.01"
    )
    # THEN the exit code is 1 and the last line names the job, the child, the reason, the log
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: run ")
    assert "JobC[7] failed" in last
    assert "exit code 3" in last
    assert "reason: Essential container in task exited" in last
    run_id = last.split()[2]
    assert f"its log: `python -m pipeline.submit logs {run_id} JobC:7 --stack {STACK}`" in last
    assert "log stream" not in last  # a stream name matches no file a user can open
    assert "python -m pipeline.submit cancel" in last  # what is still pending goes on


def test_watch_json_reports_the_failure(aws: EngineBatch) -> None:
    aws.inject("JobB:0=host-terminated")
    code, out, _ = cli_in_process(
        aws, "--stack", STACK, "--array-size", "3", "--watch", "--json", "--poll-interval", "0.01"
    )
    data = json.loads(out)
    assert code == 1
    assert data["status"] == "FAILED"
    assert data["failure"]["job"] == "JobB"
    assert data["failure"]["arrayIndex"] == 0
    assert data["failure"]["statusReason"].startswith("Host EC2")


def test_resume_resubmits_only_what_did_not_succeed(aws: EngineBatch) -> None:
    # GIVEN a run whose JobC failed (so JobD and JobE failed on the dependency)
    aws.inject("JobC:2=out-of-memory")
    code, out, _ = cli_in_process(
        aws, "--stack", STACK, "--array-size", "4", "--json", "--recipient", "ops@example.com"
    )
    first = json.loads(out)
    ids = {j["job"]: j["jobId"] for j in first["jobs"]}
    aws.count_calls()
    # WHEN the run is resumed
    code, out, err = cli_in_process(aws, "resume", first["runId"], "--stack", STACK, "--json")
    # THEN only JobC, JobD and JobE are submitted again, JobC after the original JobB
    assert code == 0, err
    resumed = {j["job"]: j["jobId"] for j in json.loads(out)["jobs"]}
    assert aws.calls["SubmitJob"] == 3
    assert resumed["JobA"] == ids["JobA"]
    assert resumed["JobB"] == ids["JobB"]
    assert resumed["JobC"] != ids["JobC"]
    new_c = _describe(aws, resumed["JobC"])
    assert new_c["dependsOn"] == [{"jobId": ids["JobB"], "type": "N_TO_N"}]
    assert new_c["arrayProperties"]["size"] == 4
    assert _describe(aws, resumed["JobE"])["parameters"]["Recipient"] == "ops@example.com"
    # AND status now reports the resumed jobs
    code, out, _ = cli_in_process(aws, "status", first["runId"], "--stack", STACK, "--json")
    assert [p["jobId"] for p in json.loads(out)["progress"]] == list(resumed.values())


def test_resume_of_an_active_run_is_refused(aws: EngineBatch) -> None:
    aws.hold_new_jobs()
    _, out, _ = cli_in_process(aws, "--stack", STACK, "--array-size", "4", "--json")
    run_id = json.loads(out)["runId"]
    code, _, err = cli_in_process(aws, "resume", run_id, "--stack", STACK)
    assert code == 252
    assert err.startswith("error: the run is still active (JobA RUNNABLE")


def test_cancel_stops_every_active_job_of_the_run(aws: EngineBatch) -> None:
    aws.hold_new_jobs()
    _, out, _ = cli_in_process(aws, "--stack", STACK, "--array-size", "4", "--json")
    run_id = json.loads(out)["runId"]
    code, out, _ = cli_in_process(aws, "cancel", run_id, "--stack", STACK, "--json")
    assert code == 0
    assert json.loads(out)["actions"] == {
        k: "cancelled" for k in ("JobA", "JobB", "JobC", "JobD", "JobE")
    }
    assert aws.non_terminal() == []


def test_status_of_an_unknown_run_says_so(aws: EngineBatch) -> None:
    code, _, err = cli_in_process(aws, "status", "20260101T000000-abcdef", "--stack", STACK)
    assert code == 252
    assert err.startswith("error: no jobs of run '20260101T000000-abcdef' in queue")


def test_status_without_a_run_id_lists_the_runs_newest_first(aws: EngineBatch) -> None:
    # GIVEN two runs submitted from the command line
    for run_id in ("20260101T000000-aaaaaa", "20260101T000100-bbbbbb"):
        code, _, err = cli_in_process(
            aws, "--stack", STACK, "--array-size", "3", "--run-id", run_id
        )
        assert code == 0, err
    # WHEN status is asked without a run id
    code, out, _ = cli_in_process(aws, "status", "--stack", STACK, "--json")
    # THEN both are listed, newest first, with who started them
    runs = json.loads(out)["runs"]
    assert code == 0
    assert [r["runId"] for r in runs] == ["20260101T000100-bbbbbb", "20260101T000000-aaaaaa"]
    assert {r["startedBy"] for r in runs} == {"command line"}
    assert {r["status"] for r in runs} == {"SUCCEEDED"}
    code, text, _ = cli_in_process(aws, "status", "--stack", STACK, "--limit", "1")
    assert text.splitlines()[0].split() == [
        "RUN",
        "ID",
        "STATUS",
        "SUBMITTED",
        "(UTC)",
        "STARTED",
        "BY",
        "INPUT",
    ]
    assert len(text.splitlines()) == 2


# --- bad inputs: one line, no traceback, AWS conventions for exit codes ---------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--array-size", "0"], "error: --array-size must be from 2 to 10,000; got 0"),
        (["--array-size", "1"], "error: --array-size must be from 2 to 10,000; got 1 (use a"),
        (["--array-size", "10001"], "error: --array-size must be from 2 to 10,000; got 10,001"),
        (["--array-size", "lots"], "error: argument --array-size: 'lots' is not a whole number"),
        (["--recipient", "ops@"], "error: --recipient 'ops@' is not an email address"),
        (["--source-bucket", "my-bucket"], "error: --source-bucket: SourceBucket must be an s3://"),
        (["--source-bucket", "https://x.s3.amazonaws.com"], "error: --source-bucket: SourceBucket"),
        (["--run-id", "bad id!"], "error: --run-id 'bad id!' must be 1-63 letters"),
        (["--job-definition-prefix", "a b"], "error: name_prefix 'a b' must be 1-40"),
        (["--no-such-flag"], "error: unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_input_is_one_line_exit_252_and_no_aws_call(argv: list[str], message: str) -> None:
    code, _out, err = cli_in_process(None, *argv)  # the connector asserts if AWS would be reached
    assert code == 252
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_unknown_stack(aws: EngineBatch) -> None:
    code, _, err = cli_in_process(aws, "--stack", "NoSuchStack")
    assert code == 254
    assert err.strip() == (
        "error: stack 'NoSuchStack' does not exist in us-east-1; deploy it with `npx cdk "
        "deploy`, or pass the --region/--profile where it lives"
    )


def test_stack_without_the_pipeline_outputs(aws: EngineBatch) -> None:
    from helpers.batch import stack_template

    aws.cloudformation.create_stack(
        StackName="Partial",
        TemplateBody=stack_template(aws.queue_arn, aws.definition_arns, drop="PipelineDocument"),
    )
    code, _, err = cli_in_process(aws, "--stack", "Partial")
    assert code == 254
    assert err.startswith("error: stack 'Partial' has no PipelineDocument output")
    assert len(err.strip().splitlines()) == 1


def test_no_credentials_says_how_to_configure_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.backends.aws import connect

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    out, err = io.StringIO(), io.StringIO()
    code = main(["--stack", STACK], connector=connect, stdout=out, stderr=err)
    assert code == 253
    assert err.getvalue().startswith("error: no AWS credentials found; run `aws configure`")
    assert "--local" in err.getvalue()


def test_unknown_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.backends.aws import connect

    out, err = io.StringIO(), io.StringIO()
    code = main(["--stack", STACK, "--profile", "nope"], connector=connect, stdout=out, stderr=err)
    assert code == 253
    assert err.getvalue().startswith("error: AWS profile 'nope' is not configured")


# --- dry run ---------------------------------------------------------------------------------

# The workflow's five SubmitJob requests (AWS Batch User Guide, "Example Array Job Workflow"),
# with their JSON syntax fixed and the deprecated containerOverrides.vcpus/memory moved to
# resourceRequirements.
WORKFLOW_REQUESTS: list[dict[str, Any]] = [
    {"jobName": "JobA", "jobQueue": "ProdQueue", "jobDefinition": "JobA-list-and-validate:1"},
    {
        "jobName": "JobB",
        "jobQueue": "ProdQueue",
        "jobDefinition": "JobB-CPU-Intensive-Processing:1",
        "containerOverrides": {
            "resourceRequirements": [
                {"type": "VCPU", "value": "32"},
                {"type": "MEMORY", "value": "4096"},
            ]
        },
        "arrayProperties": {"size": 10000},
        "dependsOn": [{"jobId": "JobA_job_ID"}],
    },
    {
        "jobName": "JobC",
        "jobQueue": "ProdQueue",
        "jobDefinition": "JobC-Memory-Intensive-Processing:1",
        "containerOverrides": {
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "32768"},
            ]
        },
        "arrayProperties": {"size": 10000},
        "dependsOn": [{"jobId": "JobB_job_ID", "type": "N_TO_N"}],
    },
    {
        "jobName": "JobD",
        "jobQueue": "ProdQueue",
        "jobDefinition": "JobD-Sequential-Validation:1",
        "containerOverrides": {
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "32768"},
            ]
        },
        "arrayProperties": {"size": 10},
        "dependsOn": [{"jobId": "JobC_job_ID"}, {"type": "SEQUENTIAL"}],
    },
    {
        "jobName": "JobE",
        "jobQueue": "ProdQueue",
        "jobDefinition": "JobE-Cleanup-and-Notification:1",
        "parameters": {
            "SourceBucket": "s3://JobD-Output-Bucket",
            "Recipient": "pipeline-notifications@mycompany.com",
        },
        "dependsOn": [{"jobId": "JobD_job_ID"}],
    },
]


def test_dry_run_json_matches_the_workflow_field_by_field() -> None:
    # The workflow's bucket name has capitals, which S3 no longer allows; the test passes a
    # valid one and compares the rest.
    code, out, err = cli_in_process(
        None,
        "--dry-run",
        "--json",
        "--source-bucket",
        "s3://jobd-output-bucket",
        "--recipient",
        "pipeline-notifications@mycompany.com",
    )
    assert code == 0, err
    ours = json.loads(out)
    assert len(ours) == len(WORKFLOW_REQUESTS)
    for workflow, request in zip(WORKFLOW_REQUESTS, ours, strict=True):
        for field_name, expected in workflow.items():
            actual = request[field_name]
            if field_name == "jobDefinition":  # we submit the latest active revision
                expected = expected.rsplit(":", 1)[0]
            if field_name == "containerOverrides":
                actual = {"resourceRequirements": actual["resourceRequirements"]}
            if field_name == "parameters":
                expected = {**expected, "SourceBucket": "s3://jobd-output-bucket"}
            assert actual == expected, (workflow["jobName"], field_name)
        # What we add: the run's environment and tag, so children can be found again
        assert set(request) - set(workflow) <= {
            "containerOverrides",
            "tags",
            "propagateTags",
        }


def test_dry_run_without_json_prints_the_requests_and_calls_nothing() -> None:
    code, out, _ = cli_in_process(None, "--dry-run", "--array-size", "8")
    assert code == 0
    assert out.count('"jobName"') == 5
    assert '"size": 8' in out


@pytest.mark.parametrize(
    ("failed", "expected_b"),
    [
        ([3], {"size": None, "map": "3"}),  # one child: a standard job
        ([2, 5], {"size": 2, "map": "2,5"}),
    ],
)
def test_resume_failed_only_reruns_just_the_failed_children(
    aws: EngineBatch, failed: list[int], expected_b: dict[str, Any]
) -> None:
    # GIVEN a run whose JobB children `failed` failed, so did JobC's (N_TO_N) and JobD, JobE
    aws.inject(*(f"JobB:{index}=exit:2" for index in failed))
    _, out, _ = cli_in_process(aws, "--stack", STACK, "--array-size", "8", "--json")
    first = json.loads(out)
    ids = {j["job"]: j["jobId"] for j in first["jobs"]}
    sent: list[dict[str, Any]] = []
    aws.batch.meta.events.register(
        "before-parameter-build.batch.SubmitJob", lambda params, **_: sent.append(dict(params))
    )
    # WHEN the run is resumed for its failed children only
    code, out, err = cli_in_process(
        aws, "resume", first["runId"], "--stack", STACK, "--failed-only", "--json"
    )
    # THEN JobB and JobC re-run exactly those children, mapped to their original indices
    assert code == 0, err
    assert [r["jobName"] for r in sent] == ["JobB", "JobC", "JobD", "JobE"]
    b_request, c_request, d_request, _ = sent
    for request in (b_request, c_request):
        env = {e["name"]: e["value"] for e in request["containerOverrides"]["environment"]}
        assert env["PIPELINE_INDEX_MAP"] == expected_b["map"]
        assert request.get("arrayProperties", {}).get("size") == expected_b["size"]
    assert b_request["dependsOn"] == [{"jobId": ids["JobA"]}]
    resumed = {j["job"]: j["jobId"] for j in json.loads(out)["jobs"]}
    expected_c_dependency = {"jobId": resumed["JobB"]}
    if expected_b["size"]:
        expected_c_dependency["type"] = "N_TO_N"  # re-run child k waits for re-run child k
    assert c_request["dependsOn"] == [expected_c_dependency]
    assert d_request["arrayProperties"] == {"size": 10}
    assert d_request["dependsOn"] == [{"jobId": resumed["JobC"]}, {"type": "SEQUENTIAL"}]
    assert f"JobB for children {', '.join(map(str, failed))} only" in err


def test_queue_discovery_refuses_a_revision_this_library_did_not_register(
    aws: EngineBatch,
) -> None:
    # GIVEN a newer JobB revision someone registered by hand: running as root, no roles
    aws.reader.register_job_definition(
        jobDefinitionName="JobB-CPU-Intensive-Processing",
        type="container",
        containerProperties={"image": "someone/else", "vcpus": 32, "memory": 4096},
    )
    aws.count_calls()
    # WHEN a run is started by queue, without the stack
    code, _, err = cli_in_process(aws, "--queue", "ProdQueue", "--array-size", "2")
    # THEN it is refused in one line naming the revision and pointing to --stack, and
    # nothing was submitted
    assert code == 254
    assert err.startswith(
        "error: job definition arn:aws:batch:us-east-1:123456789012:job-definition/"
        "JobB-CPU-Intensive-Processing:2 is not what array-job-pipeline registers: "
    )
    assert "pass --stack with the PipelineStack's name" in err
    assert len(err.strip().splitlines()) == 1
    assert "SubmitJob" not in aws.calls


def test_a_clock_set_back_before_a_resume_changes_nothing(aws: EngineBatch) -> None:
    # GIVEN a failed run, and this machine's clock then set back a day
    aws.inject("JobB:1=exit:2")
    code, out, _ = cli_in_process(aws, "--stack", STACK, "--array-size", "4", "--watch", "--json")
    assert code == 1
    run_id = json.loads(out)["runId"]
    aws.clock.advance(-86400)
    # WHEN it is resumed and succeeds
    code, _, err = cli_in_process(
        aws, "resume", run_id, "--stack", STACK, "--failed-only", "--watch"
    )
    assert code == 0, err
    # THEN the run is SUCCEEDED: its jobs are ordered as they were submitted, not by the clock
    code, out, err = cli_in_process(aws, "status", run_id, "--stack", STACK, "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "SUCCEEDED"
    code, out, err = cli_in_process(aws, "resume", run_id, "--stack", STACK)
    assert code == 252, err
    assert err == "error: every job of the run succeeded; there is nothing to resume\n"
