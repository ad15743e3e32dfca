"""As pip users get it: extras, an installed wheel outside the repository, clean stdout,
odd local inputs, hints that work, retry lines, a grant that covers the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers.batch import STACK, EngineBatch, cli_in_process, engine_batch
from helpers.cli import run_cli
from helpers.paths import REPO
from helpers.synth import new_app
from pipeline.local.sample import NOT_UTF8, read_input_dir


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PIPELINE_LOCAL_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def test_a_name_that_is_not_utf8_is_accounted_for_not_a_traceback(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.txt").write_text("fine\n")
    os.makedirs(os.fsencode(folder / "sub"))
    with open(os.path.join(os.fsencode(folder / "sub"), b"caf\xe9.txt"), "wb") as bad:
        bad.write(b"latin-1 name\n")
    objects, not_seeded = read_input_dir(folder)
    assert list(objects) == ["good.txt"]
    assert not_seeded == {"sub/caf\\xe9.txt": NOT_UTF8}


@pytest.mark.slow
def test_a_local_run_reports_unseeded_names_and_the_size_limit(tmp_path: Path, state: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "small.txt").write_text("small\n" * 10)
    (folder / "big.bin").write_bytes(b"\x02" * 2_500_000)
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.txt"), "wb") as bad:
        bad.write(b"x\n")
    code, out, err = cli_in_process(
        None, "--local", "--array-size", "2", "--input", str(folder), "--run-id", "seeded"
    )
    assert code == 0, err[-2000:]
    assert "not seeded: caf\\xe9.txt: name is not valid UTF-8" in out
    assert "2 input objects, 1 processed, 1 rejected, 10/10 checks passed" in out
    assert "rejected: larger than the 1,048,576-byte limit (1)" in out  # every reason said
    assert (
        "1 rejected over the local limit of 1,048,576 bytes; raise it with --max-object-bytes N"
        in out
    )
    # AND a later look at the run still says what it left out
    code, status_out, err = cli_in_process(None, "status", "seeded", "--local")
    assert code == 0, err[-2000:]
    assert "not seeded: caf\\xe9.txt: name is not valid UTF-8" in status_out + err
    # WHEN the limit is raised, the file is processed
    code, out, err = cli_in_process(
        None,
        "--local",
        "--array-size",
        "2",
        "--input",
        str(folder),
        "--json",
        "--max-object-bytes",
        "3000000",
    )
    assert code == 0, err[-2000:]
    objects = json.loads(out)["local"]["summary"]["objects"]
    assert objects == {"listed": 2, "processed": 2, "rejected": 0}


@pytest.mark.slow
def test_a_retried_attempt_is_said_in_the_human_output(tmp_path: Path, state: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("a\n")
    code, out, err = cli_in_process(
        None,
        "--local",
        "--array-size",
        "2",
        "--input",
        str(folder),
        "--inject",
        "JobB:1=host-terminated",
    )
    assert code == 0, err[-2000:]
    assert "JobB: 1 attempt retried (Host EC2 (instance i-0local) terminated.)" in out


@pytest.mark.slow
def test_a_failed_local_runs_hints_work_for_the_local_backend(tmp_path: Path, state: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("a\n")
    code, out, err = cli_in_process(
        None,
        "--local",
        "--array-size",
        "2",
        "--input",
        str(folder),
        "--inject",
        "JobB:1=exit:3",
        "--run-id",
        "hinted",
    )
    assert code == 1
    assert "python -m pipeline.submit status hinted --local" in out  # in the notification
    assert "resume hinted --failed-only --local" in err
    # and the hinted command works
    code, out, err = cli_in_process(None, "status", "hinted", "--local")
    assert code == 0, err
    assert out.startswith("run hinted FAILED: JobB[1] failed")


@pytest.mark.parametrize("missing", ["moto", "flask"])
def test_missing_local_extra_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a)
    )
    code, _, err = cli_in_process(None, "--local", "--array-size", "2")
    assert code == 253
    assert err == (
        "error: --local needs the embedded AWS services, which are not installed: "
        "pip install 'array-job-pipeline[local]'\n"
    )
    # a dry run needs no services
    code, _, _ = cli_in_process(None, "--local", "--dry-run", "--array-size", "2")
    assert code == 0


# --- the grant covers what the CLI calls ------------------------------------------------------


def _granted_actions(tmp_path: Path) -> set[str]:
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam

    from pipeline import ArrayJobPipeline

    app = new_app(tmp_path)
    stack = cdk.Stack(app, "Granted")
    pipeline = ArrayJobPipeline(stack, "Pipeline", array_size=10)
    role = iam.Role(stack, "Operator", assumed_by=iam.AccountRootPrincipal())
    policy = pipeline.grant_submit_jobs(role)
    assert policy is not None
    template = app.synth().get_stack_by_name("Granted").template
    document = next(
        r["Properties"]["PolicyDocument"]
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::IAM::Policy" and "SubmitJobsGrant" in k
    )
    actions: set[str] = set()
    for statement in document["Statement"]:
        listed = statement["Action"]
        actions |= set([listed] if isinstance(listed, str) else listed)
    return actions


@pytest.mark.slow
def test_grant_submit_jobs_covers_every_call_the_cli_makes(tmp_path: Path) -> None:
    # GIVEN every AWS operation the CLI calls, recorded with botocore's event hooks, for
    # submit + watch, status (with the failure report and its log read), cancel and resume,
    # and the listing of BucketA that sizes a run given no size
    called: set[str] = set()
    # the IAM action an operation needs, where it is not the operation's own name (Amazon S3
    # API Reference, ListObjectsV2: "you must have permission to perform the s3:ListBucket
    # action")
    action = {"s3:ListObjectsV2": "s3:ListBucket"}

    def record(event_name: str, **_: Any) -> None:
        _, service, operation = event_name.split(".")[:3]
        prefix = {"cloudwatch-logs": "logs"}.get(service, service)
        called.add(action.get(f"{prefix}:{operation}", f"{prefix}:{operation}"))

    with engine_batch() as aws:
        logs = _logs_client(aws)
        s3 = aws.with_input({"in/a.csv": b"a", "in/b.csv": b"b"})
        for client in (aws.batch, aws.cloudformation, logs, s3):
            client.meta.events.register("before-call", record)
        _exercise_the_cli(aws, logs)
    # THEN each is granted, and the grant has nothing the CLI does not call
    granted = _granted_actions(tmp_path)
    assert called - granted == set()
    assert granted - called <= {"batch:TagResource"}  # tag-on-create: authorized, not called


def _logs_client(aws: EngineBatch) -> Any:
    import boto3

    logs = boto3.client("logs", region_name="us-east-1")
    logs.create_log_group(logGroupName="pipeline-logs")
    logs.create_log_stream(logGroupName="pipeline-logs", logStreamName="JobB/default/x")
    return logs


def _exercise_the_cli(aws: EngineBatch, logs: Any) -> None:
    from pipeline.backends.aws import Aws
    from pipeline.cli.commands import main

    def connector(_profile: str | None, _region: str | None) -> Aws:
        return Aws(aws.batch, aws.cloudformation, logs, aws.s3)

    def cli(*argv: str) -> int:
        import io

        return main(list(argv), connector=connector, stdout=io.StringIO(), stderr=io.StringIO())

    ids: dict[str, str] = {}

    def fail_b(parsed: dict[str, Any], **_: Any) -> None:
        ids[parsed["jobName"]] = parsed["jobId"]
        if parsed["jobName"] == "JobB":
            aws.succeed(ids["JobA"])
            aws.fail_child(
                parsed["jobId"],
                1,
                "Essential container in task exited",
                log_stream_name="JobB/default/x",
            )
            aws.run_at_once()

    aws.hold_new_jobs()
    aws.batch.meta.events.register("after-call.batch.SubmitJob", fail_b)
    assert (
        cli(
            "--stack",
            STACK,
            "--array-size",
            "2",
            "--watch",
            "--poll-interval",
            "0.01",
            "--run-id",
            "granted",
        )
        == 1
    )
    aws.batch.meta.events.unregister("after-call.batch.SubmitJob", fail_b)
    assert cli("status", "granted", "--stack", STACK) == 0
    assert cli("resume", "granted", "--stack", STACK, "--failed-only") == 0
    assert cli("cancel", "granted", "--stack", STACK) == 0
    # a run named by its queue (its definitions are described), then cancelled while one job
    # runs and the others wait: CancelJob and TerminateJob
    aws.hold_new_jobs()
    assert cli("--queue", "ProdQueue", "--array-size", "2", "--run-id", "held") == 0
    # diagnose while it waits (GetJobQueueSnapshot among its calls)
    assert cli("diagnose", "held", "--queue", "ProdQueue") == 0
    running = next(j for j in aws.parents() if j.job_name == "JobA" and j.status == "RUNNABLE")
    aws.start(running.job_id)
    assert cli("cancel", "held", "--queue", "ProdQueue") == 0
    assert cli("report", "granted", "--stack", STACK) == 0
    # a run given no size lists BucketA to size itself (a dry run lists it the same way)
    assert cli("--stack", STACK, "--dry-run") == 0


# --- installed as pip users get it ----------------------------------------------------------


@pytest.mark.slow
def test_the_wheel_installed_with_the_local_extra_runs_outside_the_repo(
    wheel: Path, tmp_path: Path
) -> None:
    # GIVEN a fresh virtualenv with the wheel and its [local] extra (pinned like the suite)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip = [
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-compile",
        "-c",
        str(REPO / "constraints/dev.txt"),
    ]
    subprocess.run([*pip, f"{wheel}[local]"], check=True, capture_output=True, timeout=600)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # THEN it adds only this library's package, with the image inside it
    top_level = {p.name for p in Path(site).iterdir()}
    assert "pipeline" in top_level
    assert "job_images" not in top_level
    assert (Path(site) / "pipeline" / "job_image" / "Dockerfile").exists()
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    def submit(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(tmp_path, *args, python=str(python), cwd=outside, timeout=300)

    dry = submit("--dry-run", "--json", "--array-size", "2")
    assert dry.returncode == 0, dry.stderr
    assert [r["jobName"] for r in json.loads(dry.stdout)] == [
        "JobA",
        "JobB",
        "JobC",
        "JobD",
        "JobE",
    ]
    run = submit("--local", "--array-size", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "SUCCEEDED" in run.stdout
    # AND a project of the user's own, with its steps, runs them
    _user_steps_run(submit, outside)
    # AND without the extra, --local says which extra in one line
    subprocess.run(
        [str(python), "-m", "pip", "uninstall", "--quiet", "--yes", "moto"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    missing = submit("--local", "--array-size", "2")
    assert missing.returncode == 253
    assert missing.stderr.strip().splitlines() == [
        "error: --local needs the embedded AWS services, which are not installed: "
        "pip install 'array-job-pipeline[local]'"
    ]


USER_STEPS = """\
from collections import Counter
from pathlib import Path

