"""``job_image`` as a user meets it: steps that import a package, a Debian tool, a project
folder with a ``.env`` beside the code. What an image holds is its synthesized build context
(the cloud assembly's ``job-image-context.*`` folder, which a deploy hands to Docker): there
is no Docker engine here, so the tests read that context and never build it."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_batch as batch

from helpers.batch import cli_in_process
from pipeline import ArrayJobPipeline, PipelineConfigError, PipelineSteps, Step, job_image
from pipeline.errors import SpecError
from pipeline.steps import load_steps

YAML_STEPS = textwrap.dedent(
    """
    from pathlib import Path

    import yaml

    from pipeline import PipelineSteps, Step


    def settings(source: Path, target: Path, obj) -> dict:
        loaded = yaml.safe_load(source.read_text())
        target.write_text(yaml.safe_dump(loaded))
        return {"keys": len(loaded or {})}


    STEPS = PipelineSteps(
        cpu=Step.python("yamlsteps:settings"),
        memory=Step.command("cp {input} {output}"),
    )
    """
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's project: a steps module that imports PyYAML, importable as ``yamlsteps``,
    with the project folder as the current one."""
    (tmp_path / "yamlsteps.py").write_text(YAML_STEPS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _context(outdir: Path) -> Path:
    """The build context folder the one ``job_image`` of an app was assembled in."""
    (context,) = outdir.glob("job-image-context.*")
    return context


def _pipeline(project: Path, **image: Any) -> ArrayJobPipeline:
    app = cdk.App(outdir=str(project / "cdk.out"))
    stack = cdk.Stack(app, "Settings")
    steps = load_steps("yamlsteps:STEPS")
    built = job_image(stack, code=["yamlsteps.py"], **image)
    return ArrayJobPipeline(stack, "Pipeline", steps=steps.with_image(built), array_size=10)


# --- what a step imports ---------------------------------------------------------------------


def test_a_step_importing_a_package_its_image_lacks_is_refused_at_synthesis(
    project: Path,
) -> None:
    # GIVEN steps that import yaml, in an image of their code only
    # WHEN the pipeline is built with them
    with pytest.raises(PipelineConfigError) as refused:
        _pipeline(project)
    # THEN synthesis refuses, in one line naming the package and the fix
    assert str(refused.value) == (
        "cpu step 'yamlsteps:settings' imports yaml (in yamlsteps), which its image does not "
        'have: add it to job_image(..., requirements=["PyYAML"])'
    )


def test_the_same_step_is_accepted_once_requirements_lists_the_package(project: Path) -> None:
    # GIVEN the same steps, in an image whose requirements list PyYAML
    # WHEN the pipeline is built with them
    pipeline = _pipeline(project, requirements=["PyYAML==6.0.2"])
    # THEN it is, and its JobB runs that image
    assert pipeline.job_definitions["JobB"] is not None


def test_steps_check_refuses_what_their_image_lacks(project: Path) -> None:
    # GIVEN the steps with an image of their code only, as a user's app would give them
    image = job_image(cdk.App(outdir=str(project / "out")), code=["yamlsteps.py"])
    steps = load_steps("yamlsteps:STEPS").with_image(image)
    # WHEN they check themselves
    # THEN they refuse, as synthesis would
    with pytest.raises(SpecError, match=r"imports yaml \(in yamlsteps\), which its image"):
        steps.check()


def test_a_local_run_warns_in_one_line_of_what_a_deployed_image_would_need(
    project: Path,
) -> None:
    # GIVEN the same steps with no image (a run on this machine finds yaml where it is)
    # WHEN a local dry run takes them
    code, _out, err = cli_in_process(None, "--local", "--dry-run", "--steps", "yamlsteps:STEPS")
    # THEN it goes on, saying once what their image will need
    assert code == 0
    notes = [line for line in err.splitlines() if "imports yaml" in line]
    assert notes == [
        "note: the cpu step 'yamlsteps:settings' imports yaml, which this machine has; "
        'deployed, its image needs it too: add it to job_image(..., requirements=["PyYAML"])'
    ]


def test_an_import_of_the_users_own_module_outside_the_image_names_code(
    project: Path,
) -> None:
    # GIVEN a step whose module imports a helper module of the project the image lacks
    (project / "helpers_of_mine.py").write_text("X = 1\n")
    (project / "usinghelper.py").write_text(
        "import helpers_of_mine\n\ndef step(source, target, obj):\n    return None\n"
    )
    image = job_image(cdk.App(outdir=str(project / "out")), code=["usinghelper.py"])
    step = Step.python("usinghelper:step", image=image)
    # WHEN it is checked
    # THEN the fix is to add that module to the image's code
    fix = r'add it to job_image\(\.\.\., code=\["helpers_of_mine.py"\]\)'
    with pytest.raises(SpecError, match=fix):
        step.check("cpu")


def test_optional_and_typing_only_imports_are_not_required(project: Path) -> None:
    # GIVEN a step that imports a package only if it is there, and another only for typing
    (project / "optional.py").write_text(
        textwrap.dedent(
            """
            from typing import TYPE_CHECKING

            try:
                import ujson as json
            except ImportError:
                import json

            if TYPE_CHECKING:
                import pandas

            def step(source, target, obj):
                return None
            """
        )
    )
    image = job_image(cdk.App(outdir=str(project / "out")), code=["optional.py"])
    # WHEN it is checked THEN nothing is refused
    Step.python("optional:step", image=image).check("cpu")


# --- what the image holds ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An app whose job definition runs a job_image with requirements, Debian packages and
    a code folder holding dotfiles, synthesized once: (the image's context, the assembly)."""
    root = tmp_path_factory.mktemp("project")
    steps = root / "mysteps"
    (steps / ".git").mkdir(parents=True)
    (steps / "__init__.py").write_text("")
    (steps / "work.py").write_text("def step(s, t, o):\n    return None\n")
    (steps / ".env").write_text("API_TOKEN=secret\n")
    (steps / ".settings.toml").write_text("level = 3\n")
    (steps / ".git" / "config").write_text("[core]\n")
    (root / "requirements.txt").write_text("# for the steps\npandas>=2\npyarrow==17.0.0\n")
    app = cdk.App(outdir=str(root / "cdk.out"))
    stack = cdk.Stack(app, "Images")
    image = job_image(
        stack,
        code=[steps, steps / ".settings.toml"],
        requirements=root / "requirements.txt",
        system_packages=["gawk", "imagemagick"],
    )
    batch.EcsJobDefinition(
        stack,
        "Job",
        container=batch.EcsEc2ContainerDefinition(
            stack, "Container", image=image, cpu=1, memory=cdk.Size.mebibytes(512)
        ),
    )
    out = Path(app.synth().directory)
    manifest = json.loads(next(out.glob("*.assets.json")).read_text())
    (asset,) = manifest["dockerImages"].values()
    # The image asset as the assembly stages it: what a deploy hands to Docker.
    return out / asset["source"]["directory"], out


def test_requirements_and_system_packages_are_in_the_synthesized_context(
    assembly: tuple[Path, Path],
) -> None:
    context, out = assembly
    # THEN the assembly's image asset is the context job_image assembled ...
    assert context.name.endswith(_context(out).name.rsplit(".", 1)[1])
    # ... holding the requirements as given and the packages, one a line
    assert (context / "steps-requirements.txt").read_text() == (
        "# for the steps\npandas>=2\npyarrow==17.0.0\n"
    )
    assert (context / "system-packages.txt").read_text() == "gawk\nimagemagick\n"
    # ... which its Dockerfile installs
    dockerfile = (context / "Dockerfile").read_text()
    assert "COPY steps-requirements.txt ./" in dockerfile
    assert "pip install --requirement steps-requirements.txt" in dockerfile
    assert "xargs --arg-file=system-packages.txt" in dockerfile


def test_a_code_folders_dotfiles_are_left_out_unless_named(assembly: tuple[Path, Path]) -> None:
    context, _ = assembly
    code = sorted(
        str(p.relative_to(context / "code")) for p in (context / "code").rglob("*") if p.is_file()
    )
    # THEN the code is there, the .env and .git are not, and the dotfile named on its own is
    assert code == ["mysteps/.settings.toml", "mysteps/__init__.py", "mysteps/work.py"]


def test_the_image_strips_setuid_and_setgid_bits_after_every_install(
    assembly: tuple[Path, Path],
) -> None:
    context, _ = assembly
    instructions = [
        line.split()[0]
        for line in (context / "Dockerfile").read_text().splitlines()
        if line and not line.startswith((" ", "#"))
    ]
    runs = [
        line
        for line in (context / "Dockerfile").read_text().splitlines()
        if line.startswith("RUN ")
    ]
    # THEN the last RUN strips both bits from every file of the root filesystem, and the
    # image's user comes right after it
    assert runs[-1] == (
        r"RUN find / -xdev -type f \( -perm -4000 -o -perm -2000 \) -exec chmod ug-s {} +"
    )
    assert instructions[instructions.index("USER") - 1] == "RUN"
    assert len(re.findall(r"^RUN find / -xdev", "\n".join(runs), re.MULTILINE)) == 1


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"requirements": ["-r other.txt"]},
            r"^job_image requirements: '-r other.txt' names a file the image's build context "
            r"does not have; list its requirements instead$",
        ),
        (
            {"requirements": "no-such-file.txt"},
            r"^job_image requirements 'no-such-file.txt' is not a file",
        ),
        (
            {"system_packages": ["gawk; rm -rf /"]},
            r"^job_image system_packages: 'gawk; rm -rf /' is not a Debian package name",
        ),
        ({"system_packages": "gawk"}, r"^job_image system_packages must be a list"),
    ],
)
def test_what_job_image_cannot_build_is_one_line(
    tmp_path: Path, given: dict[str, Any], message: str
) -> None:
    with pytest.raises(PipelineConfigError, match=message) as refused:
        job_image(cdk.App(outdir=str(tmp_path)), **given)
    assert "\n" not in str(refused.value)


def test_steps_without_a_third_party_import_need_no_requirements(project: Path) -> None:
    # GIVEN the library's own steps in an image of nothing else
    image = job_image(cdk.App(outdir=str(project / "out")))
    # WHEN they are checked THEN they pass: the library and boto3 are in every image
    PipelineSteps(
        cpu=Step.python("pipeline.jobs.default_steps:digest_and_compress", image=image),
        memory=Step.python("pipeline.jobs.default_steps:byte_statistics", image=image),
    ).check()
