"""Job images: their build context, assembled at synth time.

The library's image holds Python, boto3 and this library's ``pipeline`` package, whose job
programs (:mod:`pipeline.jobs`) the job definitions run. Its Dockerfile and pinned
requirements are the repository's ``job_images/`` folder (in an installed wheel:
``pipeline/job_image/``); the package is copied beside them, Python files only, so the asset's
hash changes only when code or the Dockerfile does. :func:`job_image` adds your steps' code
(folders or modules, importable by their names in the image), their pip requirements and
their Debian packages, the same way; every image, the library's included, leaves no setuid or
setgid program behind.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from aws_cdk import Stage
from aws_cdk import aws_ecs as ecs
from constructs import Construct

from pipeline.errors import PipelineConfigError
from pipeline.step_imports import (
    IMAGE_CONTENTS,
    ImageContents,
    image_context_source,
    requirement_name,
)

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONTEXT_FILES = ("Dockerfile", "requirements.txt", ".dockerignore")
STEPS_REQUIREMENTS = "steps-requirements.txt"
"""The context's file of the steps' pip requirements (empty in the library's image)."""
SYSTEM_PACKAGES = "system-packages.txt"
"""The context's file of the steps' Debian packages, one a line (empty in the library's)."""
_DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+:~-]+)?$")
_NESTED_FILES = ("-r", "--requirement", "-c", "--constraint", "-e", "--editable")


def context_source() -> Path:
    """Where the Dockerfile and requirements are: ``pipeline/job_image`` in a wheel, the
    repository's ``job_images`` in a source checkout (an editable install)."""
    return image_context_source()


def package_files() -> list[Path]:
    """The ``pipeline`` package's files an image needs, relative to the folder holding it."""
    return sorted(
        path.relative_to(PACKAGE_DIR.parent)
        for path in PACKAGE_DIR.rglob("*")
        if path.is_file()
        and (path.suffix == ".py" or path.name == "py.typed")
        and "__pycache__" not in path.parts
    )


def assemble_context(
    target: Path, code: Sequence[Path] = (), generated: Mapping[str, str] | None = None
) -> Path:
    """Write the build context (Dockerfile, requirements, the package, ``code`` under
    ``code/``, and the steps' requirements and packages files) into ``target``."""
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
    for file, relative in code_files(code):
        destination = target / "code" / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, destination)
    for name, text in {**_empty_lists(), **(generated or {})}.items():
        (target / name).write_text(text)
    return target


def _empty_lists() -> dict[str, str]:
    return {STEPS_REQUIREMENTS: "", SYSTEM_PACKAGES: ""}