from pipeline import PipelineSteps, Step


def count_words(source: Path, target: Path, obj):
    words = source.read_text(errors="replace").split()
    if not words:
        raise ValueError("nothing but blanks in it")
    target.write_text("\\n".join(words))
    return {"words": len(words)}


def top_ten(source: Path, target: Path, obj):
    counts = Counter(source.read_text().split())
    target.write_text("".join(f"{word} {n}\\n" for word, n in counts.most_common(10)))
    return {"distinct": len(counts), "top": counts.most_common(1)[0][0]}


def totals(items):
    items = list(items)
    return {"files": len(items), "distinct": sum(i["distinct"] for i in items)}


STEPS = PipelineSteps(
    cpu=Step.python("mymod:count_words"),
    memory=Step.python("mymod:top_ten"),
    aggregate=Step.python("mymod:totals"),
)
"""


def _user_steps_run(submit: Callable[..., subprocess.CompletedProcess[str]], project: Path) -> None:
    """A user's module of steps, outside the repository: run, then a failed child resumed."""
    (project / "mymod.py").write_text(USER_STEPS)
    inputs = project / "in"
    inputs.mkdir()
    for number in range(6):
        (inputs / f"doc{number}.txt").write_text(f"the cat sat on mat {number} the end\n")
    (inputs / "blank.txt").write_text("   \n")
    out = project / "out"
    arguments = ["--local", "--steps", "mymod:STEPS", "--input", "in", "--json"]
    run = submit(*arguments, "--output", "out", "--array-size", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)["local"]["summary"]
    assert summary["objects"] == {"listed": 7, "processed": 6, "rejected": 1}
    assert summary["aggregate"] == {"step": "mymod:totals", "result": {"files": 6, "distinct": 42}}
    assert [c["passed"] for c in summary["checks"]] == [True] * 10
    (copied,) = out.iterdir()
    assert (copied / "outputs" / "doc3.txt").read_text().startswith("the 2\n")
    (reject,) = json.loads((copied / "rejects.json").read_text())["rejects"]
    assert reject == {
        "key": "blank.txt",
        "reason": "cpu step: ValueError: nothing but blanks in it",
        "stage": "cpu",
    }
    # WHEN a child fails and the run is resumed for it, THEN the user's steps run again
    failed = submit(
        *arguments, "--inject", "JobC:1=exit:1", "--run-id", "mine", "--array-size", "2"
    )
    assert failed.returncode == 1
    resumed = submit("resume", "mine", "--failed-only", "--local", "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)["local"]["summary"]
    assert summary["aggregate"]["result"] == {"files": 6, "distinct": 42}
    assert summary["objects"]["processed"] == 6


@pytest.mark.slow
def test_scripts_dev_local_json_is_valid_json_on_a_fresh_checkout(tmp_path: Path) -> None:
    # GIVEN a checkout with no node_modules and this suite's .venv
    checkout = tmp_path / "checkout"
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        source = REPO / name
        target = checkout / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    # The checkout shares this suite's .venv, which must be current for scripts/dev not to
    # reinstall into it (that would point its editable install at this temporary checkout).
    stamp = subprocess.run(
        "cat pyproject.toml constraints/dev.txt | cksum | cut -d' ' -f1",
        shell=True,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert (REPO / ".venv" / f".installed-dev-{stamp}").exists(), "run scripts/dev setup first"
    (checkout / ".venv").symlink_to(REPO / ".venv")
    (checkout / ".venv-checkov").symlink_to(REPO / ".venv-checkov")
    env = {**os.environ, "PIPELINE_LOCAL_STATE_DIR": str(tmp_path / "state")}
    result = subprocess.run(
        ["bash", "scripts/dev", "local", "--json", "--array-size", "2"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (checkout / "node_modules").exists()  # a local run needs no Node.js tools
    assert json.loads(result.stdout)["status"] == "SUCCEEDED"  # nothing else reached stdout


def test_every_kind_of_entry_in_an_input_folder_is_seeded_or_said_why(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "plain.txt").write_text("plain\n")
    (folder / "line\nbreak.txt").write_text("x\n")
    deep = folder / "/".join(["d" * 200] * 6)
    deep.mkdir(parents=True)
    (deep / "long.txt").write_text("x\n")
    os.mkfifo(folder / "pipe")
    (folder / "dangling").symlink_to(folder / "nowhere")
    (folder / "loop").symlink_to(folder / "loop")
    outside = tmp_path / "secret.txt"
    outside.write_text("not an input\n")
    (folder / "escape").symlink_to(outside)
    (folder / "inside").symlink_to(folder / "plain.txt")
    (folder / "folder-link").symlink_to(folder / "sub")
    objects, not_seeded = read_input_dir(folder)
    assert sorted(objects) == ["inside", "plain.txt"]
    long_key = f"{'/'.join(['d' * 200] * 6)}/long.txt"
    assert not_seeded == {
        "line\\nbreak.txt": "name has a control character (a newline, a tab ...), which S3 "
        "keys avoid",
        long_key: "name is 1,214 bytes in UTF-8; S3 object keys are at most 1,024",
        "pipe": "a FIFO, not a regular file",
        "dangling": "a link to nothing",
        "loop": "a link that loops",
        "escape": f"a link out of --input (to {outside}), not followed",
        "folder-link": "a link to a folder, not followed",
    }


def test_an_unreadable_folder_is_said_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    (folder / "closed").mkdir(parents=True)
    (folder / "closed" / "hidden.txt").write_text("x\n")
    (folder / "open.txt").write_text("x\n")
    real_open = os.open

    def opening(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        # as without the permission (root reads any folder)
        if str(path) == "closed" and flags & os.O_DIRECTORY:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", opening)
    objects, not_seeded = read_input_dir(folder)
    assert list(objects) == ["open.txt"]
    assert not_seeded == {"closed": "folder cannot be read: Permission denied"}


def test_a_folder_swapped_for_a_link_while_it_is_read_sends_nothing_from_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an input folder with a subfolder, and a private folder beside it
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_text("input\n")
    (folder / "top.txt").write_text("input\n")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "a.txt").write_text("secret\n")
    real_lstat = os.lstat

    def lstat(path: Any, *args: Any, **kwargs: Any) -> Any:
        found = real_lstat(path, *args, **kwargs)
        if path == "sub":  # seen as a folder, then swapped for a link before it is opened
            shutil.rmtree(folder / "sub")
            (folder / "sub").symlink_to(secret)
        return found

    monkeypatch.setattr(os, "lstat", lstat)
    # WHEN the folder is read, THEN nothing of the private folder is, and the swap is said
    objects, not_seeded = read_input_dir(folder)
    assert objects == {"top.txt": b"input\n"}
    assert not_seeded == {"sub": "folder cannot be read: Not a directory"}
