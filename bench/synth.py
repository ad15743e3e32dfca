"""How much slower is synthesizing PipelineStack than synthesizing an empty CDK app?

Both are measured side by side in this run, each in fresh interpreters (what `npx cdk synth`
pays: Python start, aws-cdk-lib import, jsii runtime start, synthesis), with the same cdk.json
context (feature flags), several rounds, alternating, and compared by median. Prints the
ratio; the goal is <= 1.5.

    .venv/bin/python bench/synth.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

EMPTY_APP = """
import json, aws_cdk as cdk
context = json.load(open({cdk_json!r}))["context"]
app = cdk.App(context=context, outdir={outdir!r})
# One placeholder resource: with the current feature flags a stack without any resource
# fails CloudFormation validation.
cdk.CfnWaitConditionHandle(cdk.Stack(app, "Empty"), "Nothing")
app.synth()
"""

PIPELINE_APP = """
import json, aws_cdk as cdk
from pipeline.stacks import PipelineStack
context = json.load(open({cdk_json!r}))["context"]
app = cdk.App(context=context, outdir={outdir!r})
PipelineStack(app, "ArrayJobPipeline")
app.synth()
"""


def _time(code: str, validation: bool) -> float:
    with tempfile.TemporaryDirectory() as outdir:
        source = code.format(outdir=outdir, cdk_json=str(REPO / "cdk.json"))
        env = {
            **os.environ,
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
            "CDK_VALIDATION": "true" if validation else "false",
        }
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", source], cwd=REPO, env=env, check=True, capture_output=True
        )
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    # aws-cdk-lib validates every template against CloudFormation rules on synth unless
    # CDK_VALIDATION=false; that check costs about 2 s even for an empty stack, so both settings
    # are measured, each side by side.
    for validation in (True, False):
        _time(EMPTY_APP, validation)  # warm the OS file cache for both, unmeasured
        _time(PIPELINE_APP, validation)
        empty, pipeline = [], []
        for _ in range(rounds):
            empty.append(_time(EMPTY_APP, validation))
            pipeline.append(_time(PIPELINE_APP, validation))
        e, p = statistics.median(empty), statistics.median(pipeline)
        label = "built-in CloudFormation validation " + ("on (default)" if validation else "off")
        print(f"{label}:")
        print(f"  empty app synth:     median {e:.2f} s over {rounds} runs")
        print(f"  PipelineStack synth: median {p:.2f} s over {rounds} runs")
        print(f"  ratio PipelineStack / empty app: {p / e:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