def code_files(code: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(file, where it goes under ``code/``) for each given folder's files and each given
    file. A folder's dotfiles and dot-folders (``.env``, ``.git``, ``.venv``) and caches are
    left out; a file named on its own is kept, dotfile or not, at its place in a given folder
    that holds it, else at the top."""
    folders = [p for p in code if p.is_dir()]
    found: dict[Path, Path] = {}
    for folder in folders:
        for file in sorted(folder.rglob("*")):
            relative = file.relative_to(folder)
            if not file.is_file() or _left_out(relative):
                continue
            found[folder.name / relative] = file
    for file in (p for p in code if p.is_file()):
        holder = next((f for f in folders if file.is_relative_to(f)), None)
        place = file.relative_to(holder.parent) if holder is not None else Path(file.name)
        found[place] = file
    return [(file, place) for place, file in sorted(found.items())]


def _left_out(relative: Path) -> bool:
    return (
        any(part.startswith(".") for part in relative.parts)
        or "__pycache__" in relative.parts
        or relative.suffix == ".pyc"
    )


def _requirement_lines(requirements: str | Path | Sequence[str] | None) -> tuple[str, ...]:
    """The requirements as lines: a file's, or a list's items. A line that names another
    file (``-r``, ``-c``, ``-e``) is refused: that file would not be in the build context."""
    if requirements is None:
        return ()
    if isinstance(requirements, str | Path):
        path = Path(requirements)
        if not path.is_file():
            raise PipelineConfigError(
                f"job_image requirements {str(requirements)!r} is not a file; give a "
                "requirements file, or a list of requirements like ['pandas>=2']"
            )
        lines = tuple(path.read_text().splitlines())
    else:
        lines = tuple(str(line) for line in requirements)
    for line in lines:
        text = line.strip()
        if text.startswith(_NESTED_FILES) or text.startswith("."):
            raise PipelineConfigError(
                f"job_image requirements: {text!r} names a file the image's build context "
                "does not have; list its requirements instead"
            )
        if "\n" in line:
            raise PipelineConfigError(f"job_image requirements: {line!r} is more than one line")
    return lines


def _system_packages(packages: Sequence[str]) -> tuple[str, ...]:
    if isinstance(packages, str):
        raise PipelineConfigError(
            f"job_image system_packages must be a list of Debian package names; got the string "
            f"{packages!r}: write [{packages!r}]"
        )
    for name in packages:
        if not _DEBIAN_PACKAGE.fullmatch(str(name)):
            raise PipelineConfigError(
                f"job_image system_packages: {name!r} is not a Debian package name (lowercase "
                "letters, digits, '+', '-', '.', optionally =VERSION)"
            )
    return tuple(str(name) for name in packages)


def job_image(
    scope: Construct,
    *,
    code: Sequence[str | Path] = (),
    requirements: str | Path | Sequence[str] | None = None,
    system_packages: Sequence[str] = (),
) -> ecs.ContainerImage:
    """An image with this library (every job program and the step runner) and your steps'
    needs, built at deploy time from a context assembled in the cloud assembly's folder
    (``cdk.out``), named by its content, so synthesis leaves nothing anywhere else.

    - ``code``: the folders (packages) or ``.py`` files of your steps, each importable in the
      image by its name (``code=["access_logs"]`` for ``access_logs.steps:parse``). A
      folder's dotfiles (``.env``, ``.git/``) are left out; name one in ``code`` to keep it.
      Default: none (the library's own image).
    - ``requirements``: a requirements file, or a list of requirement strings
      (``["pandas>=2", "pyarrow"]``), installed with pip as given, after the library's own
      pins (the context's ``steps-requirements.txt``). Default: none.
    - ``system_packages``: Debian packages (``["gawk", "imagemagick"]``), installed with
      apt-get before anything else (the context's ``system-packages.txt``). Default: none.

    Synthesis reads the imports of each Python step's code and refuses one this image does
    not hold, naming the module and the fix."""
    paths = [Path(p).resolve() for p in code]
    for path in paths:
        if not path.exists():
            raise PipelineConfigError(f"job_image code {str(path)!r} does not exist")
        if path.name in ("pipeline", "code"):
            raise PipelineConfigError(
                f"job_image code {str(path)!r}: name it something else than {path.name!r}"
            )
    lines = _requirement_lines(requirements)
    packages = _system_packages(system_packages)
    generated = {
        STEPS_REQUIREMENTS: "".join(f"{line}\n" for line in lines),
        SYSTEM_PACKAGES: "".join(f"{name}\n" for name in packages),
    }
    source = context_source()
    named = [(PACKAGE_DIR.parent / r, r) for r in package_files()]
    named += [(source / n, Path(n)) for n in CONTEXT_FILES if (source / n).is_file()]
    named += [(file, Path("code") / place) for file, place in code_files(paths)]
    digest = hashlib.sha256()
    for file, name in named:
        digest.update(str(name).encode())
        digest.update(file.read_bytes())
    for listed, text in generated.items():
        digest.update(listed.encode())
        digest.update(text.encode())
    stage = scope if isinstance(scope, Stage) else Stage.of(scope)
    if stage is None:
        raise PipelineConfigError("job_image needs a scope inside a CDK app")
    outdir = Path(stage.asset_outdir)
    context = outdir / f"job-image-context.{digest.hexdigest()[:16]}"
    if not (context / "Dockerfile").is_file():  # named by its content: made once per app
        assemble_context(context, paths, generated)
    image = ecs.ContainerImage.from_asset(str(context))
    contents = ImageContents(
        code=tuple(sorted({_importable(place) for _, place in code_files(paths)} - {""})),
        requirements=tuple(line for line in lines if requirement_name(line)),
        system_packages=packages,
    )
    # What the image holds, for the steps' import check (pipeline.step_imports).
    setattr(image, IMAGE_CONTENTS, contents)
    return image


def _importable(place: Path) -> str:
    """The top-level name a file placed at ``place`` under ``code/`` makes importable."""
    if len(place.parts) > 1:
        return place.parts[0]
    return place.stem if place.suffix == ".py" else ""


def default_job_image(scope: Construct) -> ecs.ContainerImage:
    """The library's own image."""
    return job_image(scope)
