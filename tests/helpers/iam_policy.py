"""Decide a request against synthesized IAM statements, as IAM's policy evaluation logic does
for one identity policy: an explicit Deny wins, else any matching Allow, else an implicit deny.

Only what the pipeline's statements use is modelled: `*` wildcards in actions and resources,
and the operators StringEquals, StringNotEquals, ForAllValues:StringEquals, Null, ArnEquals and
ArnLike, with IAM's rules for a key the request does not carry ("Condition element" and "IAM
JSON policy elements: Condition operators", IAM User Guide): a positive operator fails, a
negated one holds, ForAllValues holds over an empty set, Null tests presence.

References in statements are resolved by ``arn_of(logical_id)``; pseudo parameters become
``aws``, ``us-east-1`` and ``123456789012``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}

Context = Mapping[str, str | Sequence[str]]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _resolve(value: Any, arn_of: Callable[[str], str]) -> str:
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return PSEUDO.get(value["Ref"]) or arn_of(value["Ref"])
    if "Fn::GetAtt" in value:
        return arn_of(value["Fn::GetAtt"][0])
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_resolve(part, arn_of) for part in parts)
    raise AssertionError(f"cannot resolve {value!r}")


def _holds(operator: str, key: str, wanted: list[str], context: Context) -> bool:
    present = key in context
    if operator == "Null":
        return (not present) == (wanted == ["true"])
    if operator == "ForAllValues:StringEquals":
        return all(value in wanted for value in _as_list(context.get(key, [])))
    if operator == "StringNotEquals":
        return not present or context[key] not in wanted
    if not present:
        return False
    if operator in ("StringEquals", "ArnEquals"):
        return context[key] in wanted
    if operator == "ArnLike":
        return any(fnmatchcase(str(context[key]), pattern) for pattern in wanted)
    raise AssertionError(f"operator {operator} is not modelled")


def decide(
    statements: Sequence[Mapping[str, Any]],
    action: str,
    resource: str,
    context: Context,
    arn_of: Callable[[str], str],
) -> str:
    """``allow``, ``deny`` (an explicit Deny matched) or ``implicit deny``."""
    allowed = False
    for statement in statements:
        if not any(fnmatchcase(action, a) for a in _as_list(statement["Action"])):
            continue
        resources = [_resolve(r, arn_of) for r in _as_list(statement["Resource"])]
        if not any(fnmatchcase(resource, r) for r in resources):
            continue
        conditions = statement.get("Condition", {})
        if not all(
            _holds(operator, key, [str(v) for v in _as_list(values)], context)
            for operator, keys in conditions.items()
            for key, values in keys.items()
        ):
            continue
        if statement["Effect"] == "Deny":
            return "deny"
        allowed = True
    return "allow" if allowed else "implicit deny"


BATCH = "arn:aws:batch:us-east-1:123456789012"


def batch_arns(template: Mapping[str, Any], queue_name: str) -> Callable[[str], str]:
    """``arn_of`` for a template: its queue as ``queue_name``, each job definition as revision
    1 of a definition named by its logical ID."""
    resources = template["Resources"]

    def arn_of(logical_id: str) -> str:
        type_ = resources[logical_id]["Type"]
        if type_ == "AWS::Batch::JobQueue":
            return f"{BATCH}:job-queue/{queue_name}"
        if type_ == "AWS::Batch::JobDefinition":
            return f"{BATCH}:job-definition/{logical_id}:1"
        return f"arn:aws:other:us-east-1:123456789012:{logical_id}"

    return arn_of


def check_job_permissions(
    statements: Sequence[Mapping[str, Any]],
    template: Mapping[str, Any],
    queue_name: str,
    tag: str,
    our_keys: Sequence[str],
    pipeline: str = "",
) -> None:
    """What a submitter's statements allow on Batch jobs, request by request; ``pipeline``
    starts the logical IDs of its job definitions (the template's other definitions are
    another pipeline's)."""
    arn_of = batch_arns(template, queue_name)
    all_definitions = [
        k for k, v in template["Resources"].items() if v["Type"] == "AWS::Batch::JobDefinition"
    ]
    definitions = [k for k in all_definitions if k.startswith(pipeline)]
    assert definitions

    def on(action: str, resource: str, **context: str | Sequence[str]) -> str:
        return decide(statements, action, resource, context, arn_of)

    ours = {f"aws:RequestTag/{tag}": queue_name, "aws:TagKeys": list(our_keys)}
    # SubmitJob: the queue, the deployed revision, and a new job carrying this pipeline's tag
    assert on("batch:SubmitJob", f"{BATCH}:job-queue/{queue_name}", **ours) == "allow"
    for logical_id in definitions:
        assert on("batch:SubmitJob", arn_of(logical_id), **ours) == "allow"
    assert on("batch:SubmitJob", f"{BATCH}:job/new", **ours) == "allow"
    assert on("batch:TagResource", f"{BATCH}:job/new", **ours) == "allow"
    # a later revision of a definition, another queue, a job without the tag: not submittable
    for logical_id in definitions:
        later = arn_of(logical_id).replace(":1", ":2")
        assert on("batch:SubmitJob", later, **ours) == "implicit deny", later
    for logical_id in set(all_definitions) - set(definitions):
        assert on("batch:SubmitJob", arn_of(logical_id), **ours) == "implicit deny", logical_id
    assert on("batch:SubmitJob", f"{BATCH}:job-queue/other", **ours) == "implicit deny"
    assert on("batch:SubmitJob", f"{BATCH}:job/new", **{"aws:TagKeys": []}) == "implicit deny"
    # the re-tag path: another pipeline's job cannot be given this pipeline's tag ...
    other = {f"aws:ResourceTag/{tag}": "other-ProdQueue"}
    assert on("batch:TagResource", f"{BATCH}:job/theirs", **ours, **other) == "deny"
    # ... nor can a tag key outside this library's be set on any job
    foreign_keys = {**ours, "aws:TagKeys": [*our_keys, "owner"]}
    assert on("batch:TagResource", f"{BATCH}:job/any", **foreign_keys) == "implicit deny"
    assert on("batch:SubmitJob", f"{BATCH}:job/new", **foreign_keys) == "implicit deny"
    # stopping reaches this pipeline's jobs only
    for action in ("batch:CancelJob", "batch:TerminateJob"):
        assert on(action, f"{BATCH}:job/mine", **{f"aws:ResourceTag/{tag}": queue_name}) == "allow"
        assert on(action, f"{BATCH}:job/theirs", **other) == "implicit deny"
        assert on(action, f"{BATCH}:job/untagged") == "implicit deny"
    # the documented limit: a job with no pipeline tag at all can be tagged (Batch has no
    # condition key that tells tag-on-create from a later TagResource)
    assert on("batch:TagResource", f"{BATCH}:job/untagged", **ours) == "allow"
