"""Run the app under uvicorn: the port is taken first (a port in use is one line, before any model loads),
a start-up failure is one line instead of a traceback, and the banner appears once the server accepts."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

from pictale.cli.output import fail


def bind(host: str, port: int) -> socket.socket:
    """A bound socket for uvicorn (as its own bind_socket does); a clear error when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            fail(f"port {port} on {host} is in use by another program; choose another with --port or PICTALE_PORT")
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    sock.set_inheritable(True)
    return sock


class StartupErrors:
    """ASGI wrapper that keeps the exception a failed lifespan start-up raised, instead of letting uvicorn log
    its traceback; `run` raises it again once uvicorn has given up, for the CLI to print as one line."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.error: BaseException | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def quiet_send(message: dict) -> None:
            if message["type"] == "lifespan.startup.failed":
                message = {"type": message["type"], "message": ""}
            await send(message)

        try:
            await self.app(scope, receive, quiet_send)
        except Exception as exc:
            self.error = exc
            raise


class _DropStartupFailed(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Application startup failed. Exiting."  # the CLI says why instead


def run(
    make_app: Callable[[], Any], host: str, port: int, *, log_level: str, on_started: Callable[[Any, int], None]
) -> None:
    """Take host:port, build the app, serve it until interrupted; `on_started(app, port)` once it accepts."""
    import uvicorn

    sock = bind(host, port)
    try:
        app = make_app()
    except BaseException:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    debug = log_level == "debug"
    wrapped = StartupErrors(app)
    config = uvicorn.Config(
        wrapped,
        host=host,
        port=bound_port,
        lifespan="on",
        log_level="info" if debug else "warning",
        access_log=debug,
        timeout_keep_alive=30,
    )
    logging.getLogger("uvicorn.error").addFilter(_DropStartupFailed())

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                on_started(app, bound_port)

    try:
        Server(config).run(sockets=[sock])
    except SystemExit:
        if wrapped.error is not None:
            raise wrapped.error from None
        raise
    finally:
        sock.close()
    if wrapped.error is not None:
        raise wrapped.error
