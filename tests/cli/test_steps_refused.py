"""Steps a local run (or its dry run) refuses before anything starts, in one line with exit
code 252: a command template with a misspelled placeholder, an object timeout under a second,
a name the steps module does not have."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from helpers.batch import cli_in_process

MODULE = textwrap.dedent(
    """
    from pipeline import PipelineSteps, Step

    KEEP = Step.command("cp {input} {output}")
    TYPO = PipelineSteps(cpu=Step.command("gzip -c {inputs} > {output}"), memory=KEEP)
    INSTANT = PipelineSteps(cpu=Step.command("gzip -c {input}", object_timeout=0), memory=KEEP)
    AWK = PipelineSteps(
        cpu=Step.command("awk -F, '{print $1}' {input} > {output}"), memory=KEEP
    )
    """
)


@pytest.fixture(autouse=True)
def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "refused.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (
            "refused:TYPO",
            "error: cpu step command 'gzip -c {inputs} > {output}' has {inputs}; only {input} "
            "and {output} are filled in: write one of them exactly\n",
        ),
        (
            "refused:INSTANT",
            "error: cpu step 'gzip -c {input}': object_timeout must be at least 1 second; got 0\n",
        ),
        (
            "refused:STEPS",
            "error: steps 'refused:STEPS': refused has no STEPS; its PipelineSteps objects: AWK, "
            "INSTANT, TYPO\n",
        ),
    ],
)
def test_steps_that_cannot_work_are_refused_before_a_local_run(
    reference: str, message: str
) -> None:
    code, out, err = cli_in_process(None, "--local", "--dry-run", "--steps", reference)
    assert (code, out, err) == (252, "", message)


def test_an_awk_template_passes_the_dry_run_as_written() -> None:
    code, out, err = cli_in_process(None, "--local", "--dry-run", "--steps", "refused:AWK")
    assert code == 0, err
    assert "awk -F, '{print $1}' {input} > {output}" in err  # the steps line, as written
    assert out
