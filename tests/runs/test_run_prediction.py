"""A run's prediction: the expected time and cost of its size and input on a capacity."""

from __future__ import annotations

import math

import pytest

from pipeline.errors import SpecError
from pipeline.instances import InstanceType
from pipeline.runs.prediction import (
    JobPrediction,
    PerObject,
    Prediction,
    PredictionError,
    format_prediction,
    given_per_object,
    input_objects,
    measured_per_object,
    on_default_deployment,
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


def test_a_worked_example_of_uneven_shards_and_a_jobc_of_two_waves() -> None:
    """301 objects at array size 3: the fullest shard has ceil(301 / 3) = 101. Per object JobB
    2 s, JobC 0.5 s, the other jobs nothing; a container starts in 30 s, the first instances
    in 180 s. JobC asks for 40 GiB, so one fits a round.8xlarge (65,536 usable MiB): 2 at once.

    - JobA, JobE: 30 s each; JobD: ten children of 30 s in turn, 300 s.
    - JobB: a child 30 + 101 x 2 = 232 s; 3 children 2 at once: 2 waves, 464 s.
    - JobC: a child 30 + 101 x 0.5 = 80.5 s, 2 waves (161 s alone). N_TO_N on JobB: child i
      starts as child i of JobB ends, so the two end at max(464 + 80.5, 232 + 161) = 544.5 s:
      JobC adds 80.5 s, not its 161.
    - makespan: 180 + 30 + 464 + 80.5 + 300 + 30 = 1,084.5 s.

    Paid for: JobA 30 s, JobB 3 x 30 + 301 x 2 = 692 s, JobC 90 + 150.5 = 240.5 s, JobD 300 s,
    JobE 30 s. vCPU-hours: (30 + 692 x 32 + 240.5 + 300 + 30)/3600 = 22,744.5/3600 =
    6.31792. Dollars: JobB $3.20 an hour (the whole instance), JobC 40,960/65,536 of it
    ($2.00), JobD 32,768/65,536 ($1.60), JobA and JobE 1/32 ($0.10): (30 x 0.10 + 692 x 3.20 +
    240.5 x 2 + 300 x 1.60 + 30 x 0.10)/3600 = 3,181.4/3600 = 0.88372."""
    spec = DEFAULT_SPEC.with_array_size(3).with_overrides({"JobC": {"memory_mib": 40_960}})
    # WHEN the run is predicted
    prediction = predict(
        spec,
        CAPACITY,
        objects=301,
        per_object=PerObject({"JobB": 2, "JobC": 0.5}, "given"),
        container_start=30,
        instance_start=180,
    )
    # THEN every figure is the arithmetic above, in the JSON as in the lines
    jobs = [
        ("JobA", 1, 1, 1, 30, 30, 0.0083, 0.0008),
        ("JobB", 3, 2, 2, 232, 464, 6.1511, 0.6151),
        ("JobC", 3, 2, 2, 80.5, 80.5, 0.0668, 0.1336),
        ("JobD", 10, 1, 10, 30, 300, 0.0833, 0.1333),
        ("JobE", 1, 1, 1, 30, 30, 0.0083, 0.0008),
    ]
    assert prediction.as_json() == {
        "arraySize": 3,
        "objects": 301,
        "capacity": CAPACITY.description,
        "makespanSeconds": 1084.5,
        "vcpuHours": 6.3179,
        "usd": 0.8837,
        "jobs": [
            {
                "job": key,
                "children": children,
                "atOnce": at_once,
                "waves": waves,
                "childSeconds": child,
                "spanSeconds": span,
                "vcpuHours": vcpu_hours,
                "usd": usd,
                "instanceType": "round.8xlarge",
            }
            for key, children, at_once, waves, child, span, vcpu_hours, usd in jobs
        ],
        "assumptions": [
            "per object: JobB 2 s, JobC 0.5 s (given)",
            "a child's container starts in 30 s and the first instances in 180 s (assumptions: "
            "AWS documents neither)",
            "JobB and JobC children get equal numbers of objects (JobA balances bytes, not counts)",
            "each job alone on the capacity, as many children at once as it holds; no other "
            "jobs on the queue, no retries, no Spot reclaims",
            "each child's time priced at its share of the cheapest instance type that fits it "
            "(us-east-1 Linux On-Demand prices of 2025-01), no idle instance time",
        ],
    }
    assert format_prediction(prediction)[:3] == [
        f"prediction (array size 3, 301 objects, on {CAPACITY.description}):",
        "  about 18 min: instances 180 s, JobA 30 s (1 wave of 30 s), JobB 464 s (2 waves of "
        "232 s), JobC 80 s (2 waves of 80 s), JobD 300 s (10 waves of 30 s), JobE 30 s (1 wave "
        "of 30 s)",
        "  about 6.32 vCPU-hours, ~$0.88",
    ]


def test_a_job_after_a_job_of_several_waves_starts_when_its_last_wave_ends() -> None:
    """JobD depends on JobC (STANDARD): it starts when JobC's last child ends, so it adds its
    own ten children in turn (10 x 30 s), whatever JobC's waves; JobC's 4 children one at a
    time (60 s each) end 240 s after JobB's first wave (40 s)."""
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
    assert spans == {"JobA": 30, "JobB": 40, "JobC": 240, "JobD": 300, "JobE": 30}
    assert prediction.makespan_seconds == 640


def test_a_capacity_of_unknown_instance_types_is_costed_in_vcpu_hours_only() -> None:
    # GIVEN an environment that may also launch types this library has no price for
    capacity = Capacity(
        "round.8xlarge and optimal", (Environment("e", 64, (ROUND,), ("optimal",)),)
    )
    # WHEN a run on it is predicted
    prediction = predict(
        DEFAULT_SPEC.with_array_size(3),
        capacity,
        objects=300,
        per_object=PerObject({"JobA": 0.01, "JobB": 2, "JobC": 0.5, "JobD": 0.02}, "given"),
        container_start=30,
        instance_start=180,
    )
    # THEN the time and the vCPU-hours are those of the worked example, with no price and no
    # instance type, and the assumptions say why
    assert prediction.makespan_seconds == pytest.approx(1089)
    assert prediction.vcpu_hours == pytest.approx(6.3025)
    assert prediction.usd is None
    assert [(job.usd, job.instance_type) for job in prediction.jobs] == [(None, None)] * 5
    assert prediction.as_json()["usd"] is None
    assert [job["usd"] for job in prediction.as_json()["jobs"]] == [None] * 5
    assert prediction.assumptions[-1] == (
        "no prices for the capacity's instance types: the cost in vCPU-hours only"
    )
    lines = format_prediction(prediction)
    assert lines[2] == "  about 6.30 vCPU-hours"
    assert lines[-1] == (
        "  assuming no prices for the capacity's instance types: the cost in vCPU-hours only"
    )


def test_the_json_rounds_seconds_to_the_millisecond_and_hours_and_dollars_to_four_places() -> None:
    # GIVEN a job of 3 children at 2 vCPUs, 4,444.4 s paid for at $0.50 an hour
    job = JobPrediction(
        key="JobB",
        children=3,
        at_once=2,
        waves=2,
        child_seconds=232.12345,
        span_seconds=464.2469,
        busy_seconds=4444.4,
        vcpus=2,
        usd_per_hour=0.5,
        instance_type="m6i.large",
    )
    unpriced = JobPrediction("JobC", 3, 3, 1, 80.00049, 80.00049, 3600, 1, None)
    prediction = Prediction(3, 300, "c", 180.00049, (job, unpriced), ("assumed",))
    # THEN: 4,444.4/3600 x 2 = 2.469111 vCPU-hours, x $0.50/2 = $0.617278; the makespan is
    # 180.00049 + 464.2469 + 80.00049 = 724.24788 s
    assert job.as_json() == {
        "job": "JobB",
        "children": 3,
        "atOnce": 2,
        "waves": 2,
        "childSeconds": 232.123,
        "spanSeconds": 464.247,
        "vcpuHours": 2.4691,
        "usd": 0.6173,
        "instanceType": "m6i.large",
    }
    assert prediction.as_json() == {
        "arraySize": 3,
        "objects": 300,
        "capacity": "c",
        "makespanSeconds": 724.248,
        "vcpuHours": 3.4691,
        "usd": None,
        "jobs": [job.as_json(), unpriced.as_json()],
        "assumptions": ["assumed"],
    }
    assert unpriced.as_json()["usd"] is None
    assert unpriced.as_json()["childSeconds"] == 80.0


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (119, "119 s"),
        (120, "2 min"),
        (5_400, "90 min"),
        (7_199, "120 min"),
        (7_200, "2.0 h"),
        (8_101, "2.3 h"),
    ],
)
def test_the_time_is_said_in_seconds_minutes_or_hours(seconds: float, said: str) -> None:
    # GIVEN a run whose only time is its instances' start
    prediction = predict(
        DEFAULT_SPEC.with_array_size(3),
        CAPACITY,
        objects=300,
        per_object=PerObject({}, "given"),
        container_start=0,
        instance_start=seconds,
    )
    # THEN its makespan is that start, said in the unit that reads best
    assert prediction.makespan_seconds == seconds
    assert format_prediction(prediction)[1].startswith(f"  about {said}: instances ")
    assert prediction.assumptions[0] == "per object: no time (given)"


