"""The embedded AWS services in a process of their own: moto's WSGI application behind
waitress on a free loopback port.

A process of its own, not a thread of the command: every request of every job process goes
through it, and in the command's process it would share one interpreter lock with the
scheduler, the launcher's reader and the watch loop. It prints ``{"port": N}`` once it
listens, serves until its standard input closes (the command ended, however it ended), and
answers ``GET /_pipeline/stats`` with the requests it has served, the seconds they took (summed
over its threads, so queueing included) and its CPU time, for the benchmark.

Why waitress, not the werkzeug development server moto's own ``moto_server`` uses: werkzeug
answers every request with ``Connection: close`` (its comment: keep-alive "isn't handled well
by Python's http.server"), so every request of every job pays a new connection and a new
server thread, and a PUT (botocore sends ``Expect: 100-continue`` with a PutObject body)
took about 7 ms against 3 ms for a GET, measured on this machine with the same moto
application. waitress keeps connections alive, answers ``100-continue`` itself, and serves from
a fixed pool of threads; the same PUT takes about 3 ms (``bench/local.py`` measures the whole
run). One difference matters for S3: waitress drops request headers whose names contain an
underscore (werkzeug's dev server does too; moto's handler puts them back), so object metadata
keys with underscores are not kept locally. The job programs set no object metadata.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from waitress.server import TcpWSGIServer

STATS_PATH = "/_pipeline/stats"


class _Counting:
    """Counts requests and the wall time spent answering them (a WSGI middleware)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.requests = 0
        self.seconds = 0.0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") == STATS_PATH:
            with self._lock:
                body = json.dumps(
                    {
                        "requests": self.requests,
                        "seconds": self.seconds,
                        "cpu_seconds": time.process_time(),
                    }
                )
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body.encode()]
        started = time.perf_counter()
        try:
            return list(self.app(environ, start_response))
        finally:
            with self._lock:
                self.requests += 1
                self.seconds += time.perf_counter() - started


def _list_moto_modules_once() -> None:
    """moto's dispatcher asks, for every request, whether the host names one of its service
    packages, and answers by listing and stat-ing its own folder (about 90 stat calls per
    request: a third of a small request's time, measured with cProfile). The packages cannot
    change while the server runs, so they are listed once."""
    from moto import backends

    modules = frozenset(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules


SERVER_THREADS = 8
"""Requests answered at once. They share one interpreter lock, so more threads only queue: a
few cover the job processes that run at a time (two on two cores) and JobA's and JobE's
request threads."""


def serve(app: Callable[..., Iterable[bytes]]) -> TcpWSGIServer:
    """waitress serving ``app`` on a free loopback port (not yet running)."""
    from waitress.channel import HTTPChannel
    from waitress.server import TcpWSGIServer

    class Channel(HTTPChannel):
        """Answers ``Expect: 100-continue`` only when a body is still to come. waitress 3.0.2
        sends ``100 Continue`` to a request it has already read whole (``Content-Length: 0``:
        botocore's PutObject of an empty object) and then waits for a body that never comes,
        until the client's read timeout. RFC 9110 section 10.1.1 lets a server omit the 100
        response when it has the whole request already."""

        def send_continue(self) -> None:
            if self.request is not None and self.request.completed:
                self.request.expect_continue = False
                return
            super().send_continue()

    server = TcpWSGIServer(
        app,
        host="127.0.0.1",
        port=0,
        threads=SERVER_THREADS,
        # Every job process holds its own kept-alive connection until it exits: a 10,000-child
        # array opens many over a run, and poll(), unlike select(), has no 1,024-descriptor
        # ceiling.
        asyncore_use_poll=True,
        connection_limit=1000,
        ident="pipeline-local",
    )
    server.channel_class = Channel
    return server


def main() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    # waitress warns of every queued request ("Task queue depth is N") while JobA's or JobD's
    # threads are ahead of the server: thousands of lines nobody reads, formatted in the
    # process that answers every request.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    _list_moto_modules_once()
    server = serve(_Counting(DomainDispatcherApplication(create_backend_app)))
    threading.Thread(target=server.run, daemon=True).start()
    print(json.dumps({"port": int(server.getsockname()[1])}), flush=True)
    sys.stdin.read()  # until the command closes it, or ends
    server.close()


if __name__ == "__main__":
    main()
