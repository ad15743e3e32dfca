"""The step contract: your work inside the pipeline.

The pipeline is a pattern: list and validate the inputs (JobA), a CPU stage over every object
(JobB), a memory stage over every result (JobC), checks (JobD), and an aggregate (JobE). The work
inside the stages is yours, written as steps:

- the **CPU step** runs once per input object, in JobB's child for the object's shard:
  ``fn(source: Path, target: Path, obj: ObjectRef) -> Mapping | None``. ``source`` is the object,
  staged to local disk; whatever the step writes to ``target`` is kept as its result; the
  mapping it returns (small, JSON) is kept as the object's facts.
- the **memory step** runs once per CPU result, in JobC's child *i* once JobB's child *i* has
  succeeded: ``fn(source: Path, target: Path, obj: ObjectRef) -> Mapping``. ``source`` is the CPU
  step's result; ``target`` is the object's output (BucketC); the mapping it returns becomes the
  attributes of the object's DynamoDB item.
- the **aggregate step** (optional) runs once, in JobE: ``fn(items: Iterable[Mapping]) ->
  Mapping``, each item being the memory step's attributes with ``key`` added; what it returns
  goes into the run's summary.
- **checks** (optional) run in JobD's last check: ``fn(records: Iterable[StepRecord]) ->
  Iterable[str]``, each string a problem found.

A Python step is named ``"package.module:function"``; a command step is a template in which
``{input}`` and ``{output}`` are filled in and every other character, braces included, is
passed as written (a string runs in a shell; a list runs as it is, and without ``{output}``
its standard output is the output). The library does everything else: listing, shards, pinned
reads, staging, keys, records, retries, exit codes.

Every step runs in a worker process of its own. A step that raises (or a command that exits
non-zero), runs past its ``object_timeout``, or kills its worker rejects that object with the
reason, and the run goes on; :class:`TransientStepError` (or exit code 75) retries the child.
A step gets local files only: it needs no AWS access, and the job roles give it none beyond
what the runner does (any other AWS call is AccessDenied on AWS).

Plain data: no aws-cdk-lib or boto3 import. ``STEPS_VERSION`` is bumped when the contract
changes incompatibly.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline import contract
from pipeline.batch_facts import RESERVED_VARIABLE_PREFIX
from pipeline.errors import SpecError
from pipeline.step_imports import contents_of, missing_from

STEPS_VERSION = 1
_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
PLACEHOLDERS = ("input", "output")
"""What a command template's ``{name}`` may be; nothing else in a template is filled in."""
_PLACEHOLDER = re.compile(r"\{(input|output)\}")
_BRACED_NAME = re.compile(r"(?<!\$)\{\s*([A-Za-z_]\w*)\s*(?:[!:][^{}]*)?\}")
_PLACEHOLDER_LIKE = frozenset(
    {"in", "out", "infile", "outfile", "source", "target", "src", "dst", "dest", "file", "path"}
)
"""Names in braces taken for a misspelled placeholder (with every name starting ``inp`` or
``outp``); any other braces (awk's ``{print $1}``, jq's ``{name}``, the shell's ``${VAR}``) are
the command's own."""
ROLES = ("cpu", "memory", "aggregate", "check")
"""What a step is for, and so the arguments its function takes."""
_ARGUMENTS = {"cpu": 3, "memory": 3, "aggregate": 1, "check": 1}


class TransientStepError(Exception):
    """Raise it from a Python step for a failure worth trying again (a service that did not
    answer): the child exits with the transient code and its retry strategy retries it."""


