"""What a finished local run measured, for predictions on AWS: its summary's seconds per job
(the step runner's own timings, kept in the run's folder once it succeeded) over the objects
it processed, and its input. Read from the run's folder alone: no services are started."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pipeline.errors import SpecError
from pipeline.local.run_folder import RunFolder
from pipeline.runs.prediction import PerObject, measured_per_object
from pipeline.steps import DEFAULT_STEPS, PipelineSteps, describe_steps


def saved_summary(run_id: str) -> Mapping[str, Any] | None:
    """The summary a local run kept when it succeeded; None when it has none (it has not
    succeeded, or its summary cannot be read)."""
    try:
        summary = json.loads(RunFolder.of(run_id).summary_file.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def saved_per_object(run_id: str, steps: PipelineSteps) -> PerObject:
    """Seconds per object as local run ``run_id`` measured them, for a pipeline running
    ``steps``; :class:`SpecError` naming ``estimate_from`` when the run is not saved or has
    no summary. A run of other steps is said beside the figures."""
    folder = RunFolder.of(run_id)
    if not folder.holds_a_run():
        raise SpecError(
            f"estimate_from: no local run {run_id!r} in {folder.path.parent}; `status --local` "
            "lists them",
            field="estimate_from",
        )
    summary = saved_summary(run_id)
    if summary is None:
        raise SpecError(
            f"estimate_from: local run {run_id} has no summary (it has not succeeded), so it "
            "measured no time per object; give one that succeeded, or seconds_per_object",
            field="estimate_from",
        )
    measured = measured_per_object(summary, run_id)
    theirs = _saved_steps(folder)
    if theirs != steps:
        note = (
            f"run {run_id} ran other steps ({describe_steps(theirs)}) than this pipeline "
            f"({describe_steps(steps)}): its times may not be this pipeline's"
        )
        measured = replace(measured, notes=(*measured.notes, note))
    return measured


def _saved_steps(folder: RunFolder) -> PipelineSteps:
    from pipeline.local.deployment import saved_steps

    saved = saved_steps(folder)  # a damaged file is a LocalError, as for any use of the run
    return saved[0] if saved is not None else DEFAULT_STEPS
