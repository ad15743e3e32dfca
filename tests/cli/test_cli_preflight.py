"""Cost guard and pre-flight checks: every refusal is one line, before any SubmitJob."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.batch import STACK, EngineBatch, cli_in_process, engine_batch
from pipeline.errors import SpecError
from pipeline.runs.preflight import check_cost, worst_case
from pipeline.spec import DEFAULT_SPEC


def test_worst_case_is_children_times_resources_times_timeout_times_attempts() -> None:
    costs = {c.key: c for c in worst_case(DEFAULT_SPEC.with_array_size(100))}
    assert costs["JobB"].vcpu_hours == 100 * 32 * 2 * 3
    assert costs["JobC"].gib_hours == 100 * 32 * 2 * 3
    assert costs["JobA"].vcpu_hours == 1 * 1 * 1 * 3
    assert costs["JobD"].vcpu_hours == 10 * 1 * 0.5 * 3


def test_dry_run_prints_the_worst_case_per_job_and_in_total() -> None:
    code, out, err = cli_in_process(None, "--dry-run", "--array-size", "100")
    assert code == 0
    assert "JobB: 100 x 32 vCPU / 4 GiB x 2 h x 3 = 19,200.0 vCPU-hours, 2,400.0 GiB-hours" in err
    assert "total: 19,818.8 vCPU-hours" in err
    assert out.count('"jobName"') == 5


def test_max_vcpu_hours_refuses_an_expensive_run_before_any_submit() -> None:
    with engine_batch() as aws:
        aws.count_calls()
        code, _, err = cli_in_process(
            aws, "--array-size", "100", "--max-vcpu-hours", "1000", "--stack", STACK
        )
    assert code == 252
    assert err.strip() == (
        "error: the run's worst case is 19,818.8 vCPU-hours, above --max-vcpu-hours 1000; "
        "lower --array-size or raise the limit (see --dry-run)"
    )
    assert "SubmitJob" not in aws.calls


def test_a_run_within_the_limit_passes() -> None:
    check_cost(DEFAULT_SPEC.with_array_size(2), 1_000)
    with pytest.raises(SpecError, match="above max_vcpu_hours 10"):
        check_cost(DEFAULT_SPEC.with_array_size(2), 10)


@pytest.fixture
def small_queue() -> Iterator[EngineBatch]:
    """The pipeline's definitions, and a queue whose only instance type is r6i.xlarge."""
    with engine_batch() as aws:
        aws.managed_queue("r6i.xlarge", name="SmallQueue")
        yield aws


def test_a_job_that_fits_no_instance_type_is_refused_before_submitting(
    small_queue: EngineBatch,
) -> None:
    small_queue.count_calls()
    code, _, err = cli_in_process(small_queue, "--queue", "SmallQueue", "--array-size", "4")
    assert code == 252
    assert err.strip() == (
        "error: JobB needs 32 vCPU and 4,096 MiB, which no instance type of SmallQueue fits "
        "(roomiest: r6i.xlarge, 4 vCPU, 29,491 MiB usable); add a larger instance type to its "
        "compute environments"
    )
    assert "SubmitJob" not in small_queue.calls
    # the job definitions are described (no --stack), then the queue and its environments
    assert small_queue.calls == {
        "DescribeJobDefinitions": 5,
        "DescribeJobQueues": 1,
        "DescribeComputeEnvironments": 1,
    }


def test_the_default_queue_layout_passes_the_fit_check(small_queue: EngineBatch) -> None:
    code, _, err = cli_in_process(small_queue, "--queue", "ProdQueue", "--array-size", "4")
    assert code == 0, err


def test_a_local_run_sized_to_its_input_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a local run given no size (sized to its input, the sample's 297 objects: 2)
    monkeypatch.setenv("PIPELINE_LOCAL_STATE_DIR", str(tmp_path / "state"))
    # WHEN its worst case is over the cost guard
    code, out, err = cli_in_process(None, "--local", "--max-vcpu-hours", "1")
    # THEN it is refused in one line that does not ask for a size below AWS Batch's smallest,
    # and no services started (no run's folder, no line saying where they are)
    assert (code, out) == (252, "")
    assert err.strip() == (
        "error: the run's worst case is 414.8 vCPU-hours, above --max-vcpu-hours 1; raise the "
        "limit: the arrays are at AWS Batch's smallest size, 2 (see --dry-run)"
    )
    assert not (tmp_path / "state" / "runs").exists()
