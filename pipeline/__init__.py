"""Deploy and run the AWS Batch example array-job workflow from Python.

``ArrayJobPipeline`` and ``PipelineStack`` load aws-cdk-lib on first use only, so the
submitter and the job programs, which need just :mod:`pipeline.spec`, start quickly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.batch_facts import DependencyType
from pipeline.errors import PipelineConfigError, SpecError
from pipeline.spec import (
    DEFAULT_SPEC,
    RESOURCES,
    Dependency,
    JobSpec,
    PipelineResource,
    PipelineSpec,
)
from pipeline.steps import (
    DEFAULT_STEPS,
    ObjectRef,
    PipelineSteps,
    Step,
    StepRecord,
    TransientStepError,
)

if TYPE_CHECKING:
    from pipeline.constructs import (
        ArrayJobPipeline,
        ArrayJobPipelineProps,
        JobOverride,
        job_image,
    )
    from pipeline.stacks import PipelineStack

__all__ = [
    "DEFAULT_SPEC",
    "DEFAULT_STEPS",
    "RESOURCES",
    "ArrayJobPipeline",
    "ArrayJobPipelineProps",
    "Dependency",
    "DependencyType",
    "JobOverride",
    "JobSpec",
    "ObjectRef",
    "PipelineConfigError",
    "PipelineResource",
    "PipelineSpec",
    "PipelineStack",
    "PipelineSteps",
    "SpecError",
    "Step",
    "StepRecord",
    "TransientStepError",
    "job_image",
]

_LAZY = {
    "ArrayJobPipeline": "pipeline.constructs",
    "ArrayJobPipelineProps": "pipeline.constructs",
    "JobOverride": "pipeline.constructs",
    "job_image": "pipeline.constructs",
    "PipelineStack": "pipeline.stacks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
