"""What a run is expected to take and cost on its compute environments: a prediction for its
size and input, beside the dry run's worst case (every child to its timeout, every attempt).

:func:`predict` is the arithmetic, pure. For each job of the pipeline:

- a child's time is a container's start (:data:`pipeline.spec.CONTAINER_START_SECONDS`)
  plus its objects times the seconds one object takes in that job. The jobs that scale with
  the input (JobB, JobC) give each child ``ceil(objects / children)`` objects; a job of
  fixed size shares the objects among its children (JobD's ten checks); a standard job
  (JobA, JobE) has them all;
- children run ``at_once`` at a time (the capacity sizing: :mod:`pipeline.runs.sizing`;
  SEQUENTIAL children one at a time), so a job takes ``waves x child time``;
- a job N_TO_N on another (JobC on JobB) starts child *i* when child *i* of the other ends,
  so the two take ``max(waves_B x t_B + t_C, t_B + waves_C x t_C)`` together;
- jobs chained by a standard dependency run one after another, after the first instances
  start (:data:`pipeline.spec.INSTANCE_START_SECONDS`, once).

The cost is every child's time (start included) in vCPU-hours, and priced at the cheapest
instance type of the capacity that fits the job, for the job's share of it. Every
assumption is returned with the figures (:attr:`Prediction.assumptions`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.batch_facts import DependencyType
from pipeline.errors import SpecError
from pipeline.instances import PRICE_DATE, PRICE_REGION, cheapest_fit
from pipeline.runs.autosize import choose_size
from pipeline.runs.sizing import Capacity, default_capacity, sizing
from pipeline.spec import (
    CONTAINER_START_SECONDS,
    DEFAULT_ARRAY_SIZE,
    INSTANCE_START_SECONDS,
    OBJECTS_PER_CHILD,
    PipelineSpec,
)


class PredictionError(Exception):
    """A prediction cannot be made (the capacity is not known, a job fits nowhere); the
    message says why."""


@dataclass(frozen=True)
class PerObject:
    """Seconds one object takes in each job (a job left out: none), and where they come from."""

    seconds: Mapping[str, float]
    source: str
    """For the assumptions: ``given`` or ``measured by local run X (...)``."""
    notes: tuple[str, ...] = ()
    """What else to know of them (a local run of other steps)."""


def given_per_object(seconds: float, spec: PipelineSpec) -> PerObject:
    """``seconds`` per object in each job that runs a step on every object (JobB's CPU step,
    JobC's memory step); the other jobs' work is not counted."""
    if not math.isfinite(seconds) or seconds < 0:
        raise SpecError(
            f"seconds_per_object must be a finite number of 0 or more; got {seconds}",
            field="seconds_per_object",
        )
    stages = [job.key for job in spec if job.scales_with_input]
    return PerObject(
        {key: seconds for key in stages},
        f"given for each of {' and '.join(stages)}; the other jobs' work not counted",
    )


def measured_per_object(summary: Mapping[str, Any], run_id: str) -> PerObject:
    """Seconds per object from a run's summary (``seconds_by_job``: each job's seconds,
    summed over its children, as the step runner measured them), over the objects it
    processed."""
    processed = int((summary.get("objects") or {}).get("processed") or 0)
    if processed < 1:
        raise SpecError(
            f"estimate_from: run {run_id} processed no object, so it measured no time per "
            "object; give a run that processed some, or seconds_per_object",
            field="estimate_from",
        )
    seconds = {
        str(k): float(v) / processed for k, v in (summary.get("seconds_by_job") or {}).items()
    }
    return PerObject(
        seconds,
        f"measured by local run {run_id} ({processed:,} "
        f"object{'' if processed == 1 else 's'}; each job's seconds over them), "
        "assumed the same on AWS",
    )


def input_objects(summary: Mapping[str, Any]) -> int:
    """The objects of a finished run's input that JobA put in shards: those listed, less
    those it rejected."""
    listed = int((summary.get("objects") or {}).get("listed") or 0)
    return listed - int((summary.get("rejects_by_stage") or {}).get("listing") or 0)


@dataclass(frozen=True)
class JobPrediction:
    key: str
    children: int
    at_once: int
    waves: int
    child_seconds: float
    """One child, its container's start included (the fullest child of a stage)."""
    span_seconds: float
    """What the job adds to the run's time."""
    busy_seconds: float
    """Every child's time, starts included: what is paid for."""
    vcpus: float
    usd_per_hour: float | None
    """One child's hour on the cheapest fitting instance type (None: no price known)."""
    instance_type: str | None = None

    @property
    def vcpu_hours(self) -> float:
        return self.busy_seconds / 3600 * self.vcpus

    @property
    def usd(self) -> float | None:
        if self.usd_per_hour is None:
            return None
        return self.busy_seconds / 3600 * self.usd_per_hour

    def as_json(self) -> dict[str, Any]:
        return {
            "job": self.key,
            "children": self.children,
            "atOnce": self.at_once,
            "waves": self.waves,
            "childSeconds": round(self.child_seconds, 3),
            "spanSeconds": round(self.span_seconds, 3),
            "vcpuHours": round(self.vcpu_hours, 4),
            "usd": None if self.usd is None else round(self.usd, 4),
            "instanceType": self.instance_type,
        }


