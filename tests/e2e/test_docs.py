"""Every code block of the README and the docs runs as written.

Bash blocks run with ``bash -euo pipefail`` and Python blocks with this interpreter, in a
sandbox: a copy of the repository's app (``app.py``, ``cdk.json``, the package) with its
virtualenv and aws-cdk CLI, a state folder of its own for local runs, and, for the commands
that name a deployed stack, a stand-in for AWS: the local services with the pipeline deployed
on them, and a CloudFormation stack ``ArrayJobPipeline`` whose document names those resources
(``AWS_ENDPOINT_URL`` points at them, as it would at a real endpoint).

The README's first block, the two commands, is run by CI itself (``.ci/run`` runs
``scripts/dev test``) and by ``tests/e2e/test_pip_users.py`` (``scripts/dev local`` on a fresh
checkout); mermaid blocks are diagrams, checked to be flowcharts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.cli import served
from helpers.paths import REPO

pytestmark = pytest.mark.slow

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
TWO_COMMANDS = "scripts/dev local"


def blocks() -> list[tuple[str, str, str]]:
    """(id, language, code) of every fenced block of the README and the docs."""
    found = []
    for page in PAGES:
        for number, match in enumerate(FENCE.finditer(page.read_text()), start=1):
            language, code = match.group(1), match.group(2)
            found.append((f"{page.relative_to(REPO)}#{number}", language, code))
    return found


BLOCKS = blocks()


def test_every_block_has_a_language_this_test_knows() -> None:
    unknown = [(where, language) for where, language, _ in BLOCKS if language not in LANGUAGES]
    assert unknown == []


def test_the_readme_is_a_users_guide_of_at_most_300_lines() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 300


def test_every_page_the_readme_links_exists() -> None:
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(((?!https?:)[^)#]+)", readme)
    assert links
    missing = [link for link in links if not (REPO / link).exists()]
    assert missing == []


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    root = tmp_path_factory.mktemp("sandbox")
    for name in ("app.py", "cdk.json", "package.json"):
        shutil.copy(REPO / name, root / name)
    for name in ("pipeline", "job_images", "examples"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in (".venv", "node_modules"):
        (root / name).symlink_to(REPO / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PIPELINE_LOCAL_STATE_DIR=str(root / "state"),
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
        AWS_CONFIG_FILE=str(root / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(root / "none"),
    )
    with served(root, env) as ready:
        env.update(
            AWS_ENDPOINT_URL=ready["endpoint"],
            AWS_DEFAULT_REGION=ready["region"],
            **ready["credentials"],
        )
        _stand_in_stack(ready["endpoint"], ready["credentials"])
        yield root, env


def _stand_in_stack(endpoint: str, credentials: dict[str, str]) -> None:
    """A stack named ArrayJobPipeline whose PipelineDocument output names the local services'
    pipeline: what `npx cdk deploy` would leave in an account."""
    import boto3

    from helpers.batch import stack_template
    from pipeline.local.deployment import local_document

    document = local_document()
    cloudformation = boto3.client(
        "cloudformation",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
    )
    cloudformation.create_stack(
        StackName="ArrayJobPipeline",
        TemplateBody=stack_template(
            document.queue, dict(document.job_definitions), document=document.as_json()
        ),
    )


def _run(command: list[str], sandbox: tuple[Path, dict[str, str]]) -> Any:
    root, env = sandbox
    return subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def run_bash(code: str, sandbox: tuple[Path, dict[str, str]]) -> Any:
    return _run(["bash", "-euo", "pipefail", "-c", code], sandbox)


def run_python(code: str, sandbox: tuple[Path, dict[str, str]]) -> Any:
    return _run([sys.executable, "-c", code], sandbox)


def check_dockerfile(code: str, sandbox: tuple[Path, dict[str, str]]) -> Any:
    """No Docker engine here: the instructions are Dockerfile's, it starts FROM a Python
    image and ends as the uid the job definitions run as."""
    instructions = [line.split()[0] for line in code.splitlines() if line.strip()]
    known = {"FROM", "ENV", "WORKDIR", "RUN", "COPY", "USER", "ARG", "LABEL", "CMD"}
    ok = (
        set(instructions) <= known
        and instructions[0] == "FROM"
        and code.split()[1].startswith("python:")
        and code.rstrip().endswith("USER 10001")
    )
    return subprocess.CompletedProcess([], 0 if ok else 1, "", code)


LANGUAGES = {
    "bash": run_bash,
    "python": run_python,
    "dockerfile": check_dockerfile,
    "mermaid": None,
}


@pytest.mark.parametrize(
    ("language", "code"),
    [(language, code) for _, language, code in BLOCKS],
    ids=[where for where, _, _ in BLOCKS],
)
def test_the_block_runs_as_written(
    language: str, code: str, sandbox: tuple[Path, dict[str, str]]
) -> None:
    if language == "mermaid":
        assert code.startswith("flowchart ")
        return
    if code.startswith(TWO_COMMANDS):
        pytest.skip("the two commands: CI runs scripts/dev test; test_pip_users runs the other")
    result = LANGUAGES[language](code, sandbox)  # type: ignore[misc]
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
