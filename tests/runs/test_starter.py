"""Runs that start themselves: trigger events, the starter's handler against moto (Batch and
SNS), and the run engine's start/skip/refuse decisions."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from helpers.batch import REGION, EngineBatch, engine_batch, step_environment
from pipeline import contract
from pipeline.contract import INPUT_PREFIX
from pipeline.document import PipelineDocument
from pipeline.runs import triggers
from pipeline.runs.engine import plan_resume_run, plan_run, submit
from pipeline.runs.progress import list_runs
from pipeline.runs.requests import RunInputs
from pipeline.spec import (
    DEFAULT_SPEC,
    PIPELINE_TAG,
    RESOURCES,
    RETRY_RULES,
    RUN_TAG,
    STARTED_BY_TAG,
)
from pipeline.starter import handler, start_from_event
from pipeline.trigger_events import StarterSettings, schedule_event, upload_event

BUCKET_A = "pipeline-input-bucket"
OUTPUT = "pipeline-output-bucket"
ARRAY_SIZE = 100


def _upload(key: str, event_id: str = "e-1") -> dict[str, Any]:
    return upload_event(BUCKET_A, key, event_id, "2026-11-26T02:00:00Z")


def _schedule(execution_id: str = "x-1") -> dict[str, Any]:
    return schedule_event("Stack/Nightly", execution_id, "2026-11-26T02:00:00Z")


# --- events ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "prefix"),
    [
        ("incoming/2026-11-26/_READY", "incoming/2026-11-26/"),
        ("_READY", ""),
        ("a/b/c/_READY", "a/b/c/"),
    ],
)
def test_a_ready_marker_stands_for_its_prefix(key: str, prefix: str) -> None:
    trigger = triggers.trigger_from_event(_upload(key), input_bucket=BUCKET_A)
    assert (trigger.kind, trigger.input_prefix) == ("upload", prefix)
    assert trigger.origin == f"s3://{BUCKET_A}/{key}"


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (_upload("incoming/data.csv"), "is not a ready marker"),
        (_upload("incoming/not_READY"), "is not a ready marker"),
        (upload_event("other-bucket", "_READY", "e", "2026-11-26T02:00:00Z"), "not in BucketA"),
        ({"source": "aws.s3", "detail-type": "Object Created", "detail": {}}, "malformed"),
        ({"source": "aws.batch"}, "not a trigger event"),
    ],
)
def test_other_events_are_refused_with_the_reason(event: dict[str, Any], message: str) -> None:
    with pytest.raises(triggers.TriggerError, match=message):
        triggers.trigger_from_event(event, input_bucket=BUCKET_A)


def test_an_event_delivered_twice_names_the_same_run() -> None:
    first = triggers.trigger_from_event(_upload("_READY", "e-1"), input_bucket=BUCKET_A)
    again = triggers.trigger_from_event(_upload("_READY", "e-1"), input_bucket=BUCKET_A)
    other = triggers.trigger_from_event(_upload("_READY", "e-2"), input_bucket=BUCKET_A)
    scheduled = triggers.trigger_from_event(_schedule(), input_bucket=BUCKET_A)
    assert first.run_id == again.run_id != other.run_id
    assert first.run_id.startswith("20261126T020000-")
    assert scheduled.kind == "schedule"
    assert scheduled.input_prefix is None


def test_starter_settings_round_trip_through_the_environment() -> None:
    settings = StarterSettings(
        queue="arn:queue",
        job_definitions={j.key: f"arn:{j.key}:1" for j in DEFAULT_SPEC},
        topic_arn="arn:topic",
        input_bucket=BUCKET_A,
        allow_overlap=True,
        max_vcpu_hours=12.5,
    )
    assert StarterSettings.from_env(settings.environment()) == settings


# --- the handler against the engine and moto's SNS -----------------------------------------


class Cloud:
    """The engine's Batch with job definitions as the stack registers them (array size, resource
    names and JobE's defaults in the definitions), and the topic, read through a queue."""

    def __init__(self, aws: EngineBatch) -> None:
        self.aws = aws
        self.sns = boto3.client("sns", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.topic = self.sns.create_topic(Name="pipeline-topic")["TopicArn"]
        self.inbox = self.sqs.create_queue(QueueName="inbox")["QueueUrl"]
        inbox_arn = self.sqs.get_queue_attributes(QueueUrl=self.inbox, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.sns.subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=inbox_arn)
        self.s3 = boto3.client("s3", region_name=REGION)
        self.s3.create_bucket(Bucket=BUCKET_A)
        resources = {r.env: f"pipeline-{r.key.replace('_', '-')}" for r in RESOURCES}
        self.definitions = {}
        for job in DEFAULT_SPEC:
            self.definitions[job.key] = aws.batch.register_job_definition(
                jobDefinitionName=job.definition_name,
                type="container",
                parameters={"SourceBucket": f"s3://{OUTPUT}", "Recipient": ""}
                if job.parameters
                else {},
                containerProperties={
                    "image": "job-image:latest",
                    "command": list(job.command),
                    "resourceRequirements": job.resource_requirements(),
                    "environment": [
                        {"name": contract.ARRAY_SIZE, "value": str(ARRAY_SIZE)},
                        *({"name": k, "value": v} for k, v in resources.items()),
                        *step_environment(job),
                    ],
                },
                timeout={"attemptDurationSeconds": job.timeout_seconds},
                retryStrategy={
                    "attempts": job.retry_attempts,
                    "evaluateOnExit": [rule.as_evaluate_on_exit() for rule in RETRY_RULES],
                },
            )["jobDefinitionArn"]

    def settings(self, **changes: Any) -> StarterSettings:
        return StarterSettings(
            queue=self.aws.queue_arn,
            job_definitions=self.definitions,
            topic_arn=self.topic,
            input_bucket=BUCKET_A,
            **changes,
        )

    def start(
        self, event: dict[str, Any], *, listing: bool = False, **changes: Any
    ) -> dict[str, Any]:
        """The handler's work on ``event``; with ``listing``, it lists BucketA (as the
        deployed function does) to size the run to its input."""
        return start_from_event(
            event,
            settings=self.settings(**changes),
            batch=self.aws.batch,
            sns=self.sns,
            s3=self.s3 if listing else None,
        )

    def messages(self) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(QueueUrl=self.inbox, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in response.get("Messages", [])]

    def describe(self, job_id: str) -> dict[str, Any]:
        (job,) = self.aws.batch.describe_jobs(jobs=[job_id])["jobs"]
        return dict(job)

    def statuses(self, run_id: str) -> dict[str, str]:
        ids = [j.job_id for j in self.aws.parents()]
        jobs = self.aws.batch.describe_jobs(jobs=ids)["jobs"]
        return {j["jobName"]: j["status"] for j in jobs if j["tags"].get(RUN_TAG) == run_id}

    def document(self) -> PipelineDocument:
        from pipeline.runs.discovery import document_from_job_definitions

        return document_from_job_definitions(
            self.aws.batch, queue=self.aws.queue_arn, arns=self.definitions
        )


@pytest.fixture
def cloud() -> Iterator[Cloud]:
    with engine_batch() as aws:
        yield Cloud(aws)


def test_an_upload_starts_one_chained_run_of_the_deployed_pipeline(cloud: Cloud) -> None:
    # GIVEN a marker under incoming/batch-7/
    sent: list[dict[str, Any]] = []
    cloud.aws.batch.meta.events.register(
        "before-parameter-build.batch.SubmitJob", lambda params, **_: sent.append(dict(params))
    )
    # WHEN EventBridge hands its event to the starter
    result = cloud.start(_upload("incoming/batch-7/_READY"))
    # THEN the five jobs are chained as the workflow says, with the deployed sizes and defaults
    assert result["action"] == "STARTED"
    ids = {j["job"]: j["jobId"] for j in result["jobs"]}
    assert [r["jobName"] for r in sent] == ["JobA", "JobB", "JobC", "JobD", "JobE"]
    by_key = {r["jobName"]: r for r in sent}
    assert by_key["JobB"]["arrayProperties"] == {"size": ARRAY_SIZE}
    assert by_key["JobB"]["dependsOn"] == [{"jobId": ids["JobA"]}]
    assert by_key["JobC"]["arrayProperties"] == {"size": ARRAY_SIZE}
    assert by_key["JobC"]["dependsOn"] == [{"jobId": ids["JobB"], "type": "N_TO_N"}]
    assert by_key["JobD"]["arrayProperties"] == {"size": 10}
    assert {"type": "SEQUENTIAL"} in by_key["JobD"]["dependsOn"]
    assert {"jobId": ids["JobC"]} in by_key["JobD"]["dependsOn"]
    assert by_key["JobE"]["dependsOn"] == [{"jobId": ids["JobD"]}]
    assert by_key["JobE"]["parameters"] == {"SourceBucket": f"s3://{OUTPUT}"}
    assert by_key["JobB"]["containerOverrides"]["resourceRequirements"] == [
        {"type": "VCPU", "value": "32"},
        {"type": "MEMORY", "value": "4096"},
    ]
    for request in sent:
        assert request["jobDefinition"] == cloud.definitions[request["jobName"]]
        environment = {e["name"]: e["value"] for e in request["containerOverrides"]["environment"]}
        assert environment[INPUT_PREFIX] == "incoming/batch-7/"
        assert environment[contract.RUN_ID] == result["runId"]
        assert request["tags"][STARTED_BY_TAG] == "upload"
        assert request["tags"][RUN_TAG] == result["runId"]
        assert request["tags"][PIPELINE_TAG] == "ProdQueue"
    # AND nothing was published: a started run speaks through JobE (or the failure rule)
    assert cloud.messages() == []


def test_a_triggered_run_is_sized_to_the_objects_under_its_marker(cloud: Cloud) -> None:
    # GIVEN 300 inputs under incoming/batch-8/ (and 50 elsewhere), then its marker
    for number in range(300):
        cloud.s3.put_object(Bucket=BUCKET_A, Key=f"incoming/batch-8/{number}.csv", Body=b"1")
    for number in range(50):
        cloud.s3.put_object(Bucket=BUCKET_A, Key=f"elsewhere/{number}.csv", Body=b"1")
    # WHEN the starter lists BucketA, as the deployed function does
    result = cloud.start(_upload("incoming/batch-8/_READY"), listing=True)
    # THEN JobB and JobC have 300 / 100 children, within the deployed 100, and it says why
    assert result["action"] == "STARTED"
    ids = {j["job"]: j["jobId"] for j in result["jobs"]}
    assert cloud.describe(ids["JobB"])["arrayProperties"]["size"] == 3
    assert cloud.describe(ids["JobC"])["arrayProperties"]["size"] == 3
    assert result["size"]["reason"] == (
        "array size 3: 300 objects, 100 per child on average (auto: a child per 100 objects, at "
        "most 100 deployed)"
    )


def test_a_trigger_whose_input_cannot_be_listed_is_refused_with_a_notification(
    cloud: Cloud,
) -> None:
    cloud.s3.delete_bucket(Bucket=BUCKET_A)
    result = cloud.start(_schedule(), listing=True)
    assert result["action"] == "REFUSED"
    assert cloud.aws.parents() == []
    (message,) = cloud.messages()
    assert message["Subject"] == "array-job pipeline: schedule run not started"
    assert (
        f"listing s3://{BUCKET_A}/ to size the run to its input failed (NoSuchBucket"
        in (message["Message"])
    )


def test_a_scheduled_run_lists_the_whole_bucket_and_status_finds_it(cloud: Cloud) -> None:
    result = cloud.start(_schedule())
    assert result["action"] == "STARTED"
    job_a = cloud.describe(result["jobs"][0]["jobId"])
    environment = {e["name"]: e["value"] for e in job_a["container"]["environment"]}
    assert INPUT_PREFIX not in environment
    (run,) = list_runs(cloud.aws.batch, cloud.aws.queue_arn, DEFAULT_SPEC)
    assert (run.run_id, run.started_by, run.status) == (result["runId"], "schedule", "SUCCEEDED")


def test_a_trigger_skips_and_notifies_while_a_run_is_active(cloud: Cloud) -> None:
    # GIVEN a run still going (its jobs held in RUNNABLE)
    cloud.aws.hold_new_jobs()
    first = cloud.start(_upload("a/_READY", "e-1"))
    assert first["action"] == "STARTED"
    submitted = len(cloud.aws.parents())
    # WHEN the next marker lands
    second = cloud.start(_upload("b/_READY", "e-2"))
    # THEN no job is submitted, and the topic says why, naming the active run
    assert second["action"] == "SKIPPED"
    assert len(cloud.aws.parents()) == submitted
    (message,) = cloud.messages()
    assert message["Subject"] == "array-job pipeline: upload run skipped"
    assert first["runId"] in message["Message"]
    assert "s3://" in message["Message"]
    # AND with allow_overlapping_runs the same trigger starts its run
    third = cloud.start(_upload("b/_READY", "e-3"), allow_overlap=True)
    assert third["action"] == "STARTED"


def test_a_trigger_over_the_cost_guard_is_refused_with_a_notification(cloud: Cloud) -> None:
    result = cloud.start(_schedule(), max_vcpu_hours=10.0)
    assert result["action"] == "REFUSED"
    assert cloud.aws.parents() == []
    (message,) = cloud.messages()
    assert message["Subject"] == "array-job pipeline: schedule run not started"
    assert (
        "above the triggers' limit of 10 (the construct's trigger_max_vcpu_hours)"
        in (message["Message"])
    )


def test_an_event_delivered_twice_starts_one_run(cloud: Cloud) -> None:
    cloud.aws.hold_new_jobs()
    assert cloud.start(_upload("a/_READY", "same"))["action"] == "STARTED"
    assert cloud.start(_upload("a/_READY", "same"))["action"] == "DUPLICATE"
    assert len(cloud.aws.parents()) == 5
    assert cloud.messages() == []


def test_of_two_racing_triggers_the_later_stops_itself(cloud: Cloud) -> None:
    # GIVEN a run that started a moment ago, which the second trigger's overlap check missed:
    # ListJobs shows it nothing until it submits (a listing that lags behind the rival)
    cloud.aws.hold_new_jobs()
    rival = cloud.start(_upload("a/_READY", "e-1"))
    submitted: list[str] = []

    def lagging(parsed: dict[str, Any], **_: Any) -> None:
        if not submitted:
            parsed["jobSummaryList"] = []

    events = cloud.aws.batch.meta.events
    events.register("before-call.batch.SubmitJob", lambda **_: submitted.append("yes"))
    events.register("after-call.batch.ListJobs", lagging)
    # WHEN the second trigger submits its chain
    late = cloud.start(_upload("b/_READY", "e-2"))
    # THEN it sees the earlier run, stops all of its own jobs and reports itself skipped
    assert late["action"] == "SKIPPED"
    assert cloud.statuses(late["runId"]) == dict.fromkeys(
        ["JobA", "JobB", "JobC", "JobD", "JobE"], "FAILED"
    )
    assert cloud.statuses(rival["runId"]) == {
        "JobA": "RUNNABLE",
        **dict.fromkeys(["JobB", "JobC", "JobD", "JobE"], "PENDING"),  # each waits for the last
    }
    (message,) = cloud.messages()
    assert rival["runId"] in message["Message"]


def test_an_event_that_is_not_a_trigger_is_published_not_dropped(cloud: Cloud) -> None:
    result = cloud.start(_upload("incoming/data.csv"))
    assert result["action"] == "IGNORED"
    (message,) = cloud.messages()
    assert "is not a ready marker" in message["Message"]


def test_the_lambda_entry_point_reads_its_environment(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in cloud.settings().environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    result = handler(_schedule(), None)
    assert result["action"] == "STARTED"
    assert [j["job"] for j in result["jobs"]] == ["JobA", "JobB", "JobC", "JobD", "JobE"]


def test_a_resume_keeps_the_runs_input_prefix(cloud: Cloud) -> None:
    # GIVEN an upload run whose JobB child failed
    cloud.aws.inject("JobB:3=exit:1")
    result = cloud.start(_upload("incoming/x/_READY"))
    # WHEN it is resumed from the command line's engine code
    from pipeline.backends.aws import AwsSession

    document = cloud.document()
    session = AwsSession(cloud.aws.batch, document)
    resume = plan_resume_run(session, document, result["runId"], RunInputs(), failed_only=False)
    run = submit(session, document, resume.config, plan=resume.plan)
    # THEN the jobs submitted again list the same prefix
    job_b = cloud.describe(run.job_ids["JobB"])
    environment = {e["name"]: e["value"] for e in job_b["container"]["environment"]}
    assert environment[INPUT_PREFIX] == "incoming/x/"


def test_an_input_prefix_that_names_a_marker_is_refused(cloud: Cloud) -> None:
    with pytest.raises(Exception, match="names a ready marker; give the folder it marks"):
        plan_run(cloud.document(), RunInputs(input_prefix="incoming/_READY"))


# --- the starter's code as the Lambda function gets it ------------------------------------------


def test_the_bundle_holds_the_engine_and_imports_without_cdk_or_moto(tmp_path: Path) -> None:
    from pipeline.constructs.run_starter import _EngineBundle, starter_files

    names = {str(p) for p in starter_files()}
    assert "pipeline/starter.py" in names
    assert "pipeline/runs/chain.py" in names
    assert "pipeline/contract.py" in names
    assert not any(
        n.startswith(("pipeline/constructs", "pipeline/stacks", "pipeline/local", "pipeline/cli"))
        for n in names
    )
    assert "pipeline/submit.py" not in names
    assert _EngineBundle().try_bundle(str(tmp_path))
    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('aws_cdk', 'constructs', 'jsii', 'moto', 'cdk_nag'):\n"
        "            raise ImportError('not in the Lambda runtime: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import pipeline.starter, pipeline.runs.triggers\n"
        "print(pipeline.starter.__file__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", blocker],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "pipeline" / "starter.py")


def test_a_chain_still_being_submitted_counts_as_active(cloud: Cloud) -> None:
    # GIVEN another starter's chain that has reached only JobA so far
    cloud.aws.hold_new_jobs()
    cloud.aws.batch.submit_job(
        jobName="JobA",
        jobQueue=cloud.aws.queue_arn,
        jobDefinition=cloud.definitions["JobA"],
        tags={RUN_TAG: "20261126T015959-aaaaaa", PIPELINE_TAG: "ProdQueue"},
    )
    (run,) = list_runs(cloud.aws.batch, cloud.aws.queue_arn, DEFAULT_SPEC)
    assert run.status == "RUNNING"
    # WHEN a marker lands, THEN that run counts: this one is skipped
    assert cloud.start(_upload("a/_READY"))["action"] == "SKIPPED"