def test_a_given_time_per_object_counts_for_the_stages_only() -> None:
    per_object = given_per_object(0, DEFAULT_SPEC)
    assert per_object.seconds == {"JobB": 0, "JobC": 0}
    assert per_object.source == (
        "given for each of JobB and JobC; the other jobs' work not counted"
    )
    assert given_per_object(0.5, DEFAULT_SPEC).seconds == {"JobB": 0.5, "JobC": 0.5}


@pytest.mark.parametrize("seconds", [-1.0, -0.001, math.inf, math.nan])
def test_a_given_time_per_object_is_finite_and_not_negative(seconds: float) -> None:
    with pytest.raises(SpecError) as raised:
        given_per_object(seconds, DEFAULT_SPEC)
    assert str(raised.value) == (
        f"seconds_per_object must be a finite number of 0 or more; got {seconds}"
    )
    assert raised.value.field == "seconds_per_object"


def test_a_measured_time_per_object_needs_one_object_processed() -> None:
    # GIVEN a run that processed one object in 1.5 s of JobB
    measured = measured_per_object(
        {"objects": {"processed": 1}, "seconds_by_job": {"JobB": 1.5}}, "r1"
    )
    # THEN that is its time per object, and where it comes from is said in full
    assert measured.seconds == {"JobB": 1.5}
    assert measured.source == (
        "measured by local run r1 (1 object; each job's seconds over them), assumed the same on AWS"
    )
    # and a run that processed none (or has no count) measured nothing
    for summary in ({"objects": {"processed": 0}}, {}):
        with pytest.raises(SpecError) as raised:
            measured_per_object(summary, "r2")
        assert str(raised.value) == (
            "estimate_from: run r2 processed no object, so it measured no time per object; give "
            "a run that processed some, or seconds_per_object"
        )
        assert raised.value.field == "estimate_from"


