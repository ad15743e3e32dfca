"""``python -m pipeline.local serve``: the local services on a loopback port.

    python -m pipeline.local serve --with-pipeline --port 4566
    # it prints the export line to use: the endpoint and the services' own credentials
    aws batch describe-job-queues

Every request must be signed (AWS Signature Version 4) with the services' credentials: new
random ones each start, printed, and kept in the state folder while they run; or the ones
given with --access-key-id/--secret-access-key (or PIPELINE_LOCAL_ACCESS_KEY_ID and
PIPELINE_LOCAL_SECRET_ACCESS_KEY), for a test suite that needs to know them in advance.

Ctrl-C or SIGTERM stops them, with every job they run; with ``--state-dir`` what happened is
kept there and the next ``serve`` on that folder starts where this one stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import EXIT_BAD_INPUT, EXIT_CONFIG, EXIT_LOCAL, EXIT_OK, SpecError
from pipeline.limits import check_array_size
from pipeline.local.deployment import LOCAL_ARRAY_SIZE, REGION
from pipeline.local.guard import ACCESS_KEY_ID_ENV, SECRET_ACCESS_KEY_ENV
from pipeline.local.sigv4 import Credentials

if TYPE_CHECKING:
    from pipeline.steps import PipelineSteps

PROG = "python -m pipeline.local"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise SpecError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Local AWS services with AWS Batch on this machine.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = commands.add_parser(
        "serve",
        help="S3, DynamoDB, SNS, SQS, CloudWatch Logs, EventBridge and AWS Batch on one port",
    )
    serve.add_argument("--port", type=_port, default=0, help="loopback port (default: a free one)")
    serve.add_argument(
        "--with-pipeline",
        action="store_true",
        help="create the workflow's queue, job definitions, buckets, table and topic, and "
        "seed BucketA (the sample, or --input)",
    )
    serve.add_argument("--input", metavar="DIR", help="with --with-pipeline: seed BucketA from DIR")
    serve.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep the services' state in DIR as it changes; start again from it",
    )
    serve.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="JOB[:INDEX]=FAULT",
        help="make one attempt fail: exit:CODE, host-terminated, timeout or out-of-memory "
        "(repeatable)",
    )
    serve.add_argument(
        "--steps",
        metavar="MODULE:NAME",
        help="with --with-pipeline: the PipelineSteps object the job definitions run, or "
        "their JSON as a run keeps them (default: a --state-dir's own, else the library's)",
    )
    serve.add_argument("--vcpus", type=int, help="the vCPU budget (default: this machine's cores)")
    serve.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or REGION,
        help="the region the services answer for (default: $AWS_REGION, $AWS_DEFAULT_REGION, "
        f"else {REGION})",
    )
    serve.add_argument(
        "--array-size",
        type=int,
        default=LOCAL_ARRAY_SIZE,
        help=f"with --with-pipeline: the array size of JobB and JobC (default {LOCAL_ARRAY_SIZE})",
    )
    serve.add_argument(
        "--access-key-id",
        default=os.environ.get(ACCESS_KEY_ID_ENV),
        help=f"the access key clients sign with (default: ${ACCESS_KEY_ID_ENV}, else random)",
    )
    serve.add_argument(
        "--secret-access-key",
        default=os.environ.get(SECRET_ACCESS_KEY_ENV),
        help=f"its secret (default: ${SECRET_ACCESS_KEY_ENV}, else random)",
    )
    serve.add_argument("--json", action="store_true", help="print the endpoint as one JSON line")
    serve.add_argument("--supervised", action="store_true", help="stop when standard input closes")
    serve.add_argument("--read-only", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--hold-jobs", action="store_true", help=argparse.SUPPRESS)
    env = commands.add_parser(
        "env",
        help="print the export line for the services running on a state folder",
        description="Print `export AWS_ENDPOINT_URL=... AWS_ACCESS_KEY_ID=... "
        "AWS_SECRET_ACCESS_KEY=... AWS_DEFAULT_REGION=...` for the services that run on "
        '--state-dir, for `eval "$(python -m pipeline.local env --state-dir DIR)"`.',
    )
    env.add_argument("--state-dir", metavar="DIR", required=True)
    env.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="wait up to this long for the services to start (default: not at all)",
    )
    serve.add_argument("--history", action="append", default=[], help=argparse.SUPPRESS)
    return parser


def serve(args: argparse.Namespace) -> int:
    os.umask(0o077)  # every file and folder the services make is the user's alone
    if (short := _open_files_short()) is not None:
        return _fail(args, short, EXIT_LOCAL)
    from pipeline.local import moto_app
    from pipeline.local.batch.faults import FaultError, fault_plan
    from pipeline.local.sample import read_input_dir, sample_objects

    if not moto_app.installed():
        return _fail(
            args,
            "the local services need moto and Flask: pip install 'array-job-pipeline[local]'",
            EXIT_CONFIG,
        )
    try:
        faults = fault_plan(args.inject)
    except FaultError as error:
        raise SpecError(f"--inject {error}") from None
    inputs: dict[str, bytes] | None = None
    not_seeded: dict[str, str] = {}
    if args.with_pipeline and not args.read_only:
        inputs, not_seeded = (
            read_input_dir(Path(args.input)) if args.input else (sample_objects(), {})
        )
    from pipeline.local.batch.journal import JournalError
    from pipeline.local.run_folder import RunFolder, write_json
    from pipeline.local.services import LocalServices, StateInUseError

    services = LocalServices(
        port=args.port,
        state_dir=Path(args.state_dir) if args.state_dir else None,
        with_pipeline=args.with_pipeline,
        inputs=inputs,
        read_only=args.read_only,
        hold_jobs=args.hold_jobs,
        history=[Path(h) for h in args.history],
        faults=faults,
        vcpus=args.vcpus,
        steps=_steps(args.steps) if args.steps else None,
        credentials=_credentials(args),
        region=_region(args.region),
        array_size=check_array_size(args.array_size, "--array-size"),
        on_seeding=_seeding_progress(args),
    )
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, lambda *_: stop.set())
    try:
        services.start()
    except StateInUseError as error:
        return _fail(args, str(error), EXIT_BAD_INPUT)
    except JournalError as error:  # the state folder's journal is damaged
        return _fail(args, str(error), EXIT_LOCAL)
    except OSError as error:  # the state folder cannot be made, or is not the user's own
        where = f"{error.filename}: " if error.filename else ""
        code = EXIT_BAD_INPUT if error.errno == errno.EADDRINUSE else EXIT_LOCAL  # --port's
        return _fail(args, f"{where}{error.strerror or error}", code)
    try:
        seeded = {
            "objects": len(inputs or {}),
            "bytes": sum(len(b) for b in (inputs or {}).values()),
        }
        if args.state_dir and services.fresh and not_seeded:  # kept with the run
            write_json(RunFolder(Path(args.state_dir)).not_seeded_file, not_seeded)
        _announce(args, {**services.handshake(), "seeded": seeded, "notSeeded": not_seeded})
        if args.supervised:
            threading.Thread(target=_until_stdin_closes, args=(stop,), daemon=True).start()
        stop.wait()
    finally:
        services.stop()
    if services.fatal is not None:  # after the handshake: to the log the client reads
        print(f"error: {services.fatal}", file=sys.stderr, flush=True)
        return EXIT_LOCAL
    return EXIT_OK


MIN_OPEN_FILES = 256
"""File descriptors the services need at the least: connections, job logs, journals."""


def _open_files_short() -> str | None:
    """Raise this process's open-file limit toward 4,096 where the hard limit allows; why
    the services cannot run when it stays under :data:`MIN_OPEN_FILES` (None: they can)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    if soft >= MIN_OPEN_FILES:
        return None
    return (
        f"the open-file limit is {soft} (ulimit -n), and the local services need "
        f"{MIN_OPEN_FILES} or more: raise it with `ulimit -n 1024` and start again"
    )


