"""The wheel carries everything an installed copy needs to synthesize the default image."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers.paths import REPO

pytestmark = pytest.mark.slow


def test_wheel_contains_the_job_image_build_context(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "pipeline/job_image/Dockerfile",
        "pipeline/job_image/requirements.txt",
        "pipeline/job_image/.dockerignore",
        "pipeline/jobs/job_a.py",
        "pipeline/local/batch/models.py",
        "pipeline/spec.py",
        "pipeline/py.typed",
        "pipeline/constructs/pipeline.py",
        "pipeline/stacks/pipeline_stack.py",
    } <= names
    assert not any(n.startswith("tests/") for n in names)
    # the image ships inside this library's namespace: no generic top-level package
    top_level = {n.split("/")[0] for n in names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"pipeline"}


def test_installed_copy_synthesizes_the_image_asset(wheel: Path, tmp_path: Path) -> None:
    # GIVEN the wheel installed into a bare directory, imported from there (not the checkout)
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    code = (
        "import sys, aws_cdk as cdk\n"
        f"sys.path.insert(0, {str(target)!r})\n"
        "from pipeline.stacks import PipelineStack\n"
        "import pipeline\n"
        f"assert pipeline.__file__.startswith({str(target)!r}), pipeline.__file__\n"
        f"app = cdk.App(outdir={str(tmp_path / 'out')!r})\n"
        "PipelineStack(app, 'Installed')\n"
        "assembly = app.synth()\n"
        "import json, pathlib\n"
        "print(json.dumps([p.name for p in pathlib.Path(assembly.directory).iterdir()"
        " if p.name.startswith('asset.')]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assets = json.loads(result.stdout.strip().splitlines()[-1])
    image_assets = [a for a in assets if (tmp_path / "out" / a / "Dockerfile").exists()]
    assert len(image_assets) == 1
    # the context holds the installed library's job programs, which the Dockerfile copies
    (context,) = image_assets
    assert (tmp_path / "out" / context / "pipeline" / "jobs" / "job_a.py").exists()


def test_the_wheel_lists_every_package() -> None:
    import tomllib

    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "pipeline").rglob("__init__.py")
    }
    assert found | {"pipeline.job_image"} == listed


def test_readme_props_table_lists_every_prop() -> None:
    from pipeline.constructs.pipeline import ArrayJobPipelineProps

    readme = (REPO / "README.md").read_text()
    table = readme.split("| prop | default behaviour |", 1)[1].split("\n\n", 1)[0]
    missing = [p for p in ArrayJobPipelineProps.__annotations__ if f"`{p}`" not in table]
    assert missing == []


def test_readme_attributes_table_lists_what_other_constructs_use() -> None:
    from pipeline.constructs.pipeline import ArrayJobPipeline

    readme = (REPO / "README.md").read_text()
    table = readme.split("| attribute | what it is |", 1)[1].split("\n\n", 1)[0]
    public = [
        name
        for name, value in vars(ArrayJobPipeline).items()
        if not name.startswith("_") and (isinstance(value, property) or callable(value))
    ]
    missing = [name for name in public if f"`{name}" not in table]
    assert missing == []


def test_readme_starts_with_the_two_commands_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == [
        "scripts/dev local",
        "scripts/dev test",
    ]
    assert "bash scripts/dev test" in (REPO / ".ci" / "run").read_text()


def test_the_wheel_installs_the_array_job_pipeline_command(wheel: Path) -> None:
    # GIVEN the wheel's entry points
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(name).decode()
    # THEN it installs `array-job-pipeline`, which runs what `python -m pipeline.submit` does
    assert "[console_scripts]\narray-job-pipeline = pipeline.cli.commands:main\n" in entry_points
    from pipeline import submit
    from pipeline.cli.commands import main

    assert submit.main is main
