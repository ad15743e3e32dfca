"""JobE: after all ten checks passed, merge the run's rejects into one list, run the aggregate
step (if the steps have one) over the run's items, remove the run's intermediates, write the
summary and publish to SNS that the pipeline completed, with a link to the output.

    python -m pipeline.jobs.job_e --source-bucket Ref::SourceBucket --recipient Ref::Recipient
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pipeline import contract
from pipeline.batch_facts import JOB_ID_VARIABLE
from pipeline.jobs.aws_calls import JobError, TransientJobError, reporting
from pipeline.jobs.bucket_io import (
    create_json,
    delete_prefix,
    get_json,
    get_json_if_exists,
    list_objects,
    put_json,
    s3_url,
)
from pipeline.jobs.items import CPU_FACTS, attributes_of, cpu_facts_of, plain
from pipeline.jobs.program import JobRun, in_threads, job_main
from pipeline.jobs.run_context import RunContext
from pipeline.jobs.run_view import RunView
from pipeline.jobs.runner import ObjectRejectedError, checked_mapping, load_step
from pipeline.steps import Step, TransientStepError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient


def parse_source_bucket(value: str | None, default: str) -> str:
    """The bucket of ``s3://bucket``; an unset parameter (``Ref::SourceBucket`` left as it is,
    or empty) means the output bucket."""
    if not value or value.startswith("Ref::"):
        return default
    try:
        return contract.source_bucket_name(value)
    except ValueError as error:
        raise JobError(str(error)) from None


def parse_recipient(value: str | None) -> str | None:
    return None if not value or value.startswith("Ref::") else value


def run(
    s3: S3Client,
    sns: SNSClient,
    dynamodb: DynamoDBClient,
    ctx: RunContext,
    *,
    source_bucket: str,
    recipient: str | None,
    aggregate: Step | None = None,
) -> dict[str, Any]:
    reports = in_threads(
        lambda step: get_json_if_exists(s3, source_bucket, contract.report_key(ctx.run_id, step)),
        list(range(contract.VALIDATION_STEPS)),
    )
    for step, report in enumerate(reports):
        if report is None:
            raise JobError(
                f"check {step} has no report at "
                f"{s3_url(source_bucket, contract.report_key(ctx.run_id, step))}; JobD did not "
                "finish, so the run's intermediates are kept"
            )
        if not report.get("passed"):
            raise JobError(
                f"check {step} ({report['check']}) did not pass; the run's intermediates are "
                "kept for inspection"
            )
    # Idempotent: a JobE run again (a retried attempt, a resumed run) finds the summary and
    # the notification marker of the run that got that far, and neither rewrites the summary
    # (its counts would change once the intermediates are gone) nor notifies twice. A retry
    # of the run's rejected objects writes it anew, once per retry, and notifies once more.
    key = contract.summary_key(ctx.run_id)
    summary = get_json_if_exists(s3, source_bucket, key)
    retry = ctx.retry_rejected
    if summary is None or (retry and summary.get("retry") != retry):
        summary = _summarize(s3, dynamodb, ctx, reports, aggregate)
        if retry:
            summary["retry"] = retry
        put_json(s3, source_bucket, key, summary)
    notified = contract.notified_key(ctx.run_id, retry)
    if not _claim_notification(s3, source_bucket, notified):
        return {"summary": s3_url(source_bucket, key), "removed": 0, "notified": False}
    with reporting(f"presign {s3_url(source_bucket, key)}"):
        link = s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": source_bucket, "Key": key},
            ExpiresIn=ctx.link_expiry_seconds,
        )
    objects = summary["objects"]
    aggregated = summary.get("aggregate")
    message = (
        f"The array-job pipeline run {ctx.run_id} completed: {objects['processed']:,} "
        f"object{'' if objects['processed'] == 1 else 's'} processed, "
        f"{objects['rejected']:,} rejected, all {len(reports)} checks passed.\n\n"
        + (
            f"The run's aggregate ({aggregated['step']}) is in its summary.\n\n"
            if aggregated
            else ""
        )
        + f"Summary (link valid for up to {ctx.link_expiry_seconds // 3600} h): {link}\n"
        f"Summary in S3: {s3_url(source_bucket, key)}\n"
        f"Outputs: {summary['outputs']}\n"
    )
    attributes: dict[str, Any] = {"RunId": {"DataType": "String", "StringValue": ctx.run_id}}
    if recipient:
        attributes["Recipient"] = {"DataType": "String", "StringValue": recipient}
    try:
        with reporting(f"Publish {ctx.notification_topic_arn}"):
            published = sns.publish(
                TopicArn=ctx.notification_topic_arn,
                Subject=f"Array job pipeline run {ctx.run_id} completed"[:100],
                Message=message,
                MessageAttributes=attributes,
            )
    except BaseException:
        # Nothing was published: the claim is given up (dated long ago, with the write JobE
        # may do), so a retry or a resume publishes.
        with contextlib.suppress(Exception):
            put_json(s3, source_bucket, notified, {"job": _this_job(), "claimed_at": 0})
        raise
    put_json(
        s3, source_bucket, notified, {"job": _this_job(), "message_id": published["MessageId"]}
    )
    # What is logged (run_main prints it to CloudWatch Logs) names the summary by its s3:// URL
    # only: the presigned link carries the job role's session token, a secret.
    return {
        "summary": s3_url(source_bucket, key),
        "removed": summary["intermediates_removed"],
        "notified": True,
    }


def _this_job() -> str:
    return os.environ.get(JOB_ID_VARIABLE, "")


CLAIM_SECONDS = 900
"""A claim without a message ID older than this belongs to a JobE that died: publishing is one
SNS call (with its retries) right after the claim."""


def _claim_notification(s3: S3Client, bucket: str, key: str) -> bool:
    """Whether this job is to publish the run's notification: it claims the marker first,
    with a conditional create (S3 ``If-None-Match: *``), so of two JobE jobs at once (two
    resumes, say) only one publishes. A claim without a message ID that this job's own earlier
    attempt left (Batch runs one attempt of a job at a time), or that is older than
    :data:`CLAIM_SECONDS`, belongs to a JobE that died before or while publishing (one that
    failed to publish gives its claim up): this one takes it over, so the message goes out at
    least once."""
    marker = get_json_if_exists(s3, bucket, key)
    now = time.time()
    if marker is not None:
        if "message_id" in marker:
            return False
        ours = marker.get("job") == _this_job() != ""
        if not ours and now - float(marker.get("claimed_at", now)) < CLAIM_SECONDS:
            return False
        put_json(s3, bucket, key, {"job": _this_job(), "claimed_at": now})
        return True
    # False: another JobE claimed it between the read and this write
    return create_json(s3, bucket, key, {"job": _this_job(), "claimed_at": now})


def _summarize(
    s3: S3Client,
    dynamodb: DynamoDBClient,
    ctx: RunContext,
    reports: list[Any],
    aggregate: Step | None,
) -> dict[str, Any]:
    """Account for the run: every reject in one list (JobA's and the steps'), the aggregate
    step's result, the jobs' seconds; then remove the run's intermediates (BucketB)."""
    view = RunView(s3, dynamodb, ctx, shard_view=_newest_shard_view(s3, ctx))
    durations = _durations(s3, ctx, view)  # before the shard view goes with the intermediates
    rejects = [
        {**reject, "stage": "listing"} for reject in view.listing_rejects
    ] + view.stage_rejects
    rejects.sort(key=lambda r: r["key"])
    put_json(s3, ctx.output_bucket, contract.rejects_key(ctx.run_id), {"rejects": rejects})
    processed = view.step_records()
    summary: dict[str, Any] = {
        "run_id": ctx.run_id,
        "status": "SUCCEEDED",
        "objects": {
            "listed": view.listing["listed"],
            "processed": len(processed),
            "rejected": len(rejects),
        },
        "bytes_processed": sum(record.size for record in processed),
        "rejects_by_stage": dict(Counter(r["stage"] for r in rejects)),
        "rejects_by_reason": dict(Counter(_reason_kind(r["reason"]) for r in rejects)),
        "rejects_key": s3_url(ctx.output_bucket, contract.rejects_key(ctx.run_id)),
        "checks": [
            {"check": r["check"], "passed": r["passed"], "checked": r["checked"]} for r in reports
        ],
        "seconds_by_job": durations,
    }
    if aggregate is not None:
        summary["aggregate"] = {"step": aggregate.label, "result": _aggregate(view, aggregate)}
    summary["intermediates_removed"] = delete_prefix(
        s3, ctx.cpu_results_bucket, contract.run_prefix(ctx.run_id)
    )
    summary["outputs"] = s3_url(ctx.memory_results_bucket, contract.run_prefix(ctx.run_id))
    return summary


