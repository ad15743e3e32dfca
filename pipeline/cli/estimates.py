"""A new run's size and prediction, as the command line says them: the listing that sizes a
run to its input, the size line of the dry run and of pre-flight, and the prediction from
``--estimate-from RUN_ID`` or ``--seconds-per-object S``."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from pipeline.errors import SpecError
from pipeline.runs import engine

if TYPE_CHECKING:
    from pipeline.backends import Backend, RunSession
    from pipeline.cli.parser import Options
    from pipeline.document import PipelineDocument
    from pipeline.runs.prediction import PerObject, Prediction
    from pipeline.runs.requests import RunConfig, RunInputs
    from pipeline.spec import PipelineSpec


def per_object(options: Options, spec: PipelineSpec) -> PerObject | None:
    """The time per object a prediction is made from: given, or measured by a saved local
    run (read from its folder); None when neither was asked for."""
    from pipeline.runs.prediction import given_per_object

    if options.seconds_per_object is not None:
        return given_per_object(options.seconds_per_object, spec)
    if options.estimate_from is not None:
        from pipeline.backends.local_timings import saved_per_object

        return saved_per_object(options.estimate_from, spec.steps)
    return None


def dry_run(
    options: Options, backend: Backend, document: PipelineDocument, inputs: RunInputs
) -> engine.DryRun:
    """The dry run of ``inputs``: sized to the input when no size is given (or counted for a
    prediction), as far as the backend can count it without starting anything."""
    timing = per_object(options, document.spec)
    listing = None
    if inputs.array_size is None or timing is not None:
        listing = backend.dry_run_listing(document, inputs)
    if listing is not None:
        inputs = replace(inputs, input_objects=listing.objects)
    config = engine.plan_run(document, inputs, max_vcpu_hours=options.max_vcpu_hours)
    return engine.dry_run(
        document,
        config,
        backend.dry_run_capacity(document),
        per_object=timing,
        objects=listing.objects if listing is not None else None,
    )


def sized(options: Options, session: RunSession, inputs: RunInputs) -> RunInputs:
    """``inputs`` with the run's input counted (listed through the session) when the run is
    sized to it. A trigger lists its own prefix, as the deployed starter does."""
    if options.local_options.trigger is not None:
        return inputs
    return engine.sized_to_input(session.input_lister(), session.document, inputs)[0]


def checked_size(options: Options, config: RunConfig) -> str:
    """Pre-flight's words for the run's size and why (said as it is submitted; empty for a
    trigger's run, which the trigger sizes). An injected fault naming a child that a run
    sized to its input does not have is refused."""
    if options.local_options.trigger is not None or config.size is None:
        return ""
    if options.inputs.array_size is None:  # a size given was checked before anything started
        from pipeline.local.batch.faults import InjectedFault

        for text in options.local_options.inject:
            injected = InjectedFault.parse(text)
            scales = injected.job in {job.key for job in config.spec if job.scales_with_input}
            if scales and injected.index is not None and injected.index >= config.array_size:
                raise SpecError(
                    f"--inject {text!r}: {injected.job} has children 0 to "
                    f"{config.array_size - 1} in this run (sized to its input); give "
                    "--array-size to choose its size"
                )
    return config.size.describe()


def local_prediction(run_id: str, spec: PipelineSpec) -> Prediction | None:
    """A finished local run's input as a pipeline deployed with the construct's defaults
    would run it, from the times per object the run measured (None: it has no summary, so
    it measured none)."""
    from pipeline.backends.local_timings import saved_summary
    from pipeline.runs.prediction import (
        PredictionError,
        input_objects,
        measured_per_object,
        on_default_deployment,
    )

    summary = saved_summary(run_id)
    if summary is None or not (summary.get("objects") or {}).get("processed"):
        return None
    try:
        return on_default_deployment(
            spec, objects=input_objects(summary), per_object=measured_per_object(summary, run_id)
        )
    except PredictionError:  # steps whose resources no default instance type fits
        return None
