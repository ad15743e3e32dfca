"""The README's own-app example is a whole project: written from the README into an empty
folder outside the repository (the steps module, ``requirements.txt``, ``cdk.json``,
``app.py``) and synthesized there with the aws-cdk CLI, as a user would, it makes a stack whose
``PipelineDocument`` output ``--stack`` reads and whose jobs run the steps in their image."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import REPO

pytestmark = pytest.mark.slow

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _readme_block(containing: str) -> str:
    found = [
        code for _, code in FENCE.findall((REPO / "README.md").read_text()) if containing in code
    ]
    assert len(found) == 1, f"the README has {len(found)} blocks with {containing!r}"
    return found[0]


def test_the_readmes_own_app_project_synthesizes_outside_the_repository(tmp_path: Path) -> None:
    # GIVEN an empty folder outside the repository with the CDK CLI at hand (as a project's
    # package.json and node_modules give it), and the README's steps module written there
    assert not tmp_path.is_relative_to(REPO)
    (tmp_path / "package.json").write_text((REPO / "package.json").read_text())
    (tmp_path / "node_modules").symlink_to(REPO / "node_modules")
    steps = _readme_block("cat > mysteps.py").split("python -m pipeline.submit")[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"] = "20"

    def bash(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    assert bash(steps).returncode == 0
    # WHEN the README's own-app block runs there as written
    result = bash(_readme_block("words-app"))
    # THEN it synthesizes, from a project of exactly those files
    assert result.returncode == 0, result.stderr[-3000:]
    project = tmp_path / "words-app"
    files = {p.name for p in project.iterdir() if p.is_file()}
    assert files == {"app.py", "cdk.json", "mysteps.py", "requirements.txt"}
    template = json.loads((project / "cdk.out" / "Words.template.json").read_text())
    # AND the stack has the output --stack reads
    assert "PipelineDocument" in template["Outputs"]
    # AND JobB runs the CPU step, in an image whose context holds the steps' code
    definitions = {
        key: resource["Properties"]["ContainerProperties"]
        for key, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Batch::JobDefinition"
    }
    (job_b,) = [c for k, c in definitions.items() if "JobB" in k]
    step = next(e["Value"] for e in job_b["Environment"] if e["Name"] == "PIPELINE_STEP")
    assert json.loads(step)["target"] == "mysteps:words"
    contexts = list((project / "cdk.out").glob("asset.*/code/mysteps.py"))
    assert contexts
