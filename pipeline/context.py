"""Reads ArrayJobPipeline props from CDK context (cdk.json, ``-c key=value``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_cdk import RemovalPolicy

from pipeline.constructs.pipeline import ArrayJobPipelineProps
from pipeline.errors import PipelineConfigError


def pipeline_props_from_context(get: Callable[[str], Any]) -> ArrayJobPipelineProps:
    """Props from ``pipeline:*`` context keys; empty or missing keys keep the defaults.

    ``-c`` values arrive as strings, cdk.json values as JSON types; both are accepted.
    """
    props: ArrayJobPipelineProps = {}
    if (prefix := get("pipeline:namePrefix")) not in (None, ""):
        props["name_prefix"] = str(prefix)
    if (size := get("pipeline:arraySize")) not in (None, ""):
        props["array_size"] = _int("pipeline:arraySize", size)
    if (vcpus := get("pipeline:maxvCpus")) not in (None, ""):
        props["max_vcpus"] = _int("pipeline:maxvCpus", vcpus)
    if (spot := get("pipeline:spot")) not in (None, ""):
        props["spot"] = _bool("pipeline:spot", spot)
    if email := get("pipeline:notificationEmail"):
        props["notification_email"] = str(email)
    destroy = get("pipeline:destroyDataOnDelete")
    if destroy not in (None, "") and _bool("pipeline:destroyDataOnDelete", destroy):
        props["removal_policy"] = RemovalPolicy.DESTROY
    return props


def _int(key: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PipelineConfigError(f"context {key} must be a whole number; got {value!r}") from None


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise PipelineConfigError(f"context {key} must be true or false; got {value!r}")