@dataclass(frozen=True)
class Prediction:
    size: int
    objects: int
    capacity: str
    instance_start_seconds: float
    jobs: tuple[JobPrediction, ...]
    assumptions: tuple[str, ...]

    @property
    def makespan_seconds(self) -> float:
        return self.instance_start_seconds + sum(job.span_seconds for job in self.jobs)

    @property
    def vcpu_hours(self) -> float:
        return sum(job.vcpu_hours for job in self.jobs)

    @property
    def usd(self) -> float | None:
        costs = [job.usd for job in self.jobs]
        return None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)

    def as_json(self) -> dict[str, Any]:
        usd = self.usd
        return {
            "arraySize": self.size,
            "objects": self.objects,
            "capacity": self.capacity,
            "makespanSeconds": round(self.makespan_seconds, 3),
            "vcpuHours": round(self.vcpu_hours, 4),
            "usd": None if usd is None else round(usd, 4),
            "jobs": [job.as_json() for job in self.jobs],
            "assumptions": list(self.assumptions),
        }


def predict(
    spec: PipelineSpec,
    capacity: Capacity,
    *,
    objects: int,
    per_object: PerObject,
    container_start: float = CONTAINER_START_SECONDS,
    instance_start: float = INSTANCE_START_SECONDS,
) -> Prediction:
    """The expected time and cost of a run of ``spec`` (its array size) on ``objects``
    inputs, on ``capacity``; :class:`PredictionError` when the capacity is not known or a job
    fits none of it."""
    if capacity.cores is not None or not capacity.environments:
        raise PredictionError(f"capacity unknown ({capacity.description})")
    arrays = {s.key: s for s in sizing(spec, capacity)}
    types = [t for e in capacity.environments for t in e.instance_types]
    priced = not any(e.unknown_types or not e.instance_types for e in capacity.environments)
    shard = math.ceil(objects / spec.array_size)  # the fullest child's share, if even
    jobs: list[JobPrediction] = []
    for job in spec:
        work = per_object.seconds.get(job.key, 0.0)
        children = job.array_size or 1
        if job.key in arrays:
            at_once = arrays[job.key].at_once
        else:  # a standard job: one container, if it fits
            at_once = min(capacity.at_once(job.vcpus, job.memory_mib), 1)
        if at_once < 1:
            raise PredictionError(f"{job.key} fits no instance type of {capacity.description}")
        at_once = min(at_once, children)
        mine = shard if job.scales_with_input else objects / children
        child = container_start + mine * work
        waves = math.ceil(children / at_once)
        span = waves * child
        paired = next((d.on for d in job.depends_on if d.type is DependencyType.N_TO_N), None)
        before = next((j for j in jobs if j.key == paired), None)
        if before is not None:
            # N_TO_N: child i starts as child i of the other job ends.
            together = max(before.span_seconds + child, before.child_seconds + span)
            span = together - before.span_seconds
        best = cheapest_fit(types, job.vcpus, job.memory_mib) if priced else None
        jobs.append(
            JobPrediction(
                key=job.key,
                children=children,
                at_once=at_once,
                waves=waves,
                child_seconds=child,
                span_seconds=span,
                busy_seconds=children * container_start + objects * work,
                vcpus=job.vcpus,
                usd_per_hour=None
                if best is None
                else best.child_usd_per_hour(job.vcpus, job.memory_mib),
                instance_type=None if best is None else best.name,
            )
        )
    return Prediction(
        size=spec.array_size,
        objects=objects,
        capacity=capacity.description,
        instance_start_seconds=instance_start,
        jobs=tuple(jobs),
        assumptions=_assumptions(spec, per_object, container_start, instance_start, priced),
    )


