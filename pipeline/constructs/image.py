"""The pipeline's default job image: its build context, assembled at synth time.

The image holds Python, boto3 and this library's ``pipeline`` package, whose job programs
(:mod:`pipeline.jobs`) the job definitions run. Its Dockerfile and pinned requirements are
the repository's ``job_images/`` folder (in an installed wheel: ``pipeline/job_image/``); the
package is copied beside them, Python files only, so the asset's hash changes only when code
or the Dockerfile does.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from aws_cdk import Stage
from aws_cdk import aws_ecs as ecs
from constructs import Construct

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


def assemble_context(target: Path) -> Path:
    """Write the build context (Dockerfile, requirements, the package) into ``target``."""
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
    return target


def default_job_image(scope: Construct) -> ecs.ContainerImage:
    """The library's own image, built at deploy time from a context assembled in the cloud
    assembly's folder (``cdk.out``), so synthesis leaves nothing anywhere else."""
    digest = hashlib.sha256()
    for relative in package_files():
        digest.update(str(relative).encode())
        digest.update((PACKAGE_DIR.parent / relative).read_bytes())
    source = context_source()
    for name in CONTEXT_FILES:
        if (source / name).is_file():
            digest.update((source / name).read_bytes())
    outdir = Path(Stage.of(scope).asset_outdir)  # type: ignore[union-attr]
    context = outdir / f"job-image-context.{digest.hexdigest()[:16]}"
    if not (context / "Dockerfile").is_file():  # named by its content: made once per app
        assemble_context(context)
    return ecs.ContainerImage.from_asset(str(context))
