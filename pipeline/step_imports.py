"""What a Python step needs in its image: the modules its code imports, read from the source
(never run), against what a job image made by ``job_image`` holds (its code, its
requirements, the library and the library's own dependencies).

An image records what it holds as :class:`ImageContents` on itself (``job_image`` does);
an image made another way (``ContainerImage.from_asset`` of your own Dockerfile, a registry's)
carries no record, and nothing is assumed about it.

Plain data and the standard library: no aws-cdk-lib, nothing of the library's own.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

IMAGE_CONTENTS = "pipeline_image_contents"
"""The attribute an image made by ``job_image`` carries its :class:`ImageContents` in."""
LIBRARY = "array-job-pipeline"
_PACKAGE_DIR = Path(__file__).resolve().parent
_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
_EGG = re.compile(r"#egg=([A-Za-z0-9._-]+)")


def normalized(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``PyYAML`` -> ``pyyaml``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str | None:
    """The distribution a requirements line installs (``pandas>=2`` -> ``pandas``,
    ``name @ https://...`` -> ``name``, ``git+https://...#egg=name`` -> ``name``), or None for
    a blank line, a comment or an option."""
    text = line.split(" #", 1)[0].strip()
    if not text or text.startswith(("#", "-")):
        return None
    egg = _EGG.search(text)
    if egg:
        return egg.group(1)
    if "://" in text.split("@", 1)[0]:
        return None  # a bare URL names no distribution we can read
    found = _NAME.match(text)
    return found.group(1) if found else None


def image_context_source() -> Path:
    """Where the library image's Dockerfile and pins are: ``pipeline/job_image`` in a wheel,
    the repository's ``job_images`` in a source checkout (an editable install)."""
    for candidate in (_PACKAGE_DIR / "job_image", _PACKAGE_DIR.parent / "job_images"):
        if (candidate / "Dockerfile").is_file():
            return candidate
    raise FileNotFoundError(
        "the default job image's Dockerfile is missing from this installation of "
        "array-job-pipeline; reinstall it, or pass your own image to ArrayJobPipeline"
    )


@cache
def library_distributions() -> frozenset[str]:
    """The distributions every image ``job_image`` makes holds: this library and its pinned
    dependencies (boto3 and what it needs)."""
    try:
        pins = (image_context_source() / "requirements.txt").read_text().splitlines()
    except (FileNotFoundError, OSError):
        pins = []
    names = {normalized(n) for line in pins if (n := requirement_name(line))}
    return frozenset({*names, normalized(LIBRARY)})


@dataclass(frozen=True)
class ImageContents:
    """What an image made by ``job_image`` holds besides Python and this library."""

    code: tuple[str, ...] = ()
    """The top-level names its code makes importable (``access_logs``, ``mysteps``)."""
    requirements: tuple[str, ...] = ()
    """Its requirements, as given (one line each)."""
    system_packages: tuple[str, ...] = ()
    """Its Debian packages."""

    @property
    def distributions(self) -> frozenset[str]:
        """Every distribution it holds, normalized: the library's and the requirements'."""
        named = {normalized(n) for line in self.requirements if (n := requirement_name(line))}
        return library_distributions() | named


def contents_of(image: Any) -> ImageContents | None:
    """What ``image`` holds, if it says (an image made by ``job_image``)."""
    contents = getattr(image, IMAGE_CONTENTS, None)
    return contents if isinstance(contents, ImageContents) else None


@dataclass(frozen=True)
class Missing:
    """A module a step's code imports that its image does not hold."""

    name: str
    """The top-level import (``yaml``)."""
    where: str
    """The module of the step's code that imports it."""
    distribution: str | None = None
    """The distribution that provides it on this machine (``PyYAML``), if one does."""
    local_path: str | None = None
    """Where this machine finds it when no distribution provides it (your own code)."""

    def fix(self) -> str:
        """What to add to ``job_image``, in its own words."""
        if self.distribution is None and self.local_path is not None:
            return f'add it to job_image(..., code=["{self.local_path}"])'
        return f'add it to job_image(..., requirements=["{self.distribution or self.name}"])'


@dataclass
class _Scan:
    """The modules of a step's code read so far, and the imports found in them."""

    own: set[str]
    seen: set[str] = field(default_factory=set)
    found: dict[str, str] = field(default_factory=dict)


def imports_of(module: str, own: Iterable[str] = ()) -> dict[str, str]:
    """Top-level name -> the module that imports it, for every import of ``module``'s code:
    its own source and, followed, that of every module of its own top-level package or of
    ``own`` it imports. Optional imports (under ``try`` with an ``except ImportError``) and
    typing-only ones (under ``if TYPE_CHECKING``) are left out."""
    scan = _Scan(own={module.split(".")[0], *own})
    _read(module, scan)
    return scan.found


def _read(module: str, scan: _Scan) -> None:
    if module in scan.seen:
        return
    scan.seen.add(module)
    source = _source(module)
    if source is None:
        return
    try:
        tree = ast.parse(source.read_text(encoding="utf-8", errors="replace"))
    except SyntaxError:
        return  # the import itself says so, when the step is loaded
    package = module if source.name == "__init__.py" else module.rpartition(".")[0]
    for name in _needed_imports(tree.body, package):
        top = name.split(".")[0]
        if top in scan.own:
            _read(name, scan)
            if "." in name:
                _read(name.rpartition(".")[0], scan)
        else:
            scan.found.setdefault(top, module)


def _source(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    origin = spec.origin if spec is not None else None
    if not origin or not origin.endswith(".py"):
        return None
    return Path(origin)


def _needed_imports(body: Sequence[ast.stmt], package: str) -> Iterator[str]:
    """Absolute names imported by ``body`` and what it nests, but optional and typing-only
    imports."""
    for node in body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                try:
                    base = importlib.util.resolve_name("." * node.level + base, package)
                except (ImportError, ValueError):
                    continue
            yield base
            if node.module is None or node.level:  # from . import sibling: each is a module
                yield from (f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _needed_imports(node.orelse, package)
        elif isinstance(node, ast.Try) and _catches_import_errors(node):
            yield from _needed_imports([*node.orelse, *node.finalbody], package)
        else:
            yield from _needed_imports(list(_statements_in(node)), package)


def _statements_in(node: ast.AST) -> Iterator[ast.stmt]:
    """The statements nested in ``node`` one level down (through handlers and cases too)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.stmt):
            yield child
        else:
            yield from _statements_in(child)


def _catches_import_errors(node: ast.Try) -> bool:
    names = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
    for handler in node.handlers:
        caught = handler.type
        if caught is None:
            return True
        each = caught.elts if isinstance(caught, ast.Tuple) else [caught]
        if names & {ast.unparse(e).rsplit(".", 1)[-1] for e in each}:
            return True
    return False


def missing_from(reference: str, contents: ImageContents | None) -> list[Missing]:
    """What the code of the Python step ``reference`` imports that an image with
    ``contents`` would not hold (None: an image with nothing but the library), in the order
    found: not the standard library, this library, its dependencies, the image's code or
    its requirements."""
    # Here, not at the top: the job programs and every step's worker import this module.
    from importlib.metadata import packages_distributions

    module = reference.split(":", 1)[0]
    contents = contents or ImageContents()
    wanted = imports_of(module, contents.code)
    held = contents.distributions
    providers = packages_distributions()
    missing = []
    for name, where in wanted.items():
        if name in sys.stdlib_module_names or name == "pipeline" or name in contents.code:
            continue
        distributions = providers.get(name) or []
        if {normalized(d) for d in distributions} & held or normalized(name) in held:
            continue
        missing.append(
            Missing(
                name,
                where,
                distribution=distributions[0] if distributions else None,
                local_path=None if distributions else _local_path(name),
            )
        )
    return missing


def _local_path(name: str) -> str | None:
    """Where this machine finds module ``name`` (relative to the current folder when under
    it): a folder for a package, a file for a module."""
    source = _source(name)
    if source is None:
        return None
    path = source.parent if source.name == "__init__.py" else source
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