def _aggregate(view: RunView, step: Step) -> Any:
    """The aggregate step over the run's items (the memory step's attributes, with ``key``
    and the CPU step's ``cpu_facts`` when it returned any), read from the table one page at
    a time as the step asks for them."""

    def items() -> Iterator[dict[str, Any]]:
        for key, item in view.item_pages():
            facts = cpu_facts_of(item)
            yield {
                **plain(attributes_of(item)),
                "key": key,
                **({CPU_FACTS: plain(facts)} if facts else {}),
            }

    function = step.load("aggregate")
    try:
        returned = function(items())
    except (TransientStepError, TransientJobError) as error:
        raise TransientJobError(f"aggregate step {step.label}: {error}") from error
    except Exception as error:  # the step's own failure fails JobE, which says so
        raise JobError(
            f"aggregate step {step.label} failed: {type(error).__name__}: {error}"
        ) from error
    try:
        return checked_mapping(returned)
    except ObjectRejectedError as error:
        raise JobError(f"aggregate step {step.label}: {error}") from None


def _newest_shard_view(s3: S3Client, ctx: RunContext) -> str | None:
    """The shard view the last JobD wrote (a resumed run's JobD writes a newer one)."""
    views = list(list_objects(s3, ctx.cpu_results_bucket, contract.shard_views_prefix(ctx.run_id)))
    return str(max(views, key=lambda o: o["LastModified"])["Key"]) if views else None


