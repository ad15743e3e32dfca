"""Synthesizing stacks for tests, and reading their templates: apps with the nag packs, a
stack's template as a dict and as ``aws_cdk.assertions.Template``, references followed by
capture, outputs resolved as CloudFormation resolves them, checkov's report."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.paths import CDK_CONTEXT, REPO

if TYPE_CHECKING:
    from aws_cdk.assertions import Capture, Template


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
        return str(resolve(text, name).split(separator)[index])
    raise AssertionError(f"cannot resolve {value!r}")


def longest_name(logical_id: str, attribute: str | None) -> str:
    """A reference at the longest length a name of this pipeline's resources can have."""
    base = (logical_id.lower() + "x" * 63)[:63]
    if "Queue" in logical_id:
        return f"arn:aws:batch:ap-southeast-3:123456789012:job-queue/{base}"
    if attribute == "Arn" or "Jobs" in logical_id:
        return f"arn:aws:batch:ap-southeast-3:123456789012:job-definition/{base}:12345"
    return base


CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"


def run_checkov(template: Path) -> dict[str, Any]:
    """checkov's JSON report of a synthesized template (its own virtualenv, see scripts/dev)."""

    assert CHECKOV.exists(), "checkov is not installed: run scripts/dev setup"
    result = subprocess.run(
        [str(CHECKOV), "-f", str(template), "--framework", "cloudformation", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    return dict(json.loads(result.stdout))
