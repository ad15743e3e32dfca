"""Stacks built from the pipeline's constructs."""

from pipeline.stacks.pipeline_stack import PipelineStack

__all__ = ["PipelineStack"]
