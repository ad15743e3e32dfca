"""pipeline/jobs/runner.py: everything around a step but the step itself. Staging an object
(pinned to its listed ETag), keeping a step's output, how many objects fit the scratch disk,
what a command's exit says, and the order of the results. S3 is moto's, in this process."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from pipeline import contract
from pipeline.jobs.aws_calls import JobError, TransientJobError
from pipeline.jobs.runner import (
    FACTS_LIMIT,
    MULTIPART_THRESHOLD,
    ObjectRejectedError,
    Staged,
    StepCaller,
    checked_mapping,
    download,
    for_each,
    load_step,
    run_command,
    scratch_slots,
    upload,
)
from pipeline.steps import ObjectRef, Step, TransientStepError

BUCKET = "bucket-a"


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _files(tmp_path: Path, text: str = "x") -> tuple[Path, Path]:
    source = tmp_path / "in"
    source.write_text(text)
    return source, tmp_path / "out"


# --- the step from the job definition -------------------------------------------------------


def test_the_step_is_read_from_the_jobs_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    step = Step.command(["gzip", "-c", "{input}"])
    monkeypatch.setenv(contract.STEP, json.dumps(step.as_json()))
    assert load_step() == step


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "environment variable PIPELINE_STEP is not set; the job definition sets it"),
        ("", "environment variable PIPELINE_STEP is not set"),
        ("{not json", "environment variable PIPELINE_STEP is not a step"),
        ('{"kind": "python"}', "environment variable PIPELINE_STEP is not a step"),
    ],
)
def test_a_missing_or_broken_step_is_one_line(
    monkeypatch: pytest.MonkeyPatch, value: str | None, message: str
) -> None:
    if value is None:
        monkeypatch.delenv(contract.STEP, raising=False)
    else:
        monkeypatch.setenv(contract.STEP, value)
    with pytest.raises(JobError, match=message):
        load_step()


# --- commands -------------------------------------------------------------------------------


def test_a_command_runs_beside_its_input_with_the_steps_environment(tmp_path: Path) -> None:
    # GIVEN a command step (no shell) with a variable of its own
    source, target = _files(tmp_path)
    step = Step.command(["sh", "-c", 'echo "$GREETING $(pwd)"'], environment={"GREETING": "hi"})
    # WHEN it runs on an object THEN it ran in the input's folder, with the variable set
    assert run_command(step, source, target) is None
    assert target.read_text().strip() == f"hi {source.parent}"
    # AND its standard error and printed output leave no file behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_a_shell_commands_paths_are_quoted_whatever_their_names(tmp_path: Path) -> None:
    # GIVEN an input in a folder whose name a shell would split and expand
    folder = tmp_path / "it's a $HOME; `x`"
    folder.mkdir()
    source, target = _files(folder, "payload")
    # WHEN a shell command step names them THEN each path reaches the command as one word
    assert run_command(Step.command("cp {input} {output}"), source, target) is None
    assert target.read_text() == "payload"


def test_a_commands_arguments_take_the_paths_inside_them_unquoted(tmp_path: Path) -> None:
    # GIVEN a command with no shell, whose arguments carry the paths inside other text
    folder = tmp_path / "a b"
    folder.mkdir()
    source, target = _files(folder, "x")
    step = Step.command(
        [
            "sh",
            "-c",
            'printf "%s|%s" "$1" "$2" > "$3"',
            "sh",
            "in={input}",
            "{output}.unused",
            "{output}",
        ]
    )
    # THEN each argument is formatted as text, with no quoting added
    run_command(step, source, target)
    assert target.read_text() == f"in={source}|{target}.unused"


def test_a_command_that_exits_non_zero_without_a_word_says_so(tmp_path: Path) -> None:
    source, target = _files(tmp_path)
    with pytest.raises(ObjectRejectedError, match=r"^the command exited 4: no output$"):
        run_command(Step.command("exit 4 # {input} {output}"), source, target)


def test_a_command_that_exits_75_without_a_word_is_transient(tmp_path: Path) -> None:
    source, target = _files(tmp_path)
    with pytest.raises(TransientStepError, match=r"^the command exited 75$"):
        run_command(Step.command("exit 75 # {input} {output}"), source, target)


def test_a_command_that_writes_no_output_rejects_its_object(tmp_path: Path) -> None:
    source, target = _files(tmp_path)
    with pytest.raises(ObjectRejectedError, match=r"^the command wrote no output$"):
        run_command(Step.command("true {input} {output}"), source, target)


def test_a_rejects_reason_is_the_last_line_of_a_long_error_output(tmp_path: Path) -> None:
    # GIVEN a command that prints 20,000 lines on its standard error, then its reason
    source, target = _files(tmp_path)
    step = Step.command("seq 20000 >&2; echo 'the reason' >&2; exit 2 # {input} {output}")
    with pytest.raises(ObjectRejectedError, match=r"^the command exited 2: the reason$"):
        run_command(step, source, target)


def test_a_failed_commands_last_20_lines_go_to_the_jobs_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a command that prints 30 lines, one not UTF-8, on its standard error and fails
    source, target = _files(tmp_path)
    step = Step.command("seq 29 >&2; printf 'bad \\377 byte\\n' >&2; exit 1 # {input} {output}")
    with pytest.raises(ObjectRejectedError, match=r"^the command exited 1: bad \ufffd byte$"):
        run_command(step, source, target)
    # THEN its last 20 lines are in this job's log (standard error), marked as the command's
    logged = capsys.readouterr()
    assert logged.err.splitlines() == [f"  | {n}" for n in range(11, 30)] + ["  | bad \ufffd byte"]
    assert logged.out == ""


@pytest.mark.parametrize(
    ("printed", "returned"),
    [
        ('{"lines": 3}', {"lines": 3}),
        ("[1, 2]", None),  # not an object
        ("not json", None),
        ("", None),
    ],
)
def test_only_a_json_object_a_command_prints_is_what_it_returns(
    tmp_path: Path, printed: str, returned: dict[str, Any] | None
) -> None:
    source, target = _files(tmp_path)
    (tmp_path / "printed").write_text(printed)
    step = Step.command("cp {input} {output}; cat printed")
    assert run_command(step, source, target) == returned


def test_a_printed_object_larger_than_the_facts_limit_is_not_returned(tmp_path: Path) -> None:
    # GIVEN commands that print a JSON object of exactly the limit, and of one byte more
    source, target = _files(tmp_path)
    padding = FACTS_LIMIT - len('{"x": ""}')
    (tmp_path / "fits").write_text(json.dumps({"x": "0" * padding}))
    (tmp_path / "over").write_text(json.dumps({"x": "0" * (padding + 1)}))
    # THEN the first is what the command returns, the second is not
    fits = run_command(Step.command("cp {input} {output}; cat fits"), source, target)
    assert fits == {"x": "0" * padding}
    assert run_command(Step.command("cp {input} {output}; cat over"), source, target) is None


def test_a_step_caller_turns_a_transient_command_into_a_transient_job(tmp_path: Path) -> None:
    source, target = _files(tmp_path)
    caller = StepCaller(Step.command("exit 75 # {input} {output}"), workers=4)
    with pytest.raises(TransientJobError, match="'key-1': the command exited 75"):
        caller(source, target, ObjectRef("key-1", 1, "e"))
    caller.close()


def test_python_steps_run_in_worker_processes_that_close_leaves_none_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a Python step that rejects one object and describes the other, with 2 workers
    (tmp_path / "pooled.py").write_text(
        "def step(source, target, obj):\n"
        "    if source.read_text() == 'bad':\n"
        "        raise ValueError('unreadable header')\n"
        "    target.write_text(source.read_text())\n"
        "    return {'pid': __import__('os').getpid()}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # the workers import what the job can
    caller = StepCaller(Step.python("pooled:step"), workers=2)
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    try:
        # WHEN it runs on both
        facts = caller(*_files(good, "fine"), ObjectRef("good", 4, "e"))
        with pytest.raises(ObjectRejectedError, match=r"^ValueError: unreadable header$"):
            caller(*_files(bad, "bad"), ObjectRef("bad", 3, "e"))
        # THEN the work ran in another process, and its output and facts came back
        assert facts is not None
        assert facts["pid"] != os.getpid()
        assert (good / "out").read_text() == "fine"
        os.kill(facts["pid"], 0)  # alive while the caller is open
    finally:
        caller.close()
    # AND closing the caller leaves no worker behind
    with pytest.raises(ProcessLookupError):
        os.kill(facts["pid"], 0)


# --- what a step returns --------------------------------------------------------------------


def test_nothing_returned_is_nothing_and_a_mapping_is_kept_as_a_dict() -> None:
    assert checked_mapping(None) is None
    assert checked_mapping({"a": 1}) == {"a": 1}


def test_a_mapping_of_exactly_the_facts_limit_is_accepted_one_byte_more_is_not() -> None:
    padding = FACTS_LIMIT - len(json.dumps({"x": ""}))
    assert checked_mapping({"x": "y" * padding}) == {"x": "y" * padding}
    with pytest.raises(ObjectRejectedError, match=r"returned 65,537 bytes of JSON; at most 65,536"):
        checked_mapping({"x": "y" * (padding + 1)})


# --- how many objects at once ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("largest", "free", "wanted", "slots"),
    [
        (0, 1, 8, 8),  # nothing to stage: as many as wanted
        (100, 10_000, 8, 8),  # room for 40
        (100, 1_000, 8, 4),  # 80% of 1,000 is 800: four objects of 2 x 100
        (100, 999, 8, 3),
        (100, 250, 8, 1),
    ],
)
def test_objects_in_flight_fit_80_percent_of_the_free_scratch_space(
    largest: int, free: int, wanted: int, slots: int
) -> None:
    assert scratch_slots(largest, free, wanted) == slots


def test_an_object_too_large_for_the_scratch_space_fails_the_child_saying_what_to_do() -> None:
    with pytest.raises(JobError, match="needs about 200 bytes of scratch space and 249 are free"):
        scratch_slots(100, 249, 8)


# --- staging and keeping --------------------------------------------------------------------


def test_an_object_is_staged_as_listed(s3: Any, tmp_path: Path) -> None:
    s3.put_object(Bucket=BUCKET, Key="in/a.txt", Body=b"hello")
    etag = s3.head_object(Bucket=BUCKET, Key="in/a.txt")["ETag"].strip('"')
    download(s3, BUCKET, "in/a.txt", etag, tmp_path / "a")
    assert (tmp_path / "a").read_bytes() == b"hello"


def test_an_object_listed_without_an_etag_is_staged_unpinned(s3: Any, tmp_path: Path) -> None:
    s3.put_object(Bucket=BUCKET, Key="in/b.txt", Body=b"unpinned")
    download(s3, BUCKET, "in/b.txt", "", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"unpinned"


def test_an_object_overwritten_since_it_was_listed_is_not_staged(s3: Any, tmp_path: Path) -> None:
    # GIVEN an object listed with one ETag, then overwritten
    s3.put_object(Bucket=BUCKET, Key="in/a.txt", Body=b"first")
    listed = s3.head_object(Bucket=BUCKET, Key="in/a.txt")["ETag"].strip('"')
    s3.put_object(Bucket=BUCKET, Key="in/a.txt", Body=b"second")
    # WHEN it is staged THEN the child fails naming the object, not processing the new version
    with pytest.raises(JobError, match=r"input 'in/a.txt' changed after JobA listed it"):
        download(s3, BUCKET, "in/a.txt", listed, tmp_path / "a")


def test_a_large_object_is_staged_whole_and_pinned_to_its_listed_etag(
    s3: Any, tmp_path: Path
) -> None:
    # GIVEN an object of the managed transfer's size, listed
    body = bytes(range(256)) * (MULTIPART_THRESHOLD // 256)
    s3.put_object(Bucket=BUCKET, Key="in/big", Body=body)
    etag = s3.head_object(Bucket=BUCKET, Key="in/big")["ETag"].strip('"')
    # WHEN it is staged THEN it arrives whole
    download(s3, BUCKET, "in/big", etag, tmp_path / "big")
    assert (tmp_path / "big").read_bytes() == body
    # AND once overwritten, it is refused as a small one is
    s3.put_object(Bucket=BUCKET, Key="in/big", Body=body[::-1])
    with pytest.raises(JobError, match=r"input 'in/big' changed after JobA listed it"):
        download(s3, BUCKET, "in/big", etag, tmp_path / "big")


def test_another_s3_error_is_not_taken_for_a_changed_object(s3: Any, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="NoSuchKey") as error:
        download(s3, BUCKET, "in/gone", "abc", tmp_path / "gone")
    assert not isinstance(error.value, JobError)


@pytest.mark.parametrize("size", [3, MULTIPART_THRESHOLD])
def test_an_output_is_kept_whole_and_its_size_returned(s3: Any, tmp_path: Path, size: int) -> None:
    path = tmp_path / "out"
    path.write_bytes(b"z" * size)
    assert upload(s3, path, BUCKET, "runs/r1/out") == size
    assert s3.get_object(Bucket=BUCKET, Key="runs/r1/out")["Body"].read() == b"z" * size


# --- one object after another ---------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 4])
def test_results_come_in_the_items_order_and_scratch_files_are_removed(
    tmp_path: Path, threads: int
) -> None:
    seen: list[Staged] = []

    def work(number: int, item: str, staged: Staged) -> dict[str, Any]:
        staged.source.write_text(item)
        staged.target.write_text(item.upper())
        seen.append(staged)
        return {"number": number, "item": item}

    results = for_each(["a", "b", "c"], work, scratch=tmp_path, threads=threads)
    assert results == [
        {"number": 0, "item": "a"},
        {"number": 1, "item": "b"},
        {"number": 2, "item": "c"},
    ]
    assert sorted(s.source.name for s in seen) == ["0.in", "1.in", "2.in"]
    assert sorted(s.target.name for s in seen) == ["0.out", "1.out", "2.out"]
    assert list(tmp_path.iterdir()) == []


def test_an_objects_scratch_files_are_removed_when_its_work_fails(tmp_path: Path) -> None:
    def work(number: int, item: str, staged: Staged) -> dict[str, Any]:
        staged.source.write_text(item)
        raise JobError(f"{item} failed")

    with pytest.raises(JobError, match="a failed"):
        for_each(["a"], work, scratch=tmp_path, threads=4)
    assert list(tmp_path.iterdir()) == []
