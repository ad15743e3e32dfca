"""JobD[k]: check k of ten, chosen by AWS_BATCH_JOB_ARRAY_INDEX (SEQUENTIAL children).

The checks prove the pipeline's own invariants, whatever the steps do: every input is processed
once or rejected with a reason, every stage's record and item is present and consistent with
what its step reported, nothing is left over. The last runs the steps' own checks (the default
steps add a round-trip check). Each writes its result to the run's report in the output
bucket; a failed check exits 1, so the later children and JobE never run and the run's
intermediates stay for inspection. A missing or malformed record is a failed check naming it.
The checks use listings and table queries, never one request per object.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline import contract
from pipeline.batch_facts import JOB_ID_VARIABLE
from pipeline.jobs.aws_calls import JobError
from pipeline.jobs.bucket_io import list_objects, put_json
from pipeline.jobs.items import attributes_of, cpu_facts_of, decimals
from pipeline.jobs.job_a import check as check_listed_object
from pipeline.jobs.program import JobRun, job_main
from pipeline.jobs.run_context import RunContext, array_index
from pipeline.jobs.run_view import MalformedRecordError, RunView, need
from pipeline.steps import DEFAULT_STEPS, Step

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

SHOWN_FAILURES = 20


@dataclass
class CheckResult:
    step: int
    name: str
    checked: int = 0
    failures: list[str] = field(default_factory=list)
    problems: int = 0
    notes: list[str] = field(default_factory=list)
    """What the report should say without failing the check (inputs added after listing)."""

    def fail(self, message: str) -> None:
        self.problems += 1
        if len(self.failures) < SHOWN_FAILURES:
            self.failures.append(message)

    @property
    def passed(self) -> bool:
        return self.problems == 0

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "check": self.name,
            "passed": self.passed,
            "checked": self.checked,
            "problems": self.problems,
            "failures": self.failures,
            "notes": self.notes[:SHOWN_FAILURES],
        }


def shards(view: RunView, result: CheckResult) -> None:
    """JobA wrote a shard per child, each has its manifest, JobB record and JobC record, and
    the shards are balanced by bytes (no two differ by more than the largest object)."""
    if view.listing.get("shards") != view.ctx.array_size:
        result.fail(
            f"JobA wrote {view.listing.get('shards')} shards for an array of {view.ctx.array_size}"
        )
    stages = (
        ("manifest", view.manifests),
        ("JobB record", view.cpu_indexes),
        ("JobC record", view.memory_indexes),
    )
    for shard in range(view.ctx.array_size):
        result.checked += 1
        for what, records in stages:
            if records[shard] is None:
                result.fail(f"shard {shard} has no {what}")
    sizes = view.listing.get("shard_bytes", [])
    largest = view.listing.get("largest_object", 0)
    if sizes and max(sizes) - min(sizes) > largest:
        result.fail(
            f"shard bytes range from {min(sizes):,} to {max(sizes):,}, more apart than "
            f"the largest object ({largest:,})"
        )


def inputs_accounted_for(view: RunView, result: CheckResult) -> None:
    """Every object in BucketA (under the run's input prefix) is in exactly one shard or in
    JobA's rejects."""
    rejected = [str(need(r, "key", "a JobA reject")) for r in view.listing_rejects]
    shard_keys = list(view.manifested)
    seen: dict[str, int] = {}
    for key in [*shard_keys, *rejected]:
        seen[key] = seen.get(key, 0) + 1
    listed_at = view.listing.get("listed_at")
    late: list[str] = []
    for obj in list_objects(
        view.s3, view.ctx.input_bucket, view.ctx.input_prefix, url_encoded=True
    ):
        key = check_listed_object(obj["Key"], obj["Size"], "STANDARD", view.ctx.max_object_bytes)[0]
        result.checked += 1
        count = seen.pop(key, 0)
        if count == 0 and listed_at is not None and obj["LastModified"].timestamp() > listed_at:
            late.append(key)  # written after JobA listed: not part of this run
        elif count == 0:
            result.fail(f"input {key!r} is in no shard and not rejected: it was lost")
        elif count > 1:
            result.fail(f"input {key!r} is accounted for {count} times")
    for key in seen:
        result.fail(f"{key!r} is in a shard or rejects but not in BucketA")
    if late:
        result.notes.append(
            f"{len(late)} object(s) written to BucketA after JobA listed it are not part of "
            f"this run, e.g. {late[0]!r}"
        )


def rejects_have_reasons(view: RunView, result: CheckResult) -> None:
    """Each rejected object (by JobA or by a step) says why, JobA's count matches its
    listing, the run rejected no larger a share than its steps allow, and it processed an
    object at all (unless its steps allow a run that processes none)."""
    for reject in [*view.listing_rejects, *view.stage_rejects]:
        result.checked += 1
        if not str(reject.get("reason", "")).strip():
            result.fail(f"rejected {reject.get('key')!r} has no reason")
    if len(view.listing_rejects) != view.listing.get("rejected"):
        result.fail(
            f"{len(view.listing_rejects)} rejects listed, JobA counted "
            f"{view.listing.get('rejected')}"
        )
    listed = view.listing.get("listed") or 0
    share = view.max_rejected_share
    rejected = len(view.listing_rejects) + len(view.stage_rejects)
    if listed and rejected / listed > share:
        result.fail(
            f"{rejected} of {listed} objects were rejected, more than the steps' "
            f"max_rejected_share of {share:g}"
        )
    processed = sum("rejected" not in e for e in view.memory_entries.values())
    if not processed and not view.allow_empty_runs:
        result.fail(f"the run processed no object: {_why_nothing(view, listed)}")


def _why_nothing(view: RunView, listed: int) -> str:
    """Why a run processed nothing, and what to do about it, in one line."""
    allow = "or let such runs succeed with PipelineSteps(allow_empty_runs=True)"
    if not listed:
        where = f"under {view.ctx.input_prefix!r}" if view.ctx.input_prefix else "in BucketA"
        return f"no object was listed {where}; check the input, {allow}"
    rejects = [*view.stage_rejects, *view.listing_rejects]
    first = rejects[0] if rejects else {"key": "?", "reason": "?"}
    said = f"all {listed} listed objects were rejected, first {first['key']!r}: {first['reason']}"
    if view.stage_rejects:
        return (
            f"{said}; fix the steps and re-run what they rejected with `python -m "
            f"pipeline.submit resume {view.ctx.run_id} --rejected`, {allow}"
        )
    return f"{said}; {allow}"


def cpu_stage_complete(view: RunView, result: CheckResult) -> None:
    """Every object of a shard has its JobB entry, of the size listed, and every result JobB
    kept is in BucketB with the size recorded (in a retry of the rejected objects of a run
    whose JobE removed the intermediates: every result this retry kept)."""
    retry = view.ctx.retry_rejected
    removed = bool(retry) and view.intermediates_removed
    for key, (_, listed) in view.manifested.items():
        result.checked += 1
        entry = view.cpu_entries.get(key)
        if entry is None:
            result.fail(f"{key!r} has no JobB entry")
            continue
        if entry.get("size") != listed.get("size"):
            result.fail(
                f"{key!r} was {entry.get('size')} bytes when JobB read it, {listed.get('size')} "
                "when JobA listed it"
            )
        if "rejected" in entry:
            continue
        result_key = need(entry, "result_key", f"JobB entry of {key!r}")
        stored = view.cpu_results.get(result_key)
        if stored is None and removed and entry.get(contract.RETRIED) != retry:
            continue  # kept from before the retry; JobE removed its result with the rest
        if stored is None:
            result.fail(f"JobB result {result_key} for {key!r} is missing")
        elif stored["Size"] != need(entry, "result_size", f"JobB entry of {key!r}"):
            result.fail(
                f"JobB result {result_key} for {key!r} has {stored['Size']} bytes, "
                f"{entry['result_size']} recorded"
            )


def memory_stage_complete(view: RunView, result: CheckResult) -> None:
    """Every object JobB did has its JobC entry, and every output JobC kept is in BucketC,
    unchanged since it was written (its ETag is the MD5 JobC recorded)."""
    for key, cpu in view.cpu_entries.items():
        if "rejected" in cpu:
            continue
        result.checked += 1
        entry = view.memory_entries.get(key)
        if entry is None:
            result.fail(f"{key!r} has no JobC entry")
            continue
        if "rejected" in entry:
            continue
        output_key = need(entry, "output_key", f"JobC entry of {key!r}")
        stored = view.memory_outputs.get(output_key)
        if stored is None:
            result.fail(f"BucketC output {output_key} for {key!r} is missing")
        elif stored["ETag"].strip('"') != need(entry, "output_md5", f"JobC entry of {key!r}"):
            result.fail(f"BucketC output {output_key} for {key!r} changed after JobC wrote it")


def items_per_object(view: RunView, result: CheckResult) -> None:
    """Every object JobC did has exactly its table item, in its shard, naming its output."""
    for key, entry in view.memory_entries.items():
        if "rejected" in entry:
            continue
        result.checked += 1
        item = view.items.get(key)
        if item is None:
            result.fail(f"{key!r} has no table item")
            continue
        shard = view.manifested.get(key, (None, {}))[0]
        if str(need(item, "shard", f"item of {key!r}").get("N")) != str(shard):
            result.fail(f"{key!r} table item says shard {item['shard']}, manifest {shard}")
        if need(item, "output_key", f"item of {key!r}").get("S") != entry.get("output_key"):
            result.fail(f"{key!r} table item names another output than JobC recorded")


def items_match_the_step(view: RunView, result: CheckResult) -> None:
    """Each item holds exactly the attributes the memory step returned for its object, and
    the facts the CPU step returned for it."""
    for key, entry in view.memory_entries.items():
        item = view.items.get(key)
        if "rejected" in entry or item is None:
            continue
        result.checked += 1
        held = attributes_of(item)
        reported = decimals(dict(need(entry, "attributes", f"JobC entry of {key!r}")))
        if held != reported:
            differing = sorted(set(held) ^ set(reported)) or sorted(
                name for name in held if held[name] != reported.get(name)
            )
            result.fail(f"{key!r}: the item's {differing[0]!r} is not what the step returned")
        facts = decimals(dict((view.cpu_entries.get(key) or {}).get("facts") or {}))
        if cpu_facts_of(item) != facts:
            result.fail(f"{key!r}: the item's cpu_facts are not what the CPU step returned")


def stage_counts_match(view: RunView, result: CheckResult) -> None:
    """The objects add up at every stage: what JobA kept is what JobB took, what JobB did is
    what JobC took, and what JobC did has one output and one item each."""
    cpu_done = sum("rejected" not in e for e in view.cpu_entries.values())
    memory_done = sum("rejected" not in e for e in view.memory_entries.values())
    pairs = (
        ("JobA valid", view.listing.get("valid"), "in manifests", len(view.manifested)),
        ("in manifests", len(view.manifested), "JobB entries", len(view.cpu_entries)),
        ("JobB done", cpu_done, "JobC entries", len(view.memory_entries)),
        ("JobC done", memory_done, "BucketC outputs", len(view.memory_outputs)),
        ("JobC done", memory_done, "table items", len(view.items)),
    )
    result.checked = len(pairs)
    for left, left_count, right, right_count in pairs:
        if left_count != right_count:
            result.fail(f"{left} {left_count} but {right} {right_count}")


def no_orphans(view: RunView, result: CheckResult) -> None:
    """Nothing in BucketB, BucketC or the table belongs to an object no stage did."""
    kept_cpu = {e.get("result_key") for e in view.cpu_entries.values() if "rejected" not in e}
    kept_memory = {e.get("output_key") for e in view.memory_entries.values() if "rejected" not in e}
    for key in view.cpu_results:
        result.checked += 1
        if key not in kept_cpu:
            result.fail(f"orphan JobB result {key}")
    for key in view.memory_outputs:
        result.checked += 1
        if key not in kept_memory:
            result.fail(f"orphan BucketC output {key}")
    for key in view.items:
        result.checked += 1
        if "rejected" in view.memory_entries.get(key, {"rejected": True}):
            result.fail(f"orphan table item {key!r}")


def the_steps_checks(view: RunView, result: CheckResult) -> None:
    """The steps' own checks over every object both steps did (the default steps check that
    the round trip gives back every input)."""
    references = view.checks
    records = view.step_records()
    result.checked = len(records)
    if not references:
        result.notes.append("the steps give no checks of their own")
    for reference in references:
        try:
            check = Step.python(str(reference)).load("check")
            problems: Iterable[str] = check(records) or []
        except Exception as error:  # the check's own failure is a failed check, said plainly
            result.fail(f"{reference}: {type(error).__name__}: {error}")
            continue
        for problem in problems:
            result.fail(f"{reference}: {problem}")


CHECKS: tuple[Callable[[RunView, CheckResult], None], ...] = (
    shards,
    inputs_accounted_for,
    rejects_have_reasons,
    cpu_stage_complete,
    memory_stage_complete,
    items_per_object,
    items_match_the_step,
    stage_counts_match,
    no_orphans,
    the_steps_checks,
)
assert len(CHECKS) == contract.VALIDATION_STEPS


def run(
    s3: S3Client,
    dynamodb: DynamoDBClient,
    ctx: RunContext,
    step: int,
    *,
    validation_job_id: str | None = None,
    checks: Sequence[str] = DEFAULT_STEPS.checks,
    max_rejected_share: float = DEFAULT_STEPS.max_rejected_share,
    allow_empty_runs: bool = DEFAULT_STEPS.allow_empty_runs,
) -> CheckResult:
    """Check ``step`` of the run; ``checks``, ``max_rejected_share`` and ``allow_empty_runs``
    are the steps' (JobD's definition sets them)."""
    check = CHECKS[step]
    result = CheckResult(step, check.__name__.replace("_", " "))
    view = None
    if validation_job_id:
        view = contract.shard_view_key(ctx.run_id, validation_job_id)
    try:
        run_view = RunView(
            s3,
            dynamodb,
            ctx,
            shard_view=view,
            checks=checks,
            max_rejected_share=max_rejected_share,
            allow_empty_runs=allow_empty_runs,
        )
        check(run_view, result)
    except MalformedRecordError as malformed:
        result.fail(f"a malformed record: {malformed}")
    put_json(s3, ctx.output_bucket, contract.report_key(ctx.run_id, step), result.as_json())
    if not result.passed:
        raise JobError(
            f"check {step} ({result.name}) failed with {result.problems} problem(s); first: "
            f"{result.failures[0]}"
        )
    return result


def main() -> int:
    def work(job: JobRun) -> dict[str, Any]:
        step = array_index(size=contract.VALIDATION_STEPS)
        job.timing_index = step
        # Children's IDs are "<JobD's ID>:<index>": the shard view is this JobD's.
        job_id = os.environ.get(JOB_ID_VARIABLE, "").rpartition(":")[0] or None
        result = run(
            job.client("s3"),
            job.client("dynamodb"),
            job.ctx,
            step,
            validation_job_id=job_id,
            checks=json.loads(os.environ.get(contract.CHECKS) or "[]"),
            max_rejected_share=float(os.environ.get(contract.MAX_REJECTED_SHARE) or 1.0),
            allow_empty_runs=os.environ.get(contract.ALLOW_EMPTY_RUNS) == "true",
        )
        return {"check": result.name, "checked": result.checked}

    return job_main("JobD", work, timed=True)


if __name__ == "__main__":
    raise SystemExit(main())
