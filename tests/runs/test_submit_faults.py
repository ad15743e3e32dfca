"""Lost SubmitJob answers on the AWS path, against the engine's Batch: the chain leaves no
orphaned job and no duplicate.

SubmitJob has no idempotency token, so a request whose answer is lost may or may not have made
a job. Each fault is put on the client the submitter is given, through botocore's event hooks:
an error answer for a request the engine never sees (``EngineBatch.intercept``), a connection
reset once the engine has accepted the job (an ``after-call`` hook that raises, so the client
never learns the job's ID), ListJobs lag (an ``after-call`` hook that leaves a job out of its
first listings) and a CancelJob that is refused. Jobs are held RUNNABLE (``hold_new_jobs``), so what
is left running shows. The submitter's backoff goes
through the ``sleep`` it is given: nothing here waits.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError

from helpers.batch import EngineBatch, Sleeps, engine_batch, error_answer, lag_listings
from pipeline.batch_facts import DEPENDENCY_FAILED, TERMINAL
from pipeline.document import PipelineDocument
from pipeline.errors import EXIT_SERVICE, ChainError
from pipeline.runs.chain import RECONCILE_ATTEMPTS, submit_pipeline
from pipeline.runs.requests import RunConfig, run_config
from pipeline.spec import DEFAULT_SPEC

JOBS = [job.key for job in DEFAULT_SPEC]


class Faults:
    """Faults on the submitter's client (``aws.batch``), and what it sent."""

    def __init__(self, aws: EngineBatch) -> None:
        self.aws = aws
        self.client = aws.batch
        self.sent: Counter[str] = Counter()
        """HTTP requests the client sent (answered or not), by ``<operation> <jobName>`` for
        SubmitJob, ``<operation> <jobId>`` for CancelJob and TerminateJob."""
        self._answers: dict[str, Callable[[Any], AWSResponse | None]] = {}
        self.client.meta.events.register_first("before-send", self._count)
        aws.intercept(self._answer)
        aws.hold_new_jobs()

    def document(self) -> PipelineDocument:
        return PipelineDocument(self.aws.queue_arn, self.aws.definition_arns)

    def _count(self, request: Any, event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        body = json.loads(request.body or b"{}")
        self.sent[f"{operation} {body.get('jobName', body.get('jobId', ''))}".strip()] += 1

    def _answer(self, request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        answer = self._answers.get(event_name.rsplit(".", 1)[-1])
        return answer(request) if answer else None

    def error_answer(self, job_name: str, *, times: int, status: int, code: str) -> None:
        """SubmitJob for ``job_name`` is answered ``status`` ``code`` the first ``times`` times,
        by a front end: moto never sees those requests."""
        answered: list[str] = []

        def answer(request: Any) -> AWSResponse | None:
            if json.loads(request.body)["jobName"] != job_name or len(answered) >= times:
                return None
            answered.append(job_name)
            return error_answer(request.url, status, code)

        self._answers["SubmitJob"] = answer

    def server_error(self, job_name: str, *, times: int) -> None:
        self.error_answer(job_name, times=times, status=500, code="ServerException")

    def answer_lost(self, job_name: str, *, accepted: set[int]) -> None:
        """When moto accepts a job named ``job_name`` for the n-th time, n in ``accepted``, the
        connection resets before the answer arrives: the job exists (the harness has seen it
        submitted), the client never learns its ID."""
        count: list[str] = []

        def reset(parsed: dict[str, Any], **_: Any) -> None:
            if parsed.get("jobName") != job_name or "jobId" not in parsed:
                return
            count.append(parsed["jobId"])
            if len(count) in accepted:
                raise ConnectionClosedError(endpoint_url="https://batch.us-east-1.amazonaws.com")

        self.client.meta.events.register("after-call.batch.SubmitJob", reset)

    def listing_lag(self, hidden: int) -> None:
        """ListJobs lags ``hidden`` listings behind (see :func:`helpers.batch.lag_listings`)."""
        lag_listings(self.client, hidden)

    def refuse_stops(self, job_ids: Callable[[], set[str]]) -> None:
        """CancelJob and TerminateJob are refused (403) for the jobs ``job_ids()`` names."""

        def answer(request: Any) -> AWSResponse | None:
            if json.loads(request.body)["jobId"] in job_ids():
                return error_answer(request.url, 403, "AccessDeniedException")
            return None

        self._answers["CancelJob"] = answer
        self._answers["TerminateJob"] = answer

    # --- what moto holds, as the harness shows it -----------------------------------------------

    def of_run(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """Job key -> the run's jobs of that key, oldest first."""
        return self.aws.run_jobs(run_id)

    def active(self, run_id: str) -> dict[str, list[str]]:
        """Job key -> IDs of the run's jobs of that key that have not ended."""
        return {
            key: [j["jobId"] for j in jobs if j["status"] not in TERMINAL]
            for key, jobs in self.of_run(run_id).items()
        }

    def depends_on(self, run_id: str, job_id: str) -> list[str]:
        (job,) = [j for jobs in self.of_run(run_id).values() for j in jobs if j["jobId"] == job_id]
        return [d["jobId"] for d in job.get("dependsOn", []) if "jobId" in d]


@pytest.fixture
def faults() -> Iterator[Faults]:
    with engine_batch() as aws:
        yield Faults(aws)


def _config() -> RunConfig:
    return run_config(array_size=3)


def _one_active_job_each(faults: Faults, run_id: str, ids: dict[str, str]) -> None:
    """Each key of the run has exactly one job that has not ended, the chain's, and each
    depends on the chain's job before it."""
    assert faults.active(run_id) == {key: [ids[key]] for key in JOBS}
    for before, after in pairwise(JOBS):
        assert faults.depends_on(run_id, ids[after]) == [ids[before]], after


# --- one job per request ---------------------------------------------------------------------


def test_a_5xx_for_a_request_the_service_never_saw_is_sent_again_once(faults: Faults) -> None:
    # GIVEN a front end answers JobB's first SubmitJob with a 500; moto never sees it
    faults.server_error("JobB", times=1)
    sleeps = Sleeps()
    config = _config()
    # WHEN the chain is submitted
    run = submit_pipeline(faults.client, faults.document(), config, sleep=sleeps)
    # THEN JobB was sent twice, not more (botocore did not retry it blindly: a 5xx may come
    # after the service accepted the job), after a backoff, and exists once
    assert faults.sent["SubmitJob JobB"] == 2
    assert sleeps
    _one_active_job_each(faults, config.run_id, run.job_ids)
    assert [len(jobs) for jobs in faults.of_run(config.run_id).values()] == [1, 1, 1, 1, 1]


def test_a_connection_reset_after_the_job_was_accepted_uses_that_job(faults: Faults) -> None:
    # GIVEN moto accepts JobB's first SubmitJob and the connection resets before the answer
    faults.answer_lost("JobB", accepted={1})
    config = _config()
    # WHEN the chain is submitted
    run = submit_pipeline(faults.client, faults.document(), config, sleep=Sleeps())
    # THEN JobB was not sent again: the job the lost answer was about is found and used
    assert faults.sent["SubmitJob JobB"] == 1
    (accepted,) = faults.of_run(config.run_id)["JobB"]
    assert run.job_ids["JobB"] == accepted["jobId"]
    _one_active_job_each(faults, config.run_id, run.job_ids)


def test_a_job_listed_only_on_the_second_listing_is_found_not_sent_again(faults: Faults) -> None:
    # GIVEN JobA's first answer is lost after moto accepted it, and ListJobs leaves a new job
    # out of its first listing
    faults.answer_lost("JobA", accepted={1})
    faults.listing_lag(hidden=1)
    sleeps = Sleeps()
    config = _config()
    # WHEN the chain is submitted
    run = submit_pipeline(faults.client, faults.document(), config, sleep=sleeps)
    # THEN the submitter listed again (after a backoff) before sending JobA again, found the
    # accepted job on the second listing and used it: one JobA
    assert faults.sent["SubmitJob JobA"] == 1
    assert faults.sent["ListJobs"] == 2
    assert len(sleeps) == 1
    (accepted,) = faults.of_run(config.run_id)["JobA"]
    assert run.job_ids["JobA"] == accepted["jobId"]
    _one_active_job_each(faults, config.run_id, run.job_ids)


def test_a_job_not_listed_in_time_and_sent_again_leaves_one_active_job(faults: Faults) -> None:
    # GIVEN JobA's first answer is lost after moto accepted it, and ListJobs leaves a new job
    # out of as many listings as the submitter makes before it sends the request again
    faults.answer_lost("JobA", accepted={1})
    faults.listing_lag(hidden=2)
    config = _config()
    # WHEN the chain is submitted
    run = submit_pipeline(faults.client, faults.document(), config, sleep=Sleeps())
    # THEN JobA was sent again, which made a second job; once ListJobs lists both, the older
    # one (whose ID the submitter never had) is cancelled with a reason naming the one kept
    assert faults.sent["SubmitJob JobA"] == 2
    first, kept = faults.of_run(config.run_id)["JobA"]
    assert run.job_ids["JobA"] == kept["jobId"]
    assert first["status"] == "FAILED"
    assert kept["jobId"] in first["statusReason"]
    _one_active_job_each(faults, config.run_id, run.job_ids)


def test_a_job_sent_again_that_is_never_listed_is_a_clear_error_and_stops_the_run(
    faults: Faults,
) -> None:
    # GIVEN JobB's first answer is lost after moto accepted it, and ListJobs lists no new job
    # for longer than the submitter looks
    faults.answer_lost("JobB", accepted={1})
    faults.listing_lag(hidden=100)
    config = _config()
    # WHEN the chain is submitted
    with pytest.raises(ChainError) as raised:
        submit_pipeline(faults.client, faults.document(), config, sleep=Sleeps())
    # THEN JobB was sent again once, and since ListJobs never showed the job that made, a
    # second copy could not be ruled out: one line says so, and the run is stopped
    message = str(raised.value)
    assert faults.sent["SubmitJob JobB"] == 2
    assert raised.value.exit_code == EXIT_SERVICE
    assert "\n" not in message
    assert message.startswith("SubmitJob for JobB failed: an answer was lost and ListJobs")
    assert "so a second copy cannot be ruled out" in message
    assert message.endswith("stopped: JobA cancelled, JobB cancelled")
    # AND the copy the submitter never saw fails on its dependency: nothing is left to run
    lost, sent_again = faults.of_run(config.run_id)["JobB"]
    assert sent_again["jobId"] in message
    assert lost["statusReason"] == DEPENDENCY_FAILED
    assert faults.active(config.run_id) == {key: [] for key in JOBS}


def test_the_last_attempts_answer_lost_uses_the_job_it_made(faults: Faults) -> None:
    # GIVEN every SubmitJob for JobA but the last is answered 500 (moto never sees them), and
    # moto accepts the last and its answer is lost
    faults.server_error("JobA", times=RECONCILE_ATTEMPTS - 1)
    faults.answer_lost("JobA", accepted={1})
    config = _config()
    # WHEN the chain is submitted
    run = submit_pipeline(faults.client, faults.document(), config, sleep=Sleeps())
    # THEN the job the last request made is found and used, not left running on its own
    # behind an error
    assert faults.sent["SubmitJob JobA"] == RECONCILE_ATTEMPTS
    (accepted,) = faults.of_run(config.run_id)["JobA"]
    assert run.job_ids["JobA"] == accepted["jobId"]
    _one_active_job_each(faults, config.run_id, run.job_ids)


# --- giving up -------------------------------------------------------------------------------


def test_attempts_used_up_is_one_line_exit_254_and_nothing_is_left_running(
    faults: Faults,
) -> None:
    # GIVEN every SubmitJob for JobC is answered 500, and moto never sees one
    faults.server_error("JobC", times=RECONCILE_ATTEMPTS)
    sleeps = Sleeps()
    config = _config()
    # WHEN the chain is submitted
    with pytest.raises(ChainError) as raised:
        submit_pipeline(faults.client, faults.document(), config, sleep=sleeps)
    # THEN JobC was sent RECONCILE_ATTEMPTS times with a growing backoff, and the error is one
    # line, exits as "AWS returned an error that retries did not cure" (docs/cli.md), and
    # says what was stopped
    error = raised.value
    assert faults.sent["SubmitJob JobC"] == RECONCILE_ATTEMPTS
    assert sleeps == sorted(sleeps)
    assert sleeps[-1] > sleeps[0]
    assert error.exit_code == EXIT_SERVICE == 254
    assert error.failed_job == "JobC"
    assert "\n" not in str(error)
    assert str(error).startswith("SubmitJob for JobC failed: ServerException: injected;")
    assert str(error).endswith("stopped: JobA cancelled, JobB cancelled")
    # AND no job of the run is left to run
    assert faults.active(config.run_id) == {key: [] for key in JOBS}
    assert [len(jobs) for jobs in faults.of_run(config.run_id).values()] == [1, 1, 0, 0, 0]


def test_a_stop_refused_during_the_clean_up_is_named_and_the_others_are_still_stopped(
    faults: Faults,
) -> None:
    # GIVEN JobD's SubmitJob fails for good (a 400), and stopping the run's JobA is refused
    config = _config()
    faults.error_answer("JobD", times=1, status=400, code="ClientException")
    faults.refuse_stops(lambda: {j["jobId"] for j in faults.of_run(config.run_id)["JobA"]})
    # WHEN the chain is submitted
    with pytest.raises(ChainError) as raised:
        submit_pipeline(faults.client, faults.document(), config, sleep=Sleeps())
    # THEN the error is still the SubmitJob failure, in one line, naming the job it could not
    # stop and how to stop it
    message = str(raised.value)
    assert message.startswith("SubmitJob for JobD failed: ClientException: injected;")
    assert "\n" not in message
    assert "could not stop JobA (AccessDeniedException: injected)" in message
    assert "JobB cancelled, JobC cancelled" in message
    assert f"python -m pipeline.submit cancel {config.run_id}" in message
    # AND JobB and JobC were still stopped (each waits for JobA, so each ends once JobA
    # does, as a cancelled PENDING job does on AWS)
    run = faults.of_run(config.run_id)
    assert [faults.sent[f"CancelJob {run[key][0]['jobId']}"] for key in JOBS[:3]] == [1, 1, 1]
