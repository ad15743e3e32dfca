"""A run's prediction: the expected time and cost of its size and input on a capacity."""

from __future__ import annotations

import pytest

from pipeline.errors import SpecError
from pipeline.instances import InstanceType
from pipeline.runs.prediction import (
    PerObject,
    PredictionError,
    format_prediction,
    given_per_object,
    input_objects,
    measured_per_object,
    predict,
)
from pipeline.runs.sizing import Capacity, Environment, default_capacity
from pipeline.spec import DEFAULT_SPEC

# One instance type whose usable memory is a round 64 GiB (72,818 MiB less the 10% headroom
# is 65,536 MiB), 32 vCPUs, $3.20 an hour.
ROUND = InstanceType("round.8xlarge", 32, 72_818, 3.20)
CAPACITY = Capacity(
    "one environment of round.8xlarge, maxvCpus 64", (Environment("e", 64, (ROUND,)),)
)


def test_a_worked_example() -> None:
    """300 objects at 100 per child: array size 3. Per object JobA 0.01 s, JobB 2 s, JobC
    0.5 s, JobD 0.02 s (its ten checks together), JobE nothing; a container starts in 30 s,
    the first instances in 180 s. On two round.8xlarge (maxvCpus 64 / 32 vCPUs):

    - at once: JobB (32 vCPU, 4 GiB) one per instance, 2; JobC (1 vCPU, 32 GiB) two per
      instance by memory, 4; JobD one at a time (SEQUENTIAL); JobA and JobE one child.
    - JobA: 30 + 300 x 0.01 = 33 s.
    - JobB: a child has 100 objects: 30 + 100 x 2 = 230 s; 3 children 2 at once: 2 waves,
      460 s.
    - JobC: a child 30 + 100 x 0.5 = 80 s; 1 wave. N_TO_N on JobB: the two end at
      max(460 + 80, 230 + 80) = 540 s, so JobC adds 80 s.
    - JobD: ten children in turn, each 30 + 300 x 0.02 / 10 = 30.6 s: 306 s.
    - JobE: 30 s.
    - makespan: 180 + 33 + 460 + 80 + 306 + 30 = 1,089 s.

    Paid-for time (every child, starts included): JobA 33 s, JobB 3 x 30 + 300 x 2 = 690 s,
    JobC 90 + 150 = 240 s, JobD 300 + 6 = 306 s, JobE 30 s. vCPU-hours: 33/3600 + 690 x
    32/3600 + 240/3600 + 306/3600 + 30/3600 = (33 + 22,080 + 240 + 306 + 30)/3600 = 22,689/3600
    = 6.3025. A child's hour is the instance's price times its share (vCPUs or memory,
    whichever fills it first): JobB 1 ($3.20), JobC and JobD 32/64 ($1.60), JobA and JobE
    1/32 ($0.10); so $ = (33 x 0.10 + 690 x 3.20 + 240 x 1.60 + 306 x 1.60 + 30 x 0.10)/3600
    = (3.3 + 2,208 + 384 + 489.6 + 3)/3600 = 3,087.9/3600 = 0.85775."""
    per_object = PerObject({"JobA": 0.01, "JobB": 2, "JobC": 0.5, "JobD": 0.02}, "given")
    prediction = predict(
        DEFAULT_SPEC.with_array_size(3),
        CAPACITY,
        objects=300,
        per_object=per_object,
        container_start=30,
        instance_start=180,
    )
    jobs = {job.key: job for job in prediction.jobs}
    assert {k: (j.at_once, j.waves) for k, j in jobs.items()} == {
        "JobA": (1, 1),
        "JobB": (2, 2),
        "JobC": (3, 1),  # 4 fit at once; the array has 3
        "JobD": (1, 10),
        "JobE": (1, 1),
    }
    assert {k: round(j.span_seconds, 6) for k, j in jobs.items()} == {
        "JobA": 33,
        "JobB": 460,
        "JobC": 80,
        "JobD": 306,
        "JobE": 30,
    }
    assert prediction.makespan_seconds == pytest.approx(1089)
    assert prediction.vcpu_hours == pytest.approx(6.3025)
    assert prediction.usd == pytest.approx(0.85775)


def test_jobc_waits_for_its_own_waves_when_it_runs_fewer_at_once() -> None:
    """JobC N_TO_N on JobB: 4 children, JobB 4 at once (a wave of 30 + 10 x 1 = 40 s), JobC 1
    at once (a child 30 + 10 x 3 = 60 s, 4 in turn): they end at max(40 + 60, 40 + 4 x 60) =
    280 s, so JobC adds 240 s."""
    wide = InstanceType("wide", 128, 72_818, 1.0)  # four JobB children, one JobC by memory
    capacity = Capacity("wide", (Environment("e", 128, (wide,)),))
    spec = DEFAULT_SPEC.with_array_size(4).with_overrides({"JobC": {"memory_mib": 40_000}})
    prediction = predict(
        spec,
        capacity,
        objects=40,
        per_object=PerObject({"JobB": 1, "JobC": 3}, "given"),
        container_start=30,
        instance_start=0,
    )
    spans = {job.key: job.span_seconds for job in prediction.jobs}
    assert (spans["JobB"], spans["JobC"]) == (40, 240)


def test_the_prediction_says_every_assumption_beside_the_figures() -> None:
    prediction = predict(
        DEFAULT_SPEC.with_array_size(3),
        default_capacity(),
        objects=300,
        per_object=given_per_object(2, DEFAULT_SPEC),
    )
    text = "\n".join(format_prediction(prediction))
    assert text.startswith("prediction (array size 3, 300 objects, on the library's default")
    for said in (
        "per object: JobB 2 s, JobC 2 s (given for each of JobB and JobC",
        "a child's container starts in 30 s and the first instances in 180 s (assumptions",
        "children get equal numbers of objects",
        "no other jobs on the queue, no retries, no Spot reclaims",
        "us-east-1 Linux On-Demand prices of 2025-01",
    ):
        assert f"  assuming {said}" in text or said in text, said
    assert prediction.as_json()["usd"] is not None


def test_no_prediction_without_a_known_capacity() -> None:
    per_object = PerObject({"JobB": 1}, "given")
    with pytest.raises(PredictionError, match="capacity unknown"):
        predict(DEFAULT_SPEC, Capacity("no queue given"), objects=1, per_object=per_object)
    tiny = Capacity("tiny", (Environment("e", 4, (InstanceType("m6i.xlarge", 4, 16384),)),))
    with pytest.raises(PredictionError, match="JobB fits no instance type of tiny"):
        predict(DEFAULT_SPEC, tiny, objects=1, per_object=per_object)


def test_a_local_runs_summary_gives_seconds_per_object_and_its_input() -> None:
    summary = {
        "objects": {"listed": 300, "processed": 297, "rejected": 3},
        "rejects_by_stage": {"listing": 3},
        "seconds_by_job": {"JobA": 0.297, "JobB": 29.7, "JobC": 5.94},
    }
    measured = measured_per_object(summary, "r1")
    assert measured.seconds == pytest.approx({"JobA": 0.001, "JobB": 0.1, "JobC": 0.02})
    assert "local run r1 (297 objects" in measured.source
    assert input_objects(summary) == 297
    with pytest.raises(SpecError, match="run r2 processed no object"):
        measured_per_object({"objects": {"processed": 0}}, "r2")
