"""The pre-loaded launcher: one process that has imported the job programs and their libraries
(boto3, botocore, ``batch_jobs``) and forks one child per job attempt.

A fresh interpreter per child pays Python's start-up and boto3's import (about a quarter of a
second) before a few milliseconds of work; a fork of this process pays neither. Each child is
still a process of its own: its own session and process group (so a stop kills it and its own
children), its own environment, CPU affinity, log file and exit code. The clients the programs
make are made here, unused, and a child with the same client environment reuses them (see
:func:`preload`); their connections are opened after the fork, by the child.

The launcher also keeps spares: forks made ahead of the next requests, which warm up while the
jobs before them run if those take every core (see :class:`_Spares`). The first to warm up
sends real requests and says which pages of memory that copied; later ones copy those pages
without a request (Linux 5.14+; elsewhere each sends the requests).

Protocol, JSON lines: LocalBatch writes ``{"argv", "env", "log", "cores"}`` to stdin; the
launcher answers each with ``{"pid"}`` once the job's process exists (a spare that took the
request, or a fresh fork), and later ``{"exited": pid, "code"}`` (a negative code is the
signal that ended it, as ``Popen.returncode`` has it): as soon as the process says its exit
code as it exits, or when it is reaped if it ended otherwise. The launcher is single-threaded,
so forking is safe; it ends when its stdin closes.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import gc
import json
import os
import select
import signal
import socket
import sys
import traceback
from typing import Any, NoReturn

PRELOADED = (
    "boto3",
    "botocore.session",
    "batch_jobs.common",
    "batch_jobs.job_a",
    "batch_jobs.job_b",
    "batch_jobs.job_c",
    "batch_jobs.job_d",
    "batch_jobs.job_e",
)


WARM_SERVICES = ("s3", "dynamodb", "sns")
"""The clients the job programs make: their models are parsed once, here, not per child."""


def preload() -> None:
    """Import the programs and their libraries, and make the clients they make
    (``batch_jobs.common.make_client``), in this process's environment, which is the jobs'
    (the local endpoint and credentials). A forked child that asks for the same client, with
    the same endpoint, credentials and region, gets it instead of building one (about 20 ms:
    loading its service model was already shared, but the client class, endpoint rules and
    handlers were not). The clients are never used here, so they hold no connection: every
    child opens its own. A child with another client environment makes its own client."""
    import importlib

    for module in PRELOADED:
        with contextlib.suppress(ImportError):  # a launcher for other programs still works
            importlib.import_module(module)
    with contextlib.suppress(Exception):
        from batch_jobs.common import make_client

        for service in WARM_SERVICES:
            rehearse(make_client(service), WARM_CALLS.get(service, ()))
    with contextlib.suppress(Exception):
        # The first name lookup of a process loads the resolver's configuration and libraries
        # (nsswitch, /etc/hosts): a few milliseconds every child would pay on its first
        # request. Done once here; a lookup opens no connection.
        from urllib.parse import urlsplit

        endpoint = urlsplit(os.environ.get("AWS_ENDPOINT_URL", "http://localhost"))
        socket.getaddrinfo(endpoint.hostname or "localhost", endpoint.port or 80)


WARM_CALLS: dict[str, tuple[tuple[str, dict[str, Any], int, bytes], ...]] = {
    "s3": (
        (
            "get_object",
            {"Bucket": "warm", "Key": "warm"},
            404,
            b"<Error><Code>NoSuchKey</Code></Error>",
        ),
        ("put_object", {"Bucket": "warm", "Key": "warm", "Body": b"{}"}, 200, b""),
    ),
    "dynamodb": (
        (
            "batch_write_item",
            {"RequestItems": {"warm": [{"PutRequest": {"Item": {"k": {"S": "v"}}}}]}},
            200,
            b'{"UnprocessedItems": {}}',
        ),
    ),
}
"""One call of each kind the job programs make most, answered here without a network."""


class _CannedBody:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Any:
        yield self.data

    def read(self, *_: Any) -> bytes:
        data, self.data = self.data, b""
        return data


def rehearse(client: Any, calls: tuple[tuple[str, dict[str, Any], int, bytes], ...]) -> None:
    """Make ``calls`` once with a canned answer instead of sending them: what a client builds
    on its first call of an operation (endpoint rules, serializer, signer, parser) is then
    built here, once, and every forked child starts with it."""
    from botocore.awsrequest import AWSResponse

    def answer(request: Any, **_: Any) -> AWSResponse:
        status, body = answers[0]
        headers: Any = {"ETag": '"warm"'}
        return AWSResponse(request.url, status, headers, _CannedBody(body))

    answers: list[tuple[int, bytes]] = []
    client.meta.events.register_first("before-send", answer, unique_id="launcher-rehearsal")
    try:
        for operation, parameters, status, body in calls:
            answers[:] = [(status, body)]
            with contextlib.suppress(Exception):
                getattr(client, operation)(**parameters)
    finally:
        client.meta.events.unregister("before-send", unique_id="launcher-rehearsal")


def run_program(argv: list[str]) -> int:
    """Run ``python -m MODULE ARGS`` or ``python -c CODE ARGS`` in this process, as the
    interpreter would; returns the exit code."""
    import runpy

    try:
        if argv[1] == "-m" and argv[2] in PRELOADED and hasattr(sys.modules.get(argv[2]), "main"):
            # A preloaded job program: run what its `if __name__ == "__main__"` guard runs,
            # without executing its module body again (loading and running its code costs a
            # few milliseconds per child).
            sys.argv = [argv[2], *argv[3:]]
            raise SystemExit(sys.modules[argv[2]].main())
        if argv[1] == "-m":
            sys.argv = [argv[2], *argv[3:]]
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *argv[3:]]
            exec(compile(argv[2], "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit as stop:
        if stop.code is None:
            return 0
        if isinstance(stop.code, int):
            return stop.code & 0xFF
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:  # as the interpreter does: the traceback, exit code 1
        traceback.print_exc()
        return 1
    return 0


def _detach(inherited: tuple[int, ...]) -> None:
    """In a fork: drop the launcher's own wiring (its SIGCHLD wake-up, the reading end of the
    exit notices, its pipes to spares), which is not the job's: a spare sees the end of its
    request only once every copy of its pipe is closed."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in inherited:
        os.close(fd)


