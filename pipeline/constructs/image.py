"""Job images: their build context, assembled at synth time.

The library's image holds Python, boto3 and this library's ``pipeline`` package, whose job
programs (:mod:`pipeline.jobs`) the job definitions run. Its Dockerfile and pinned
requirements are the repository's ``job_images/`` folder (in an installed wheel:
``pipeline/job_image/``); the package is copied beside them, Python files only, so the asset's
hash changes only when code or the Dockerfile does. :func:`job_image` adds your steps' code
(folders or modules, importable by their names in the image), the same way.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

from aws_cdk import Stage
from aws_cdk import aws_ecs as ecs
from constructs import Construct

from pipeline.errors import PipelineConfigError

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONTEXT_FILES = ("Dockerfile", "requirements.txt", ".dockerignore")


def context_source() -> Path:
    """Where the Dockerfile and requirements are: ``pipeline/job_image`` in a wheel, the
    repository's ``job_images`` in a source checkout (an editable install)."""
    for candidate in (PACKAGE_DIR / "job_image", PACKAGE_DIR.parent / "job_images"):
        if (candidate / "Dockerfile").is_file():
            return candidate
    raise FileNotFoundError(
        "the default job image's Dockerfile is missing from this installation of "
        "array-job-pipeline; reinstall it, or pass your own image to ArrayJobPipeline"
    )


def package_files() -> list[Path]:
    """The ``pipeline`` package's files an image needs, relative to the folder holding it."""
    return sorted(
        path.relative_to(PACKAGE_DIR.parent)
        for path in PACKAGE_DIR.rglob("*")
        if path.is_file()
        and (path.suffix == ".py" or path.name == "py.typed")
        and "__pycache__" not in path.parts
    )


def assemble_context(target: Path, code: Sequence[Path] = ()) -> Path:
    """Write the build context (Dockerfile, requirements, the package, and ``code`` under
    ``code/``) into ``target``."""
    source = context_source()
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in CONTEXT_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    for relative in package_files():
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGE_DIR.parent / relative, destination)
    (target / "code").mkdir()
    for path in code:
        for relative in _code_files(path):
            destination = target / "code" / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path.parent / relative, destination)
    return target


def _code_files(path: Path) -> list[Path]:
    """A code folder's or module's files, relative to the folder holding it (no caches)."""
    if path.is_file():
        return [Path(path.name)]
    return sorted(
        p.relative_to(path.parent)
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def job_image(scope: Construct, *, code: Sequence[str | Path] = ()) -> ecs.ContainerImage:
    """An image with this library (every job program and the step runner) and ``code``: the
    folders (packages) or ``.py`` files of your steps, each importable in the image by its
    name (``code=["access_logs"]`` for ``access_logs.steps:parse``). Built at deploy time
    from a context assembled in the cloud assembly's folder (``cdk.out``), named by its
    content, so synthesis leaves nothing anywhere else. Without ``code``: the library's own
    image."""
    paths = [Path(p).resolve() for p in code]
    for path in paths:
        if not path.exists():
            raise PipelineConfigError(f"job_image code {str(path)!r} does not exist")
        if path.name in ("pipeline", "code") or path.name.startswith("."):
            raise PipelineConfigError(
                f"job_image code {str(path)!r}: name it something else than {path.name!r}"
            )
    source = context_source()
    named = [(PACKAGE_DIR.parent / r, r) for r in package_files()]
    named += [(source / n, Path(n)) for n in CONTEXT_FILES if (source / n).is_file()]
    named += [(p.parent / r, Path("code") / r) for p in paths for r in _code_files(p)]
    digest = hashlib.sha256()
    for file, name in named:
        digest.update(str(name).encode())
        digest.update(file.read_bytes())
    stage = scope if isinstance(scope, Stage) else Stage.of(scope)
    if stage is None:
        raise PipelineConfigError("job_image needs a scope inside a CDK app")
    outdir = Path(stage.asset_outdir)
    context = outdir / f"job-image-context.{digest.hexdigest()[:16]}"
    if not (context / "Dockerfile").is_file():  # named by its content: made once per app
        assemble_context(context, paths)
    return ecs.ContainerImage.from_asset(str(context))


def default_job_image(scope: Construct) -> ecs.ContainerImage:
    """The library's own image."""
    return job_image(scope)
