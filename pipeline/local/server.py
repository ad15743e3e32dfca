"""The embedded AWS services in a process of their own: moto's WSGI application behind
werkzeug's threaded server on a free loopback port.

A process of its own, not a thread of the command: every request of every job process goes
through it, and in the command's process it would share one interpreter lock with the
scheduler, the launcher's reader and the watch loop. It prints ``{"port": N}`` once it
listens, serves until its standard input closes (the command ended, however it ended), and
answers ``GET /_pipeline/stats`` with the requests it has served, the seconds they took (summed
over its threads, so queueing included) and its CPU time, for the benchmark.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

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


def main() -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # it logs every request otherwise
    _list_moto_modules_once()
    app = _Counting(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    sys.stdin.read()  # until the command closes it, or ends
    server.shutdown()


if __name__ == "__main__":
    main()
