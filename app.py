#!/usr/bin/env python3
"""CDK app: one PipelineStack, configured from cdk.json context (override with ``-c``).

npx cdk synth
npx cdk deploy -c pipeline:namePrefix=dev -c pipeline:arraySize=100
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

try:
    import aws_cdk as cdk
except ModuleNotFoundError:
    # `npx cdk` runs "python3 app.py" with whatever python3 is first on PATH; if that is not the
    # project's virtualenv, continue in the virtualenv rather than fail on the import.
    venv_python = Path(__file__).resolve().parent / ".venv" / "bin" / "python"
    if venv_python.exists() and Path(sys.executable) != venv_python:
        os.execv(venv_python, [str(venv_python), __file__, *sys.argv[1:]])
    sys.exit(
        "error: aws-cdk-lib is not installed; run `scripts/dev setup` "
        "(or pip install -e '.[dev]', which also brings cdk-nag)"
    )

try:
    from cdk_nag import AwsSolutionsChecks, NIST80053R5Checks
except ModuleNotFoundError:
    sys.exit(
        "error: cdk-nag is not installed (this app registers its policy packs); run "
        "`scripts/dev setup` (or pip install -e '.[dev]')"
    )

from pipeline.errors import PipelineConfigError
from pipeline.stacks import PipelineStack
from pipeline.stacks.context import pipeline_props_from_context


def main() -> None:
    app = cdk.App()
    try:
        props = pipeline_props_from_context(app.node.try_get_context)
        PipelineStack(
            app,
            app.node.try_get_context("pipeline:stackName") or "ArrayJobPipeline",
            pipeline=props,
            env=cdk.Environment(
                account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
                region=os.environ.get("CDK_DEFAULT_REGION"),
            ),
        )
    except PipelineConfigError as error:
        sys.exit(f"error: {error}")
    # The app chooses its policy packs; the construct only carries justified acknowledgements.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), NIST80053R5Checks(app))
    app.synth()


if __name__ == "__main__":
    main()
