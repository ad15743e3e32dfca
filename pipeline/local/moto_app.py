"""moto's server, as its own ``ThreadedMotoServer`` assembles it: the only module of this
library that names moto's modules.

moto serves S3, DynamoDB, SNS, SQS, CloudWatch Logs and EventBridge as one WSGI application
(``DomainDispatcherApplication`` over ``create_backend_app``), behind werkzeug's server with
moto's request handler (which keeps the spelling of S3 metadata headers with underscores).
The local services put AWS Batch in front of that application and keep connections alive
(see :mod:`pipeline.local.server`). ``tests/engine/test_local_services.py`` checks that moto still
assembles its server from these names and still has the function listed once here, and says
so if a moto release changes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def moto_application() -> WsgiApp:
    """moto's WSGI application, serving every service moto has.

    Its dispatcher asks, for every request, whether the host names one of moto's service
    packages, and answers by listing and stat-ing moto's own folder (about 90 stat calls a
    request). The packages cannot change while the services run, so they are listed once:
    on a run of 300 children that halved the time a request spends in the services and took
    a quarter off the run's wall time (``bench/local.py`` prints the time per request)."""
    from moto import backends
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    modules = frozenset(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
    app: WsgiApp = DomainDispatcherApplication(create_backend_app)
    return app


def request_handler() -> type[Any]:
    """moto's request handler class (a werkzeug ``WSGIRequestHandler``)."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    handler: type[Any] = MotoRequestHandler
    return handler


def installed() -> bool:
    """Whether moto's server can be imported (the ``[local]`` extra: moto and Flask)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("moto", "flask"))
