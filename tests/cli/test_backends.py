"""The same commands against both backends: AWS (moto) and ``--local``. Every flag means the
same, and ``--json`` has the same shapes, key by key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.batch import STACK, EngineBatch, cli_in_process, engine_batch
from pipeline.local.run_folder import runs_dir

pytestmark = pytest.mark.slow


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for number in range(6):
        (folder / f"f{number}.txt").write_text("data\n" * (number + 1))
    return folder


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PIPELINE_LOCAL_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def shape(value: Any) -> Any:
    """The JSON's structure: keys and value types, lists by their first element."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return "null" if value is None else type(value).__name__


def assert_same_shape(aws: Any, local: Any, where: str = "") -> None:
    """Same keys at every level; a null on one side matches anything on the other (a job
    that has no status reason on one backend may have one on the other)."""
    if aws == "null" or local == "null" or aws == [] or local == []:
        return
    if isinstance(aws, dict):
        assert isinstance(local, dict), where
        assert set(aws) == set(local), f"{where}: {sorted(set(aws) ^ set(local))}"
        for key in aws:
            assert_same_shape(aws[key], local[key], f"{where}.{key}")
    elif isinstance(aws, list):
        assert isinstance(local, list), where
        assert_same_shape(aws[0], local[0], f"{where}[0]")
    else:
        assert {aws, local} <= {"int", "float"} or aws == local, f"{where}: {aws} vs {local}"


def test_dry_run_prints_the_same_five_requests_and_runs_nothing(aws: EngineBatch) -> None:
    aws.count_calls()
    code, out, err = cli_in_process(
        aws, "--stack", STACK, "--dry-run", "--json", "--array-size", "2"
    )
    assert code == 0, err
    runs_before = sorted(runs_dir().glob("*")) if runs_dir().exists() else []
    local_code, local_out, local_err = cli_in_process(
        None, "--local", "--dry-run", "--json", "--array-size", "2"
    )
    assert local_code == 0, local_err
    # no services were started and no run was made: no run folder, no endpoint announced
    assert (sorted(runs_dir().glob("*")) if runs_dir().exists() else []) == runs_before
    assert "services at" not in local_err
    assert "SubmitJob" not in aws.calls
    on_aws, local = json.loads(out), json.loads(local_out)
    assert [r["jobName"] for r in on_aws] == [r["jobName"] for r in local]
    for a, b in zip(on_aws, local, strict=True):
        assert_same_shape(shape(a), shape(b), a["jobName"])
        assert (
            a["containerOverrides"]["resourceRequirements"]
            == (b["containerOverrides"]["resourceRequirements"])
        )
        assert [d.get("type") for d in a.get("dependsOn", [])] == [
            d.get("type") for d in b.get("dependsOn", [])
        ]


def test_max_vcpu_hours_refuses_the_same_way(aws: EngineBatch) -> None:
    flags = ("--array-size", "2", "--max-vcpu-hours", "0.001")
    code, _, err = cli_in_process(aws, "--stack", STACK, *flags)
    local_code, _, local_err = cli_in_process(None, "--local", *flags)
    assert (code, local_code) == (252, 252)
    assert err.startswith("error: the run's worst case is ")
    assert local_err == err  # the same pipeline, the same worst case, the same words


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--poll-interval", "0"), ("--poll-interval", "-1"), ("--max-vcpu-hours", "nan")],
)
def test_bad_numbers_are_refused_the_same_way(aws: EngineBatch, flag: str, value: str) -> None:
    code, _, err = cli_in_process(aws, "--stack", STACK, flag, value)
    local_code, _, local_err = cli_in_process(None, "--local", flag, value)
    assert (code, local_code) == (252, 252)
    assert local_err == err
    assert "must be a finite number above 0" in err


def test_a_watched_run_has_the_same_json_on_both(
    aws: EngineBatch, inputs: Path, state: Path
) -> None:
    code, out, err = cli_in_process(
        aws, "--stack", STACK, "--array-size", "2", "--watch", "--json", "--poll-interval", "0.01"
    )
    assert code == 0, err
    local_code, local_out, local_err = cli_in_process(
        None, "--local", "--array-size", "2", "--watch", "--json", "--input", str(inputs)
    )
    assert local_code == 0, local_err[-2000:]
    on_aws, local = json.loads(out), json.loads(local_out)
    assert on_aws["status"] == local["status"] == "SUCCEEDED"
    assert on_aws["local"] is None
    assert set(local["local"]) >= {"summary", "notifications", "attempts", "copiedTo", "logs"}
    assert_same_shape(shape({**on_aws, "local": None}), shape({**local, "local": None}))


def test_a_failed_run_and_its_status_have_the_same_json_on_both(
    aws: EngineBatch, inputs: Path, state: Path
) -> None:
    # GIVEN JobB's child 1 fails on both: the same fault, injected the same way
    aws.inject("JobB:1=exit:2")
    flags = ("--array-size", "2", "--watch", "--json", "--run-id", "same-run")
    # (AWS first: a local run resets moto's state, which is per process)
    code, out, _ = cli_in_process(aws, "--stack", STACK, *flags, "--poll-interval", "0.01")
    status_code, status_out, status_err = cli_in_process(
        aws, "status", "same-run", "--stack", STACK, "--json"
    )
    local_code, local_out, local_err = cli_in_process(
        None, "--local", *flags, "--input", str(inputs), "--inject", "JobB:1=exit:2"
    )
    assert (code, local_code) == (1, 1), local_err[-2000:]
    on_aws, local = json.loads(out), json.loads(local_out)
    for result in (on_aws, local):
        assert result["status"] == "FAILED"
        assert (result["failure"]["job"], result["failure"]["arrayIndex"]) == ("JobB", 1)
        assert result["failure"]["exitCode"] == 2
    assert_same_shape(shape({**on_aws, "local": None}), shape({**local, "local": None}))
    # AND status of that run answers alike
    local_code, local_out, local_err = cli_in_process(
        None, "status", "same-run", "--local", "--json"
    )
    assert (status_code, local_code) == (0, 0), (status_err, local_err)
    on_aws, local = json.loads(status_out), json.loads(local_out)
    assert on_aws["status"] == local["status"] == "FAILED"
    assert on_aws["failure"]["job"] == local["failure"]["job"] == "JobB"
    assert_same_shape(shape(on_aws), shape(local))


def test_cancel_of_an_unknown_local_run_is_one_line(state: Path) -> None:
    code, _, err = cli_in_process(None, "cancel", "some-run", "--local")
    assert code == 252
    assert err.startswith("error: no local run 'some-run' in ")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flag", ["--stack", "--queue", "--region", "--profile"])
def test_local_with_aws_flags_is_one_line(flag: str) -> None:
    code, _, err = cli_in_process(None, "--local", flag, "x", "--dry-run")
    assert code == 252
    assert err == f"error: --local runs on this machine; drop {flag}\n"