def _become(request: dict[str, Any]) -> int:
    """In a fork: become the job's process and run it; returns its exit code."""
    if os.getsid(0) != os.getpid():  # a spare has its own session already
        os.setsid()  # a process group of its own: LocalBatch kills the whole group
    if request.get("cores"):
        os.sched_setaffinity(0, set(request["cores"]))
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    # Exactly the request's environment. Most of it is the launcher's own (the endpoint, the
    # credentials, PATH), so only what differs is set or removed: each change is a putenv.
    wanted: dict[str, str] = request["env"]
    for name in [name for name in os.environ if name not in wanted]:
        del os.environ[name]
    for name, value in wanted.items():
        if os.environ.get(name) != value:
            os.environ[name] = value
    return run_program(request["argv"])


_exit_notices: int | None = None
"""In a fork: the pipe on which it tells the launcher its exit code (see :func:`serve`)."""


def _end(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # the process ends next: nowhere to report
            stream.flush()
    if _exit_notices is not None:
        with contextlib.suppress(OSError):
            # One write of a few bytes: atomic on a pipe, whatever else writes to it.
            os.write(_exit_notices, f"{os.getpid()} {code & 0xFF}\n".encode())
    os._exit(code)


def child(request: dict[str, Any], inherited: tuple[int, ...]) -> NoReturn:
    """In the forked child: become the job's process, run it, and never return."""
    code = 1
    try:
        _detach(inherited)
        code = _become(request)
    except BaseException:
        traceback.print_exc()
    finally:
        _end(code)


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
WARM_UP_BUCKET = "pipeline-launcher-warm-up"
"""A bucket no run has: the spare's requests are answered NoSuchBucket."""


def warm_up() -> None:
    """In a spare: a real S3 GetObject and PutObject, before there is a job to run (both to
    a bucket no run has, answered NoSuchBucket).

    They open the connection the job's S3 client then keeps using, and take each request
    path once in this process (serializer, signer, urllib3, http.client, the response
    parser). A fork shares the launcher's memory until it writes to it, and a Python process
    writes wherever it merely uses an object (reference counts): a fresh fork's first
    GetObject and PutObject copy about 1,700 pages and take about 11 and 5 ms; after the
    GetObject alone, about 260 pages, 5 and 4.5 ms; after both, about 180 pages, 4.5 and
    3.5 ms (measured in forks of the launcher, page faults with ``getrusage``). That much
    less lies on the path of a job that waits for the one before it (JobB's children, which
    each take every core). More warm-up (rehearsing every call, see :func:`rehearse`) costs a
    spare more CPU than it saves its job. The requests are never retried: a launcher whose
    endpoint does not answer must not wait out the backoff. They go only to an endpoint on
    this machine (the local services): a launcher run with real AWS credentials and no
    local endpoint sends nothing."""
    from urllib.parse import urlsplit

    from batch_jobs.common import make_client

    endpoint = urlsplit(os.environ.get("AWS_ENDPOINT_URL", ""))
    if endpoint.hostname not in LOOPBACK:
        return  # only this machine's services are sent a request of the launcher's own
    s3 = make_client("s3")

    def no_retry(caught_exception: Exception | None = None, **_: Any) -> None:
        if caught_exception is not None:
            raise caught_exception

    s3.meta.events.register_first("needs-retry", no_retry, unique_id="launcher-warm-up")
    try:
        # NoSuchBucket, or no server: warm either way
        with contextlib.suppress(Exception):
            s3.get_object(Bucket=WARM_UP_BUCKET, Key="warm-up")
        with contextlib.suppress(Exception):
            s3.put_object(Bucket=WARM_UP_BUCKET, Key="warm-up", Body=b"{}")
    finally:
        s3.meta.events.unregister("needs-retry", unique_id="launcher-warm-up")


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MADV_POPULATE_WRITE = 23
"""madvise(2), Linux 5.14+: "Populate (prefault) page tables writable, faulting-in all pages in
the range just as if manually writing to each page; however, avoid the actual memory access
that would have been performed after handling the fault." In a fork that is the copy a write
would make, without changing a byte."""
PageRuns = list[tuple[int, int]]
"""(start, end) address ranges, whole pages."""
KERNELS = ("[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]")
"""Mappings the kernel provides, not the process's memory."""


def writable_mappings() -> PageRuns:
    """This process's private writable mappings (its heap, the libraries' data): where a fork
    copies a page when it first writes to it. Not the stack, nor the kernel's own. Empty
    where there is no /proc."""
    found: PageRuns = []
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            permissions, where = fields[1], (fields[5] if len(fields) > 5 else "")
            if permissions[1:4:2] != "wp" or where.startswith("[stack") or where in KERNELS:
                continue
            start, end = (int(address, 16) for address in fields[0].split("-"))
            found.append((start, end))
    return found


def pages_held_alone(mappings: PageRuns) -> PageRuns:
    """The pages of ``mappings`` this process holds alone, in runs. In a fork, they are the
    pages it has written to since (copied on write), and those its parent has written to since
    (the parent then holds a copy of its own). From /proc/self/pagemap: bit 63 "page
    present", bit 56 "page exclusively mapped" (the kernel's
    Documentation/admin-guide/mm/pagemap.rst)."""
    import array

    runs: PageRuns = []
    with contextlib.suppress(OSError), open("/proc/self/pagemap", "rb") as pagemap:
        for start, end in mappings:
            pagemap.seek(start // PAGE * 8)
            entries = array.array("Q")
            entries.frombytes(pagemap.read((end - start) // PAGE * 8))
            for number, entry in enumerate(entries):
                if entry >> 63 and entry >> 56 & 1:
                    page = start + number * PAGE
                    if runs and runs[-1][1] == page:
                        runs[-1] = (runs[-1][0], page + PAGE)
                    else:
                        runs.append((page, page + PAGE))
    return runs


def within(runs: PageRuns, mappings: PageRuns) -> PageRuns:
    """The parts of ``runs`` that lie in ``mappings`` (both in address order)."""
    inside: PageRuns = []
    mapping = iter(mappings)
    current = next(mapping, None)
    for start, end in runs:
        while current is not None and start < end:
            if current[1] <= start:
                current = next(mapping, None)
                continue
            if current[0] < end:
                inside.append((max(start, current[0]), min(end, current[1])))
            if current[1] >= end:
                break
            start = current[1]
    return inside


def copy_pages(runs: PageRuns) -> bool:
    """Copy the pages of ``runs`` into this process now, as its first writes to them would,
    one ``madvise`` per run; False when this system cannot (no /proc, or no
    ``MADV_POPULATE_WRITE``). Only what lies in this process's own private writable mappings
    is touched: the advice then changes no byte, whatever the runs say."""
    import ctypes

    mappings = writable_mappings()
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return False
    if not mappings:
        return False
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    for number, (start, end) in enumerate(within(runs, mappings)):
        failed = madvise(start, end - start, MADV_POPULATE_WRITE) != 0
        if failed and number == 0 and ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS):
            return False  # a kernel before Linux 5.14 does not know the advice
    return True


def spare(
    feed: int,
    inherited: tuple[int, ...],
    *,
    warm: bool,
    lesson: PageRuns | None = None,
    learn_to: int | None = None,
) -> NoReturn:
    """In a spare: warm up (when ``warm``), wait for a request on ``feed``, then run it as
    :func:`child` does. The launcher writes one request line and closes ``feed``; end of file
    without a whole line (the launcher could not hand it the request at once) ends the spare
    without running anything.

    Warming up is copying the pages of ``lesson`` when there is one, else :func:`warm_up`; a
    spare given ``learn_to`` then writes there, as one JSON line, the pages its warm-up copied
    (see :class:`_Spares`)."""
    code = 1
    try:
        # Its own session and process group from the start, as the job it may become: a stop
        # that comes while it is still warming up reaches it by its group.
        os.setsid()
        _detach(inherited)
        # Not the launcher's protocol pipes: the job's log replaces these on activation.
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        if warm and not (lesson and copy_pages(lesson)):
            mappings = writable_mappings() if learn_to is not None else []
            with contextlib.suppress(Exception):  # one that did not warm up still runs a job
                warm_up()
            if learn_to is not None:
                lesson_line = json.dumps({"pages": pages_held_alone(mappings)}).encode() + b"\n"
                with contextlib.suppress(OSError):
                    while lesson_line:  # more than a pipe holds at once: the launcher reads on
                        lesson_line = lesson_line[os.write(learn_to, lesson_line) :]
        if learn_to is not None:
            os.close(learn_to)
        data = b""
        while chunk := os.read(feed, 65536):
            data += chunk
        os.close(feed)
        code = _become(json.loads(data)) if data.endswith(b"\n") else 0
    except BaseException:
        traceback.print_exc()
    finally:
        _end(code)


class _Spares:
    """Forks made ahead of the next requests, warming up meanwhile (Android keeps a pool of
    such pre-forked "unspecialized app processes" for the same reason): :func:`spare_count`
    of them, so that jobs starting together each find one warm.

    A request goes to the oldest spare if it can take it whole at once; otherwise, or when
    there is none, the launcher forks a child for it as before. Either way the job's process
    is a fork of the launcher that becomes the job only once it has its request: own session,
    environment, affinity and log. A spare that ends unused is not a job: its exit is not
    reported.

    The first spare that warms up sends the requests of :func:`warm_up` and then says which
    pages of the launcher's memory that made it copy (see :meth:`learned`); the spares that
    warm up after it copy those pages instead (:func:`copy_pages`)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self.warm = True
        """Whether the spares forked from now on warm up (see :meth:`heard`)."""
        self.lesson: PageRuns | None = None
        """The pages a warm-up copies, once the first warming spare has said (see
        :meth:`learned`)."""
        self._learner_forked = False
        self._waiting: collections.deque[tuple[int, int]] = collections.deque()
        """(pid, the write end of its request pipe), oldest first."""
        self.unused: set[int] = set()
        """Spares forked and not (yet) handed a request."""

    def fill(self, inherited: tuple[int, ...], lessons: int) -> None:
        """Fork spares until there are as many as kept; ``inherited``: the launcher's own
        descriptors, which a spare closes; ``lessons``: where the first spare that warms up
        says which pages its warm-up copied."""
        while len(self._waiting) < self._size:
            learn = self.warm and self.lesson is None and not self._learner_forked
            self._learner_forked |= learn
            feed, give = os.pipe()
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                spare(
                    feed,
                    (*inherited, give, *self.requests(), *(() if learn else (lessons,))),
                    warm=self.warm,
                    lesson=self.lesson,
                    learn_to=lessons if learn else None,
                )
            os.close(feed)
            self._waiting.append((pid, give))
            self.unused.add(pid)

    def heard(self, request: dict[str, Any]) -> None:
        """Warm up the next spares only while jobs take every core. Such jobs run one after
        another (JobB's children), the cores are idle while one starts, and a warm spare
        shortens that wait. While jobs share the cores (JobC's, one core each), the spare's
        request would only take CPU from them: over 1,000 JobC children, their span was 15.4 s
        without warm-ups and 17.7 s with them, measured here in one pair of runs."""
        self.warm = len(request.get("cores") or ()) >= len(os.sched_getaffinity(0))

    def learned(self, line: bytes) -> None:
        """The first warming spare's lesson: the pages its warm-up copied. Spares forked from
        now on copy those pages instead of sending requests (one ``madvise`` per run of
        pages): a job then starts with what it would write already its own, as after a
        warm-up, while the spare spends less CPU and the server answers nothing for it.
        Measured here over 1,000 JobB children: a spare took 9.6 ms of CPU instead of 15.2, a
        child 14.1 ms instead of 17.5 ms of wall time; JobB took 19.4-21.2 s against
        19.9-22.6 s (four pairs of runs), and the server answered 7,892 requests instead of
        9,892 over the whole run. Copying a page this way costs about what a fault copying it
        does (about 1,800 pages, 8-9 ms either way, measured in forks of the launcher), so it
        gains only off a job's path: spares copy only when they warm up.

        The first warming spare reads its pages and writes the lesson before it reads a
        request: a job handed to it meanwhile starts a few milliseconds later, once per
        launcher."""
        pages = [(int(start), int(end)) for start, end in json.loads(line)["pages"]]
        self.lesson = pages
        count = sum(end - start for start, end in pages) // PAGE
        print(f"launcher: a warm-up copies {count:,} pages in {len(pages):,} runs", file=sys.stderr)
        sys.stderr.flush()

    def requests(self) -> tuple[int, ...]:
        """The launcher's ends of the spares' request pipes."""
        return tuple(give for _, give in self._waiting)

    def hand(self, line: bytes) -> int | None:
        """The pid of the spare now running ``line``'s request; None when there was none or
        it could not take the request whole at once (it then ends unused)."""
        if not self._waiting:
            return None
        pid, give = self._waiting.popleft()
        try:
            os.set_blocking(give, False)  # never wait for a spare, however busy
            taken = os.write(give, line + b"\n") == len(line) + 1
        except OSError:  # it has ended, or its pipe is full
            taken = False
        os.close(give)
        if not taken:
            return None
        self.unused.discard(pid)
        return pid

    def ended(self, pid: int) -> bool:
        """Whether ``pid`` was an unused spare (then forgotten)."""
        if pid not in self.unused:
            return False
        self.unused.discard(pid)
        for waiting in self._waiting:
            if waiting[0] == pid:
                self._waiting.remove(waiting)
                os.close(waiting[1])
                break
        return True

    def close(self) -> None:
        """End the spares: they have nothing to finish, and warm-ups need not be waited for."""
        while self._waiting:
            pid, give = self._waiting.popleft()
            os.close(give)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


MAX_SPARES = 4


def spare_count() -> int:
    """Spares kept: two per core this process may use (a spare then has about two jobs' time
    to warm up before it is needed), at most :data:`MAX_SPARES`."""
    return min(MAX_SPARES, 2 * len(os.sched_getaffinity(0)))


def serve() -> None:
    global _exit_notices
    preload()
    # Everything loaded so far is shared with every child until someone writes to it; a
    # garbage collection in a child would write to all of it (each object's GC header), and
    # copy the launcher's memory page by page. Frozen objects are left out of collections.
    gc.freeze()
    out = sys.stdout
    buffered = b""
    stdin = sys.stdin.fileno()
    # A child's exit wakes the loop at once (SIGCHLD through a self-pipe), rather than at the
    # next poll: sequential children (a job that needs every core) start one after another
    # with no idle gap.
    wakeup = os.pipe()
    for fd in wakeup:
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wakeup[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # Earlier still: a job's process writes its exit code here as it exits (see _end), and
    # the exit is reported then, not once the kernel has torn down its memory (about 2 ms for
    # a fork of this process, measured: fork, exit and wait take 3 ms here, 1.6 ms for a
    # bare interpreter). The code is the one the process is exiting with; a process that
    # ends otherwise (a signal, its own os._exit) is reported when it is reaped.
    notices, _exit_notices = os.pipe()
    os.set_blocking(notices, False)
    noticed = b""
    # The first spare that warms up says here which pages its warm-up copied (see _Spares).
    lessons = os.pipe()
    os.set_blocking(lessons[0], False)
    taught = b""
    spares = _Spares(spare_count())
    inherited = (*wakeup, notices, lessons[0])
    spares.fill(inherited, lessons[1])
    running: set[int] = set()
    """Jobs whose exit is not reported yet."""
    unreaped: set[int] = set()
    """Jobs whose exit was reported from their notice, still to be reaped."""

    def report(pid: int, code: int) -> None:
        running.discard(pid)
        out.write(json.dumps({"exited": pid, "code": code}) + "\n")
        out.flush()

    open_input = True
    while open_input or running or unreaped or spares.unused:
        watched = [wakeup[0], notices, lessons[0], *([stdin] if open_input else [])]
        ready, _, _ = select.select(watched, [], [], 0.5)
        if lessons[0] in ready:
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(lessons[0], 65536):
                    taught += chunk
            if b"\n" in taught:
                line, taught = taught.split(b"\n", 1)
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    spares.learned(line)
        if wakeup[0] in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(wakeup[0], 4096):
                    pass
        if notices in ready:
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(notices, 4096):
                    noticed += chunk
            while b"\n" in noticed:
                line, noticed = noticed.split(b"\n", 1)
                pid, code = (int(field) for field in line.split())
                if pid in running:  # not an unused spare, nor a fork a job made itself
                    unreaped.add(pid)
                    report(pid, code)
        if stdin in ready:
            data = os.read(stdin, 65536)
            if not data:
                open_input = False
                spares.close()
            buffered += data
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                request = json.loads(line)
                spares.heard(request)
                started = spares.hand(line)
                if started is None:
                    out.flush()
                    started = os.fork()
                    if started == 0:
                        child(request, (*inherited, lessons[1], *spares.requests()))
                running.add(started)
                out.write(json.dumps({"pid": started}) + "\n")
                out.flush()
                if open_input:
                    spares.fill(inherited, lessons[1])
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                running.clear()
                unreaped.clear()
                spares.unused.clear()
                break
            if pid == 0:
                break
            if spares.ended(pid):
                continue
            if pid in unreaped:
                unreaped.discard(pid)
            elif pid in running:
                report(pid, os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    serve()
