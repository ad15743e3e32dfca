"""Shared fixtures. The default PipelineStack and the consumer app are synthesized once per
session: synthesis takes seconds, assertions on the result take milliseconds."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from helpers.paths import REPO
from helpers.synth import Synthesized, add_nag_packs, new_app, synthesize

if TYPE_CHECKING:
    from aws_cdk.assertions import Template

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


@pytest.fixture(scope="session", autouse=True)
def fake_aws_credentials(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Credentials only moto accepts, and none of the user's own AWS configuration, for every
    test (moto's own tests do the same before any client is made)."""
    none = str(tmp_path_factory.mktemp("aws") / "none")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_CONFIG_FILE", none)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", none)
        yield


@pytest.fixture(scope="session", autouse=True)
def no_local_run_folders_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A local run removes its working folder at the end, failed or not; so must every test.
    Each test process (one per pytest-xdist worker) gets a temporary directory of its own,
    for itself and the processes it starts, so what is left there is its own."""
    import tempfile

    own = tmp_path_factory.mktemp("tmp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(own))
        patch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
        yield
        left = sorted(str(p) for p in own.glob("array-pipeline-local-*"))
    assert not left, f"local runs left folders behind: {left}"


@pytest.fixture(scope="session")
def default_stack(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The stack `npx cdk deploy` deploys, with its default props."""
    from pipeline.stacks import PipelineStack

    app = new_app(tmp_path_factory.mktemp("default"), nist=True)
    stack = PipelineStack(app, "ArrayJobPipeline")
    return synthesize(app, stack)


@pytest.fixture(scope="session")
def no_flags_stack(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The same stack in an app with no context at all: none of cdk.json's feature flags, as
    in a consumer's plain ``python app.py`` or an app older than those flags."""
    import aws_cdk as cdk

    from pipeline.stacks import PipelineStack

    app = cdk.App(outdir=str(tmp_path_factory.mktemp("no-flags")))
    add_nag_packs(app)
    stack = PipelineStack(app, "ArrayJobPipeline")
    return synthesize(app, stack)


@pytest.fixture(scope="session")
def template(default_stack: Synthesized) -> Template:
    """aws_cdk.assertions.Template of the default stack (built once)."""
    return default_stack.assertions


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The library's wheel, built once (``pip wheel``, no dependencies), from a copy of the
    sources (a build in the checkout would reuse whatever an earlier build left in build/)."""
    import shutil

    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, source / name)
    for folder in ("pipeline", "job_images"):
        shutil.copytree(
            REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("array_job_pipeline-*.whl")
    return built
