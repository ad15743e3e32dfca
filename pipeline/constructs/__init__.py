"""One module per concern, as in aws-cdk-lib's aws-batch: network, compute, storage, jobs, and
the ArrayJobPipeline that composes them."""

from pipeline.constructs.compute import PipelineCompute
from pipeline.constructs.image import job_image
from pipeline.constructs.job_definitions import JobOverride, PipelineJobs
from pipeline.constructs.network import PipelineNetwork
from pipeline.constructs.pipeline import ArrayJobPipeline, ArrayJobPipelineProps
from pipeline.constructs.storage import PipelineStorage

__all__ = [
    "ArrayJobPipeline",
    "ArrayJobPipelineProps",
    "JobOverride",
    "PipelineCompute",
    "PipelineJobs",
    "PipelineNetwork",
    "PipelineStorage",
    "job_image",
]