def on_default_deployment(
    spec: PipelineSpec,
    *,
    objects: int,
    per_object: PerObject,
    per_child: int = OBJECTS_PER_CHILD,
) -> Prediction:
    """:func:`predict` for a run of ``objects`` inputs on a pipeline deployed with the
    construct's defaults (what a local run of ``spec``'s steps would be on AWS): sized to
    its input, at most :data:`~pipeline.spec.DEFAULT_ARRAY_SIZE` children, on the default
    compute environments."""
    size = choose_size(objects, deployed=DEFAULT_ARRAY_SIZE, per_child=per_child).size
    return predict(
        spec.with_array_size(size), default_capacity(), objects=objects, per_object=per_object
    )


def _assumptions(
    spec: PipelineSpec,
    per_object: PerObject,
    container_start: float,
    instance_start: float,
    priced: bool,
) -> tuple[str, ...]:
    times = ", ".join(
        f"{job.key} {per_object.seconds[job.key]:.3g} s"
        for job in spec
        if per_object.seconds.get(job.key)
    )
    stages = " and ".join(job.key for job in spec if job.scales_with_input)
    return (
        f"per object: {times or 'no time'} ({per_object.source})",
        *per_object.notes,
        f"a child's container starts in {container_start:g} s and the first instances in "
        f"{instance_start:g} s (assumptions: AWS documents neither)",
        f"{stages} children get equal numbers of objects (JobA balances bytes, not counts)",
        "each job alone on the capacity, as many children at once as it holds; no other "
        "jobs on the queue, no retries, no Spot reclaims",
        f"each child's time priced at its share of the cheapest instance type that fits it "
        f"({PRICE_REGION} Linux On-Demand prices of {PRICE_DATE}), no idle instance time"
        if priced
        else "no prices for the capacity's instance types: the cost in vCPU-hours only",
    )


def format_prediction(prediction: Prediction) -> list[str]:
    """The prediction in a few lines: the time, the cost, then every assumption."""
    parts = [f"instances {prediction.instance_start_seconds:,.0f} s"]
    for job in prediction.jobs:
        waves = f"{job.waves:,} wave{'s' * (job.waves != 1)} of {job.child_seconds:,.0f} s"
        parts.append(f"{job.key} {job.span_seconds:,.0f} s ({waves})")
    usd = prediction.usd
    cost = f"{prediction.vcpu_hours:,.2f} vCPU-hours" + (
        f", ~${usd:,.2f}" if usd is not None else ""
    )
    return [
        f"prediction (array size {prediction.size:,}, {prediction.objects:,} objects, on "
        f"{prediction.capacity}):",
        f"  about {_duration(prediction.makespan_seconds)}: {', '.join(parts)}",
        f"  about {cost}",
        *(f"  assuming {line}" for line in prediction.assumptions),
    ]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:,.0f} min"
    return f"{seconds / 3600:,.1f} h"