def _port(value: str) -> int:
    """A TCP port, 0 to 65535 (0: a free one)."""
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a port: give 1 to 65535, or 0 for a free one"
        )
    return port


def _region(value: str) -> str:
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", value):
        raise SpecError(f"--region {value!r} is not a region name like us-east-1")
    return value


def _credentials(args: argparse.Namespace) -> Credentials | None:
    """The credentials given, both parts or none; None for random ones."""
    key, secret = args.access_key_id, args.secret_access_key
    if not key and not secret:
        return None
    if not key or not secret:
        raise SpecError(
            "give both --access-key-id and --secret-access-key (or both environment variables), "
            "or neither for random ones"
        )
    if len(key) < 16 or len(secret) < 16:
        raise SpecError("--access-key-id and --secret-access-key need 16 characters or more")
    return Credentials(key, secret)


def _steps(value: str) -> tuple[PipelineSteps, list[str]]:
    """``--steps``: ``MODULE:NAME`` imported here, or the JSON a run keeps its steps as."""
    from pipeline.local.deployment import import_roots, steps_from_json
    from pipeline.steps import load_steps

    if value.lstrip().startswith("{"):
        try:
            saved = json.loads(value)
        except ValueError as error:
            raise SpecError(f"--steps is not JSON: {error}") from None
        return steps_from_json(saved, "--steps")
    steps = load_steps(value)
    return steps, import_roots(steps)


