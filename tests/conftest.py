"""Shared fixtures. The default PipelineStack and the consumer app are synthesized once per
session: synthesis takes seconds, assertions on the result take milliseconds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from aws_cdk.assertions import Capture, Template

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

REPO = Path(__file__).resolve().parents[1]
CDK_CONTEXT: dict[str, Any] = json.loads((REPO / "cdk.json").read_text())["context"]


@contextmanager
def served(cwd: Path, env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """``python -m pipeline.local serve --with-pipeline`` in a session of its own, in ``cwd``
    with ``env``; yields what it printed when ready (endpoint, region, credentials) and stops
    it on the way out."""
    services = subprocess.Popen(
        [sys.executable, "-m", "pipeline.local", "serve", "--with-pipeline", "--json"],
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert services.stdout is not None
        yield json.loads(services.stdout.readline())
    finally:
        services.terminate()
        services.wait(timeout=60)


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


@dataclass
class Synthesized:
    template: dict[str, Any]
    """The stack's CloudFormation template as a dict."""
    assembly_dir: Path
    stack: Any

    def resources(self, type_: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.template["Resources"].items() if v["Type"] == type_}

    def one(self, type_: str, logical_id_part: str) -> dict[str, Any]:
        found = [v for k, v in self.resources(type_).items() if logical_id_part in k]
        assert len(found) == 1, f"expected one {type_} matching {logical_id_part}: {found}"
        return found[0]

    @cached_property
    def assertions(self) -> Template:
        """The template as an ``aws_cdk.assertions.Template``, built once per stack."""
        from aws_cdk.assertions import Template

        return Template.from_json(self.template)

    def resource(self, logical_id: str) -> Template:
        """A template of the resource ``logical_id`` alone: ``has_resource_properties`` on it
        checks that resource, found by a property that says what it is or by a reference
        followed with a ``Capture``, and none of its siblings."""
        from aws_cdk.assertions import Template

        resource = self.template["Resources"][logical_id]
        # its references lead out of this one-resource template: no dependency order to check
        return Template.from_json(
            {"Resources": {logical_id: resource}}, skip_cyclical_dependencies_check=True
        )


def synthesize(app: Any, stack: Any) -> Synthesized:
    assembly = app.synth()
    artifact = assembly.get_stack_by_name(stack.stack_name)
    return Synthesized(artifact.template, Path(assembly.directory), stack)


def new_app(outdir: Path, *, nist: bool = False, **extra_context: Any) -> Any:
    import aws_cdk as cdk

    app = cdk.App(context={**CDK_CONTEXT, **extra_context}, outdir=str(outdir))
    add_nag_packs(app, nist=nist)
    return app


def add_nag_packs(app: Any, *, nist: bool = True) -> None:
    """As app.py does: any unacknowledged AwsSolutions (and, with ``nist``, NIST 800-53 rev5)
    finding fails synthesis. Apps whose own test resources are not the point (a consumer's
    VPC, a bucket made to fail) register AwsSolutions only."""
    import aws_cdk as cdk
    from cdk_nag import AwsSolutionsChecks, NIST80053R5Checks

    packs = [AwsSolutionsChecks(app), *([NIST80053R5Checks(app)] if nist else [])]
    cdk.Validations.of(app).add_plugins(*packs)


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


def logical_id_of(template: Template, type_: str, properties: Mapping[str, Any]) -> str:
    """The logical ID of the one resource of ``type_`` whose properties match ``properties``
    (a ``has_resource_properties`` pattern saying what the resource is: its name, its
    description, its tag), to follow the references made to it."""
    found = template.find_resources(type_, {"Properties": properties})
    assert len(found) == 1, f"expected one {type_} with those properties, found {sorted(found)}"
    return next(iter(found))


def captured_id(capture: Capture) -> str:
    """The logical ID a ``Capture`` of ``{"Ref": ...}`` or ``{"Fn::GetAtt": [..., attribute]}``
    took. A pattern several resources match (the five job definitions, say) captures once per
    match: they must all reference the same resource."""
    taken = [capture.as_string()]
    while capture.next():
        taken.append(capture.as_string())
    assert len(set(taken)) == 1, f"the matching resources reference different resources: {taken}"
    return taken[0]


def resource_given_to_jobs(template: Template, env: str, name_prefix: str = "") -> str:
    """The logical ID of the bucket, table or topic a pipeline's job definitions name in the
    environment variable ``env`` (``PIPELINE_INPUT_BUCKET``, ...): what tells a job which
    resource is which tells a test too. ``name_prefix`` picks the pipeline whose definition
    names it starts, in a stack of several."""
    from aws_cdk.assertions import Capture, Match

    named = Capture()
    template.has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "JobDefinitionName": (
                Match.string_like_regexp(f"^{re.escape(name_prefix)}-")
                if name_prefix
                else Match.any_value()
            ),
            "ContainerProperties": {
                "Environment": Match.array_with([{"Name": env, "Value": {"Ref": named}}])
            },
        },
    )
    return captured_id(named)


def resolve(value: Any, name: Callable[[str, str | None], str]) -> str:
    """A synthesized output value as CloudFormation resolves it: ``Fn::Join`` of strings,
    ``Ref`` and ``Fn::GetAtt``, each reference named by ``name(logical_id, attribute)``."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return name(value["Ref"], None) if not value["Ref"].startswith("AWS::") else "us-east-1"
    if "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        return name(logical_id, attribute)
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(resolve(part, name) for part in parts)
    if "Fn::Sub" in value:  # an asset image's URI: ${AWS::...} pseudo parameters only
        return re.sub(r"\$\{AWS::(\w+)\}", lambda m: "x" * 20, str(value["Fn::Sub"]))
    if "Fn::Select" in value:
        index, listed = value["Fn::Select"]
        separator, text = listed["Fn::Split"]
        return resolve(text, name).split(separator)[index]
    raise AssertionError(f"cannot resolve {value!r}")


def longest_name(logical_id: str, attribute: str | None) -> str:
    """A reference at the longest length a name of this pipeline's resources can have."""
    base = (logical_id.lower() + "x" * 63)[:63]
    if "Queue" in logical_id:
        return f"arn:aws:batch:ap-southeast-3:123456789012:job-queue/{base}"
    if attribute == "Arn" or "Jobs" in logical_id:
        return f"arn:aws:batch:ap-southeast-3:123456789012:job-definition/{base}:12345"
    return base


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The library's wheel, built once (``pip wheel``, no dependencies), from a copy of the
    sources (a build in the checkout would reuse whatever an earlier build left in build/)."""
    import shutil
    import subprocess

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


CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"


def run_checkov(template: Path) -> dict[str, Any]:
    """checkov's JSON report of a synthesized template (its own virtualenv, see scripts/dev)."""
    import subprocess

    assert CHECKOV.exists(), "checkov is not installed: run scripts/dev setup"
    result = subprocess.run(
        [str(CHECKOV), "-f", str(template), "--framework", "cloudformation", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    return dict(json.loads(result.stdout))