def test_the_input_of_a_summary_without_counts_is_what_it_lists() -> None:
    assert input_objects({"objects": {"listed": 5}}) == 5
    assert input_objects({"objects": {"listed": 5}, "rejects_by_stage": {"listing": None}}) == 5
    assert input_objects({}) == 0


def test_a_run_on_the_default_deployment_is_sized_to_its_input() -> None:
    per_object = given_per_object(2, DEFAULT_SPEC)
    # WHEN 300 objects are predicted on the defaults, at the default and at 30 per child
    default = on_default_deployment(DEFAULT_SPEC, objects=300, per_object=per_object)
    thirty = on_default_deployment(DEFAULT_SPEC, objects=300, per_object=per_object, per_child=30)
    # THEN the runs have 3 and 10 children, on the default compute environments
    assert (default.size, thirty.size) == (3, 10)
    assert default == predict(
        DEFAULT_SPEC.with_array_size(3), default_capacity(), objects=300, per_object=per_object
    )
    assert thirty == predict(
        DEFAULT_SPEC.with_array_size(10), default_capacity(), objects=300, per_object=per_object
    )
    # and a large input is capped at the deployed size
    large = on_default_deployment(DEFAULT_SPEC, objects=2_000_000, per_object=per_object)
    assert large.size == 10_000