def print_env(args: argparse.Namespace) -> int:
    """``env``: the export line of the services on ``--state-dir``, once they announce
    themselves (within ``--wait`` seconds)."""
    import shlex
    import time

    from pipeline.local.run_folder import RunFolder

    folder = RunFolder(Path(args.state_dir))
    if folder.path.exists() and (why := folder.not_private()) is not None:
        # What such a folder says could be anyone's: never hand it to a shell.
        print(f"error: {why}; name a state folder of your own", file=sys.stderr)
        return EXIT_LOCAL
    deadline = time.monotonic() + max(args.wait, 0)
    while (live := folder.live_services()) is None:
        if time.monotonic() >= deadline:
            print(
                f"error: no local services run on {args.state_dir}; start them with "
                f"`python -m pipeline.local serve --state-dir {args.state_dir}`",
                file=sys.stderr,
            )
            return EXIT_LOCAL
        time.sleep(0.1)
    endpoint, credentials = live
    region = folder.region() or REGION
    variables = {"AWS_ENDPOINT_URL": endpoint, **credentials, "AWS_DEFAULT_REGION": region}
    print("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in variables.items()))
    return EXIT_OK


SEEDING_NOTE_SECONDS = 1.0
"""How often seeding says how far it is, once it has taken this long."""


def _seeding_progress(args: argparse.Namespace) -> Callable[[int, int], None]:
    """What to tell while BucketA is seeded: nothing for the first second, then a line a
    second; to the command that started the services (``--supervised``), a JSON line
    ``{"progress"}`` before the handshake, which it shows; otherwise a line on stderr."""
    started = last = time.monotonic()

    def note(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < SEEDING_NOTE_SECONDS or now - started < SEEDING_NOTE_SECONDS:
            return
        last = now
        text = f"seeding BucketA: {done:,} of {total:,} objects"
        if args.supervised:
            print(json.dumps({"progress": text}), flush=True)
        else:
            print(text, file=sys.stderr, flush=True)

    return note


def _until_stdin_closes(stop: threading.Event) -> None:
    # os.read, not sys.stdin: a daemon thread blocked in a buffered read holds the buffer's
    # lock, and the interpreter aborts (SIGABRT) when it finds the lock held at exit.
    with contextlib.suppress(OSError):
        while os.read(sys.stdin.fileno(), 65536):
            pass
    stop.set()


def _announce(args: argparse.Namespace, ready: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(ready), flush=True)
        return
    endpoint = ready["endpoint"]
    credentials = " ".join(f"{k}={v}" for k, v in ready["credentials"].items())
    lines = [
        f"local AWS services at {endpoint}: AWS Batch (this library's engine), S3, DynamoDB, "
        "SNS, SQS, CloudWatch Logs and EventBridge (moto)",
        f"  export AWS_ENDPOINT_URL={endpoint} {credentials} AWS_DEFAULT_REGION={ready['region']}",
    ]
    if args.with_pipeline:
        lines.append(
            "  with the pipeline: queue ProdQueue, job definitions JobA-list-and-validate .. "
            f"JobE-Cleanup-and-Notification; BucketA seeded with {ready['seeded']['objects']:,} "
            "objects"
        )
    lines.append("Ctrl-C stops them.")
    print("\n".join(lines), flush=True)


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "exitCode": code}), flush=True)
    else:
        print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        if args.command == "env":
            return print_env(args)
        return serve(args)
    except SpecError as error:
        if args is not None:
            return _fail(args, str(error), EXIT_BAD_INPUT)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
