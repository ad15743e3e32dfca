#!/usr/bin/env python3
"""The access-log pipeline on AWS: the library's pipeline running this project's steps, in an
image with the library and the ``access_logs`` package.

    npx cdk deploy              # from this folder
    python -m pipeline.submit run --stack AccessLogs --steps access_logs.steps:STEPS
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk

from access_logs.steps import STEPS
from pipeline import PipelineStack, job_image

HERE = Path(__file__).resolve().parent


def build(app: cdk.App) -> PipelineStack:
    # No requirements= and no system_packages=: the steps import only the standard library and
    # this library (synthesis reads their imports and would refuse another module), and the
    # CPU step's gzip is in every Debian image.
    image = job_image(app, code=[HERE / "access_logs"])
    return PipelineStack(
        app,
        "AccessLogs",
        pipeline={"name_prefix": "logs", "array_size": 100, "steps": STEPS.with_image(image)},
    )


if __name__ == "__main__":
    app = cdk.App()
    build(app)
    app.synth()
