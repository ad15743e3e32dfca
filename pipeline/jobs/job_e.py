"""JobE: after all ten checks passed, remove the run's intermediates, write the summary and
publish to SNS that the pipeline completed, with a link to the output.

    python -m pipeline.jobs.job_e --source-bucket Ref::SourceBucket --recipient Ref::Recipient
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipeline import contract
from pipeline.jobs.common import (
    JobError,
    RunContext,
    delete_prefix,
    get_json,
    get_json_if_exists,
    in_threads,
    list_objects,
    make_client,
    put_json,
    record_timing,
    reporting,
    run_main,
    s3_url,
)

if TYPE_CHECKING:
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
    ctx: RunContext,
    *,
    source_bucket: str,
    recipient: str | None,
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
    # (its counts would change once the intermediates are gone) nor notifies twice.
    key = contract.summary_key(ctx.run_id)
    summary = get_json_if_exists(s3, source_bucket, key)
    if summary is None:
        summary = _summarize(s3, ctx, reports)
        put_json(s3, source_bucket, key, summary)
    notified = contract.notified_key(ctx.run_id)
    if get_json_if_exists(s3, source_bucket, notified) is not None:
        return {"summary": s3_url(source_bucket, key), "removed": 0, "notified": False}
    with reporting(f"presign {s3_url(source_bucket, key)}"):
        link = s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": source_bucket, "Key": key},
            ExpiresIn=ctx.link_expiry_seconds,
        )
    objects = summary["objects"]
    message = (
        f"The array-job pipeline run {ctx.run_id} completed: {objects['processed']:,} objects "
        f"processed, {objects['rejected']:,} rejected, all {len(reports)} checks passed.\n\n"
        f"Summary (link valid for up to {ctx.link_expiry_seconds // 3600} h): {link}\n"
        f"Summary in S3: {s3_url(source_bucket, key)}\n"
        f"Outputs: {summary['outputs']}\n"
    )
    attributes: dict[str, Any] = {"RunId": {"DataType": "String", "StringValue": ctx.run_id}}
    if recipient:
        attributes["Recipient"] = {"DataType": "String", "StringValue": recipient}
    with reporting(f"Publish {ctx.notification_topic_arn}"):
        published = sns.publish(
            TopicArn=ctx.notification_topic_arn,
            Subject=f"Array job pipeline run {ctx.run_id} completed"[:100],
            Message=message,
            MessageAttributes=attributes,
        )
    # Written after the publish: a crash between the two sends the message again (at least
    # once), rather than never.
    put_json(s3, source_bucket, notified, {"message_id": published["MessageId"]})
    # What is logged (run_main prints it to CloudWatch Logs) names the summary by its s3:// URL
    # only: the presigned link carries the job role's session token, a secret.
    return {
        "summary": s3_url(source_bucket, key),
        "removed": summary["intermediates_removed"],
        "notified": True,
    }


def _summarize(s3: S3Client, ctx: RunContext, reports: list[Any]) -> dict[str, Any]:
    """Remove the run's intermediates (BucketB) and account for the run."""
    durations = _durations(s3, ctx)  # before the shard view goes with the intermediates
    removed = delete_prefix(s3, ctx.cpu_results_bucket, contract.run_prefix(ctx.run_id))
    listing = get_json(s3, ctx.output_bucket, contract.listing_key(ctx.run_id))
    rejects = get_json(s3, ctx.output_bucket, contract.rejects_key(ctx.run_id))["rejects"]
    return {
        "run_id": ctx.run_id,
        "status": "SUCCEEDED",
        "objects": {
            "listed": listing["listed"],
            "processed": listing["valid"],
            "rejected": listing["rejected"],
        },
        "bytes_processed": listing["valid_bytes"],
        "rejects_by_reason": dict(Counter(_reason_kind(r["reason"]) for r in rejects)),
        "rejects_key": s3_url(ctx.output_bucket, contract.rejects_key(ctx.run_id)),
        "checks": [
            {"check": r["check"], "passed": r["passed"], "checked": r["checked"]} for r in reports
        ],
        "seconds_by_job": durations,
        "intermediates_removed": removed,
        "outputs": s3_url(ctx.memory_results_bucket, contract.run_prefix(ctx.run_id)),
    }


def _reason_kind(reason: str) -> str:
    """Group reasons that differ only in numbers (``larger than the ...-byte limit``)."""
    return re.sub(r"\s*\(.*\)$", "", reason)


def _durations(s3: S3Client, ctx: RunContext) -> dict[str, float]:
    """Seconds per job, summed over its children: JobA's and JobD's timing records, and the
    seconds JobB's and JobC's children put in their shard records, read from the newest
    shard view of JobD (one object, whatever the array size)."""
    prefix = contract.run_prefix(ctx.run_id) + "timings/"
    keys = [o["Key"] for o in list_objects(s3, ctx.output_bucket, prefix)]
    records = in_threads(lambda key: get_json(s3, ctx.output_bucket, key), keys)
    totals: dict[str, float] = {}

    def add(job: str, seconds: float) -> None:
        totals[job] = round(totals.get(job, 0.0) + seconds, 3)

    for record in records:
        add(record["job"], record["seconds"])
    views = list(list_objects(s3, ctx.cpu_results_bucket, contract.shard_views_prefix(ctx.run_id)))
    if views:
        newest = max(views, key=lambda o: o["LastModified"])
        view = get_json(s3, ctx.cpu_results_bucket, newest["Key"])
        for job, name in (("JobB", "cpu_indexes"), ("JobC", "memory_indexes")):
            timed = [r["seconds"] for r in view.get(name, []) if r and "seconds" in r]
            if timed:
                add(job, sum(timed))
    return totals


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.jobs.job_e")
    parser.add_argument("--source-bucket", help="s3:// URL of the bucket with the run's report")
    parser.add_argument("--recipient", help="who the notification is for (message attribute)")
    args = parser.parse_args(argv)

    def work() -> dict[str, Any]:
        started = time.monotonic()
        ctx = RunContext.from_env()
        s3 = make_client("s3")
        result = run(
            s3,
            make_client("sns"),
            ctx,
            source_bucket=parse_source_bucket(args.source_bucket, ctx.output_bucket),
            recipient=parse_recipient(args.recipient),
        )
        record_timing(s3, ctx, "JobE", None, time.monotonic() - started)
        return result

    return run_main("JobE", work)


if __name__ == "__main__":
    raise SystemExit(main())