def _reason_kind(reason: str) -> str:
    """Group reasons that differ only in numbers (``larger than the ...-byte limit``)."""
    return re.sub(r"\s*\(.*\)$", "", reason)


def _durations(s3: S3Client, ctx: RunContext, view: RunView) -> dict[str, float]:
    """Seconds per job, summed over its children: JobA's and JobD's timing records, and the
    seconds JobB's and JobC's children put in their shard records."""
    prefix = contract.run_prefix(ctx.run_id) + "timings/"
    keys = [o["Key"] for o in list_objects(s3, ctx.output_bucket, prefix)]
    records = in_threads(lambda key: get_json(s3, ctx.output_bucket, key), keys)
    totals: dict[str, float] = {}

    def add(job: str, seconds: float) -> None:
        totals[job] = round(totals.get(job, 0.0) + seconds, 3)

    for record in records:
        add(record["job"], record["seconds"])
    for job, shards in (("JobB", view.cpu_indexes), ("JobC", view.memory_indexes)):
        timed = [r["seconds"] for r in shards if r and "seconds" in r]
        if timed:
            add(job, sum(timed))
    return totals


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.jobs.job_e")
    parser.add_argument("--source-bucket", help="s3:// URL of the bucket with the run's report")
    parser.add_argument("--recipient", help="who the notification is for (message attribute)")
    args = parser.parse_args(argv)

    def work(job: JobRun) -> dict[str, Any]:
        s3 = job.client("s3")
        return run(
            s3,
            job.client("sns"),
            job.client("dynamodb"),
            job.ctx,
            source_bucket=parse_source_bucket(args.source_bucket, job.ctx.output_bucket),
            recipient=parse_recipient(args.recipient),
            aggregate=load_step() if os.environ.get(contract.STEP) else None,
        )

    return job_main("JobE", work, timed=True)


if __name__ == "__main__":
    raise SystemExit(main())
