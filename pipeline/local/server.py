"""The embedded AWS services in a process of their own: moto's WSGI application on a free
loopback port, served by werkzeug's threaded server with connections kept alive.

A process of its own, not a thread of the command: every request of every job process goes
through it, and in the command's process it would share one interpreter lock with the
scheduler, the launcher's reader and the watch loop. It prints ``{"port": N}`` once it
listens, serves until its standard input closes (the command ended, however it ended), and
answers ``GET /_pipeline/stats`` with the requests it has served, the seconds they took (summed
over its threads, so waiting for the interpreter lock included) and its CPU time, for the
benchmark.

How it serves: one thread per connection (werkzeug's ``ThreadedWSGIServer``), which reads a
request, runs moto's application and writes the answer itself, then waits for the next request
on the same connection. Each job process opens one connection per client and keeps it until it
exits, so its requests go straight to one thread. The request environment is built by moto's
own request handler (``MotoRequestHandler``, which keeps the spelling of S3 metadata headers
with underscores), as ``moto_server`` builds it.

Why not werkzeug's handler as it is: it answers every request with ``Connection: close`` (its
comment: keep-alive "isn't handled well by Python's http.server because it doesn't know how to
drain the stream before the next request line"), so every request of every job pays a new
connection and a new thread. Here a request's body is read whole before the application runs
(moto reads every body whole anyway), so the stream is drained by construction and the
connection can be kept.

Why not waitress (used before): its worker threads hand every request and every answer across
threads (a poll loop, a task queue, a wake-up pipe). Two job processes sending GetObject and
PutObject at once cost the server about 2.1-2.5 ms of CPU per request behind waitress and about
1.3-1.5 ms here; one alone, about 1.6 and 1.4 ms (measured on this 2-core machine with the same
moto application). Two pairs of 1,000-child runs, alternated: 48.3 and 48.4 s here against
52.0 and 55.1 s behind waitress (this machine's speed varies by as much from minute to minute,
so that is a direction more than a figure).
"""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from werkzeug.serving import BaseWSGIServer

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


def serve(app: Callable[..., Iterable[bytes]]) -> BaseWSGIServer:
    """A threaded server of ``app`` on a free loopback port, connections kept alive (not yet
    running: call its ``serve_forever``)."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    class KeptAlive(MotoRequestHandler):
        """moto's request handler, answering on a connection it keeps open."""

        protocol_version = "HTTP/1.1"
        server_version = "pipeline-local"
        sys_version = ""
        # The status line, headers and body go out in one write (the buffer is flushed once
        # per request), and without Nagle's delay on what is left over.
        wbufsize = -1
        disable_nagle_algorithm = True

        def handle_expect_100(self) -> bool:
            # http.server answers `Expect: 100-continue` (botocore sends it with a PutObject
            # body) before the body is read; with a buffered writer the answer must be sent
            # now, or the client waits for it (botocore, a second) before it sends the body.
            answered = super().handle_expect_100()
            self.wfile.flush()
            return answered

        def run_wsgi(self) -> None:
            environ = self.make_environ()
            try:
                # The whole body now: the next request on this connection starts right after
                # it. A chunked body arrives de-chunked from werkzeug's DechunkedInput.
                chunked = environ.pop("wsgi.input_terminated", False)
                length = int(environ.get("CONTENT_LENGTH") or 0)
                if length < 0:
                    raise ValueError(length)
                body = environ["wsgi.input"].read() if chunked else self.rfile.read(length)
            except ValueError:
                self.send_error(400, "Bad Content-Length or chunked body")
                self.close_connection = True
                return
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            started: list[Any] = []
            written: list[bytes] = []  # what the application gave the legacy write(), if any

            def start_response(
                status: str, headers: list[tuple[str, str]], exc_info: Any = None
            ) -> Callable[[bytes], object]:
                started[:] = [status, headers]  # nothing is sent before the application returns
                return written.append

            try:
                answer = app(environ, start_response)
                try:
                    payload = b"".join([*written, *answer])
                finally:
                    getattr(answer, "close", lambda: None)()
                status, headers = started
            except Exception as error:  # the application failed: a 500, on a fresh connection
                self.log_error("%s: %r", environ.get("PATH_INFO"), error)
                # http.server closes a connection it has answered "Connection: close" on
                status, headers, payload = (
                    "500 INTERNAL SERVER ERROR",
                    [("Connection", "close")],
                    b"",
                )
            code, _, reason = status.partition(" ")
            self.send_response(int(code), reason)
            for name, value in headers:
                self.send_header(name, value)
            has_body = self.command != "HEAD" and int(code) >= 200 and int(code) not in (204, 304)
            if has_body and not any(name.lower() == "content-length" for name, _ in headers):
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if has_body:
                self.wfile.write(payload)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            """No line per request: thousands nobody reads, written by the process that
            answers every request."""

    return make_server("127.0.0.1", 0, app, threaded=True, request_handler=KeptAlive)


def main() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    _list_moto_modules_once()
    server = serve(_Counting(DomainDispatcherApplication(create_backend_app)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"port": server.port}), flush=True)
    sys.stdin.read()  # until the command closes it, or ends
    server.server_close()


if __name__ == "__main__":
    main()