@dataclass(frozen=True)
class ObjectRef:
    """The input object a step works on, as JobA listed it."""

    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class StepRecord:
    """One object as the stages recorded it, for the checks: its identity, the CPU step's
    facts and the memory step's attributes."""

    key: str
    size: int
    etag: str
    cpu: Mapping[str, Any]
    memory: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class Step:
    """One step: a Python function or a command, with what it needs to run.

    Make one with :meth:`python` or :meth:`command`."""

    kind: str
    """``python`` or ``command``."""
    target: str | tuple[str, ...]
    """The reference (``package.module:function``), or the command template."""
    image: Any = field(default=None, compare=False, hash=False)
    """An ``aws_ecs.ContainerImage`` with this library and your code (default: the
    library's image, which has only its own steps)."""
    vcpus: float | None = None
    """vCPUs of each child of the step's job (default: the job's own)."""
    memory_mib: int | None = None
    """MiB of each child of the step's job (default: the job's own)."""
    timeout_seconds: int | None = None
    """Per attempt of each child (default: the job's own)."""
    environment: tuple[tuple[str, str], ...] = ()
    """Variables the step's job gets besides the pipeline's."""
    object_timeout_seconds: int | None = None
    """Longest the step may take on one object: past it the object's worker is stopped and
    the object rejected, "timed out after N s" (default: no limit of its own; the child's
    attempt timeout still ends the whole child)."""

    @classmethod
    def python(
        cls,
        reference: str,
        *,
        image: Any = None,
        vcpus: float | None = None,
        memory_mib: int | None = None,
        timeout: Any = None,
        environment: Mapping[str, str] | None = None,
        object_timeout: Any = None,
    ) -> Step:
        """A Python function, ``"package.module:function"``; ``timeout`` (per attempt of a
        child) and ``object_timeout`` (per object) are seconds or a ``Duration``."""
        return cls(
            kind="python",
            target=reference,
            image=image,
            vcpus=vcpus,
            memory_mib=memory_mib,
            timeout_seconds=_seconds(timeout),
            environment=tuple(sorted((environment or {}).items())),
            object_timeout_seconds=_seconds(object_timeout),
        )

    @classmethod
    def command(
        cls,
        template: str | Sequence[str],
        *,
        image: Any = None,
        vcpus: float | None = None,
        memory_mib: int | None = None,
        timeout: Any = None,
        environment: Mapping[str, str] | None = None,
        object_timeout: Any = None,
    ) -> Step:
        """A command run once per object: ``"gzip -9 -c {input} > {output}"`` (a shell), or
        ``["gzip", "-9", "-c", "{input}"]`` (no shell; its standard output is the output).
        Only ``{input}`` and ``{output}`` are filled in (shell-quoted in a string); every other
        brace is the command's own (``awk '{print $1}'``)."""
        target = template if isinstance(template, str) else tuple(template)
        return cls(
            kind="command",
            target=target,
            image=image,
            vcpus=vcpus,
            memory_mib=memory_mib,
            timeout_seconds=_seconds(timeout),
            environment=tuple(sorted((environment or {}).items())),
            object_timeout_seconds=_seconds(object_timeout),
        )

    def check(self, role: str, *, load: bool = True) -> None:
        """Refuse, in one line, a step that cannot work as ``role``: a reference that is not
        ``module:function``, does not import or takes the wrong arguments (``load``: import
        it), whose code imports a module its image (one made by ``job_image``) does not hold,
        a command template without ``{input}`` or with a misspelled placeholder. (Its
        resources are checked with the job that runs it:
        :meth:`pipeline.spec.PipelineSpec.with_steps`.)"""
        if self.kind == "python":
            reference = str(self.target)
            if not _REFERENCE.fullmatch(reference):
                raise SpecError(
                    f"{role} step {reference!r} must be a reference like 'package.module:function'"
                )
            if load:
                _check_signature(self.load(role), reference, role)
                contents = contents_of(self.image)
                if contents is not None:
                    for missing in missing_from(reference, contents):
                        raise SpecError(
                            f"{role} step {reference!r} imports {missing.name} (in "
                            f"{missing.where}), which its image does not have: {missing.fix()}"
                        )
        elif self.kind == "command":
            if role in ("aggregate", "check"):
                raise SpecError(f"the {role} step must be a Python step, not a command")
            text = self.target if isinstance(self.target, str) else " ".join(self.target)
            misspelled = misspelled_placeholder(text)
            if misspelled:
                raise SpecError(
                    f"{role} step command {text!r} has {misspelled}; only {{input}} and "
                    "{output} are filled in: write one of them exactly"
                )
            if "{input}" not in text:
                raise SpecError(f"{role} step command {text!r} has no {{input}}: add it")
        else:
            raise SpecError(f"a step is python or command; got {self.kind!r}")
        timeout = self.object_timeout_seconds
        if timeout is not None and (isinstance(timeout, bool) or timeout < 1):
            raise SpecError(
                f"{role} step {self.label!r}: object_timeout must be at least 1 second; "
                f"got {timeout!r}"
            )
        reserved = sorted(
            name for name, _ in self.environment if name.startswith(RESERVED_VARIABLE_PREFIX)
        )
        if reserved:
            raise SpecError(f"{role} step sets {reserved[0]}, which AWS Batch sets itself")

    def load(self, role: str = "cpu") -> Callable[..., Any]:
        """The Python function the reference names."""
        module_name, _, name = str(self.target).partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # whatever the user's module raises while importing
            raise SpecError(
                f"{role} step {self.target!r} does not import: {type(error).__name__}: {error}"
            ) from None
        function = getattr(module, name, None)
        if not callable(function):
            raise SpecError(f"{role} step {self.target!r}: {module_name} has no function {name}")
        return function  # type: ignore[no-any-return]

    @property
    def label(self) -> str:
        """The step in one phrase, for messages and summaries."""
        if isinstance(self.target, str):
            return self.target
        return " ".join(self.target)

    def as_json(self) -> dict[str, Any]:
        """What a job needs to run the step (the image is the job definition's)."""
        data: dict[str, Any] = {"kind": self.kind}
        data["target"] = self.target if isinstance(self.target, str) else list(self.target)
        if self.environment:
            data["environment"] = dict(self.environment)
        for name in ("vcpus", "memory_mib", "timeout_seconds", "object_timeout_seconds"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Step:
        target = data["target"]
        return cls(
            kind=str(data["kind"]),
            target=target if isinstance(target, str) else tuple(str(a) for a in target),
            vcpus=data.get("vcpus"),
            memory_mib=data.get("memory_mib"),
            timeout_seconds=data.get("timeout_seconds"),
            environment=tuple(sorted((data.get("environment") or {}).items())),
            object_timeout_seconds=data.get("object_timeout_seconds"),
        )


def fill_template(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each ``{input}`` and ``{output}`` replaced by its value; nothing else
    changes (braces of awk, jq or the shell included)."""
    return _PLACEHOLDER.sub(lambda found: values[found.group(1)], text)


def misspelled_placeholder(text: str) -> str | None:
    """The first name in braces in a command template that reads as a placeholder but is
    not exactly ``{input}`` or ``{output}`` (``{inputs}``, ``{ input }``, ``{Output}``,
    ``{source}``, ``{out}``), or None."""
    for found in _BRACED_NAME.finditer(text):
        if found.group(0) in ("{input}", "{output}"):
            continue
        name = found.group(1).lower().replace("_", "")
        if name in _PLACEHOLDER_LIKE or name.startswith(("inp", "outp")):
            return found.group(0)
    return None


@dataclass(frozen=True, kw_only=True)
class PipelineSteps:
    """The work of a pipeline: its CPU step, its memory step, and optionally an aggregate
    step and checks. ``max_rejected_share`` fails a run (in JobD) when more than that share
    of its listed objects was rejected; the default, 1.0, never fails a run for its
    rejections, which are all reported (in the summary and ``rejects.json``). A run that
    processed no object (none listed, or every one rejected) fails in JobD unless
    ``allow_empty_runs`` is True."""

    cpu: Step
    memory: Step
    aggregate: Step | None = None
    checks: tuple[str, ...] = ()
    """References of check functions (``package.module:function``), run in JobD."""
    max_rejected_share: float = 1.0
    allow_empty_runs: bool = False
    """Let a run that processed no object succeed (default: it fails at JobD's third check,
    which says why: nothing listed, or every object rejected, with the first reasons)."""

    def check(self, *, load: bool = True) -> PipelineSteps:
        """Refuse, in one line, steps that cannot work (see :meth:`Step.check`)."""
        self.cpu.check("cpu", load=load)
        self.memory.check("memory", load=load)
        if self.aggregate is not None:
            self.aggregate.check("aggregate", load=load)
        for reference in self.checks:
            Step.python(reference, image=self.checks_image).check("check", load=load)
        share = self.max_rejected_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise SpecError(f"max_rejected_share must be from 0 to 1; got {share!r}")
        allowed = self.allow_empty_runs
        if not isinstance(allowed, bool):
            raise SpecError(f"allow_empty_runs must be True or False; got {allowed!r}")
        return self

    def as_json(self) -> dict[str, Any]:
        return {
            "version": STEPS_VERSION,
            "cpu": self.cpu.as_json(),
            "memory": self.memory.as_json(),
            "aggregate": self.aggregate.as_json() if self.aggregate else None,
            "checks": list(self.checks),
            "maxRejectedShare": self.max_rejected_share,
            # Only when set: deployed documents and definitions of steps without it stay as
            # they were.
            **({"allowEmptyRuns": True} if self.allow_empty_runs else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PipelineSteps:
        if data.get("version") != STEPS_VERSION:
            raise SpecError(
                f"steps of contract version {data.get('version')!r}; this library reads "
                f"{STEPS_VERSION}: use the same version of array-job-pipeline everywhere"
            )
        aggregate = data.get("aggregate")
        return cls(
            cpu=Step.from_json(data["cpu"]),
            memory=Step.from_json(data["memory"]),
            aggregate=Step.from_json(aggregate) if aggregate else None,
            checks=tuple(data.get("checks") or ()),
            max_rejected_share=float(data.get("maxRejectedShare", 1.0)),
            allow_empty_runs=bool(data.get("allowEmptyRuns", False)),
        )

    def with_image(self, image: Any) -> PipelineSteps:
        """These steps, each that brings no image of its own running in ``image`` (an
        ``aws_ecs.ContainerImage`` with this library and your code: see
        ``pipeline.job_image``)."""

        def given(step: Step | None) -> Step | None:
            if step is None or step.image is not None:
                return step
            return replace(step, image=image)

        return replace(
            self,
            cpu=given(self.cpu) or self.cpu,
            memory=given(self.memory) or self.memory,
            aggregate=given(self.aggregate),
        )

    @property
    def checks_image(self) -> Any:
        """The image JobD runs the checks in: the memory step's, else the CPU step's."""
        return self.memory.image or self.cpu.image

    def import_notes(self) -> list[str]:
        """One line per module a Python step's code imports that its image would not hold
        once deployed (a step without an image: one with only this library), for a run on
        this machine, where the step finds it. Steps in an image made another way than
        ``job_image`` are not read: what such an image holds is not known."""
        named = [
            (r, s)
            for r, s in (("cpu", self.cpu), ("memory", self.memory), ("aggregate", self.aggregate))
            if s is not None and s.kind == "python"
        ]
        named += [("check", Step.python(c, image=self.checks_image)) for c in self.checks]
        notes: dict[str, str] = {}
        for role, step in named:
            if step.image is not None and contents_of(step.image) is None:
                continue
            for missing in missing_from(str(step.target), contents_of(step.image)):
                notes.setdefault(
                    missing.name,
                    f"note: the {role} step {step.label!r} imports {missing.name}, which this "
                    f"machine has; deployed, its image needs it too: {missing.fix()}",
                )
        return list(notes.values())

    def step_for(self, role: str) -> Step | None:
        """The step a job of ``role`` runs (``cpu``, ``memory``, ``aggregate``)."""
        return {"cpu": self.cpu, "memory": self.memory, "aggregate": self.aggregate}.get(role)

    def environment(self, role: str) -> dict[str, str]:
        """What a job of ``role`` reads of the steps, as the variables its job definition sets:
        its step (JobB, JobC, JobE), or the checks and the rejection limit (JobD)."""
        if role == "check":
            return {
                contract.CHECKS: json.dumps(list(self.checks)),
                contract.MAX_REJECTED_SHARE: repr(float(self.max_rejected_share)),
                **({contract.ALLOW_EMPTY_RUNS: "true"} if self.allow_empty_runs else {}),
            }
        step = self.step_for(role)
        if step is None:
            return {}
        return {**dict(step.environment), contract.STEP: json.dumps(step.as_json(), sort_keys=True)}

    @classmethod
    def from_environments(cls, environments: Mapping[str, Mapping[str, str]]) -> PipelineSteps:
        """The steps the job definitions' variables say, by role (the inverse of
        :meth:`environment`)."""

        def step(role: str) -> Step | None:
            raw = environments.get(role, {}).get(contract.STEP)
            if not raw:
                return None
            return Step.from_json(json.loads(raw))

        cpu, memory = step("cpu"), step("memory")
        if cpu is None or memory is None:
            raise SpecError(
                f"the job definitions set no {contract.STEP}: they were deployed by an older "
                "array-job-pipeline; redeploy them with this version (npx cdk deploy)"
            )
        checks = environments.get("check", {})
        return cls(
            cpu=cpu,
            memory=memory,
            aggregate=step("aggregate"),
            checks=tuple(json.loads(checks.get(contract.CHECKS) or "[]")),
            max_rejected_share=float(checks.get(contract.MAX_REJECTED_SHARE) or 1.0),
            allow_empty_runs=checks.get(contract.ALLOW_EMPTY_RUNS) == "true",
        )


def describe_steps(steps: PipelineSteps) -> str:
    """The steps in one phrase: ``cpu pkg.mod:fn, memory gzip -c {input}``."""
    parts = [f"cpu {steps.cpu.label}", f"memory {steps.memory.label}"]
    if steps.aggregate is not None:
        parts.append(f"aggregate {steps.aggregate.label}")
    return ", ".join(parts)


def load_steps(reference: str) -> PipelineSteps:
    """The :class:`PipelineSteps` object ``"package.module:NAME"`` names, checked."""
    if not _REFERENCE.fullmatch(reference):
        raise SpecError(f"steps {reference!r} must name an object like 'package.module:STEPS'")
    module_name, _, name = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # whatever the user's module raises while importing
        raise SpecError(
            f"steps {reference!r} do not import: {type(error).__name__}: {error}"
        ) from None
    steps = getattr(module, name, None)
    if steps is None:
        found = sorted(n for n, v in vars(module).items() if isinstance(v, PipelineSteps))
        listed = (
            f"its PipelineSteps objects: {', '.join(found)}"
            if found
            else "it has no PipelineSteps object"
        )
        raise SpecError(f"steps {reference!r}: {module_name} has no {name}; {listed}")
    if not isinstance(steps, PipelineSteps):
        raise SpecError(
            f"steps {reference!r} must be a PipelineSteps object; got {type(steps).__name__}"
        )
    return steps.check()


def _check_signature(function: Callable[..., Any], reference: str, role: str) -> None:
    wanted = _ARGUMENTS[role]
    try:
        signature = inspect.signature(function)
        signature.bind(*range(wanted))
    except (TypeError, ValueError):
        shapes = {
            "cpu": "fn(source, target, obj)",
            "memory": "fn(source, target, obj)",
            "aggregate": "fn(items)",
            "check": "fn(records)",
        }
        raise SpecError(
            f"{role} step {reference!r} must take {wanted} positional argument"
            f"{'s' * (wanted > 1)}: {shapes[role]}"
        ) from None


def _seconds(timeout: Any) -> int | None:
    if timeout is None:
        return None
    seconds = timeout.to_seconds() if hasattr(timeout, "to_seconds") else timeout
    return int(seconds)


DEFAULT_STEPS = PipelineSteps(
    cpu=Step.python("pipeline.jobs.default_steps:digest_and_compress"),
    memory=Step.python("pipeline.jobs.default_steps:byte_statistics"),
    checks=("pipeline.jobs.default_steps:round_trip",),
)
"""The library's own work: a SHA-256 digest and bzip2 compression per object (CPU), byte
statistics of the decompressed result (memory), and a check that the round trip gives back
every input."""
