"""The whole pipeline with these steps: on this machine (``--local``), and synthesized."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_sample_logs_run_through_the_pipeline_locally(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PIPELINE_LOCAL_STATE_DIR"] = str(tmp_path / "state")
    command = ["run", "--local", "--steps", "access_logs.steps:STEPS", "--input", "sample_logs"]
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.submit",
            *command,
            "--output",
            str(tmp_path / "out"),
            "--json",
        ],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    result = json.loads(finished.stdout)
    summary = result["local"]["summary"]
    logs = sorted(
        str(p.relative_to(PROJECT / "sample_logs")) for p in PROJECT.glob("sample_logs/*/*")
    )
    # every input accounted for: five logs processed, the notes rejected by the memory step
    assert summary["objects"] == {"listed": len(logs), "processed": 5, "rejected": 1}
    assert [c["passed"] for c in summary["checks"]] == [True] * 10
    assert summary["aggregate"]["step"] == "access_logs.steps:totals"
    assert summary["aggregate"]["result"]["logs"] == 5
    copied = Path(result["local"]["copiedTo"])
    (reject,) = json.loads((copied / "rejects.json").read_text())["rejects"]
    assert reject["key"] == "www/rotation-notes.txt"
    assert reject["stage"] == "memory"
    assert "no Common Log Format line in it" in reject["reason"]
    report = json.loads((copied / "outputs" / "shop" / "access-2026-11-27.log").read_text())
    assert report["log"] == "shop/access-2026-11-27.log"
    assert report["requests"] == len(
        (PROJECT / "sample_logs/shop/access-2026-11-27.log").read_text().splitlines()
    )


@pytest.mark.slow
def test_the_app_synthesizes_the_steps_and_their_image(tmp_path: Path) -> None:
    import importlib.util

    import aws_cdk as cdk

    spec = importlib.util.spec_from_file_location("access_logs_app", PROJECT / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = cdk.App(outdir=str(tmp_path))
    stack = module.build(app)
    template = app.synth().get_stack_by_name(stack.stack_name).template
    definitions = {
        r["Properties"]["JobDefinitionName"]: r["Properties"]["ContainerProperties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Batch::JobDefinition"
    }
    job_b = definitions["logs-JobB-CPU-Intensive-Processing"]
    variables = {e["Name"]: e["Value"] for e in job_b["Environment"]}
    assert json.loads(variables["PIPELINE_STEP"])["target"] == "gzip -9 -c {input} > {output}"
    assert {"Type": "VCPU", "Value": "4"} in job_b["ResourceRequirements"]
    images = {name: json.dumps(c["Image"]) for name, c in definitions.items()}
    # JobB, JobC, JobE and JobD (which runs the project's check) run the project's image; JobA
    # keeps the library's
    own = images["logs-JobB-CPU-Intensive-Processing"]
    assert images["logs-JobC-Memory-Intensive-Processing"] == own
    assert images["logs-JobE-Cleanup-and-Notification"] == own
    assert images["logs-JobD-Sequential-Validation"] == own
    assert images["logs-JobA-list-and-validate"] != own
    contexts = list(tmp_path.glob("job-image-context.*/code/access_logs/steps.py"))
    assert len(contexts) == 1
    # the steps need nothing beyond the standard library and this library: no requirements
    assert (contexts[0].parents[2] / "steps-requirements.txt").read_text() == ""
    document = json.dumps(template["Outputs"]["PipelineDocument"]["Value"])
    assert "access_logs.steps:summarise" in document
