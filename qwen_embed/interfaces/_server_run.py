"""Running the server on uvicorn: the HTTP protocol with a header deadline, the ready callback, logging."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

from ..errors import ConfigurationError

__all__ = ["build_server", "logging_config"]

logger = logging.getLogger("qwen_embed.server")

_LEVELS = ("critical", "error", "warning", "info", "debug")


def logging_config(level: str, *, access_log: bool) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` that sends the server's and uvicorn's logs to stderr."""
    if level not in _LEVELS:
        raise ConfigurationError(f"log level {level!r} is not one of {', '.join(_LEVELS)}")
    name = level.upper()
    handler = ["stderr"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": handler, "level": name, "propagate": False},
            "uvicorn.error": {"level": name},
            "uvicorn.access": {"level": "WARNING"},  # the server writes its own access log (with timings)
            "qwen_embed": {"handlers": handler, "level": name, "propagate": False},
            "qwen_embed.access": {"level": name if access_log else "WARNING"},
        },
    }


def _protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, plus a deadline for the request line and headers (408, then close).

    uvicorn closes idle keep-alive connections but waits forever for a request whose
    headers stop half-way; this arms a timer whenever the connection waits for a request.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    message = f"The request headers did not arrive within {header_timeout:g} s."
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": "request_timeout"}
    body = json.dumps({"error": error})
    reply = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n{body}"
    ).encode()

    class HeaderDeadlineProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(header_timeout, self._expired)

        def _expired(self) -> None:
            self._header_timer = None
            busy = self.cycle is not None and not self.cycle.response_complete
            if busy or self.transport.is_closing():
                return  # a request is being answered; the app's body deadline covers it
            if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
                logger.info("closed a connection whose request headers stopped half-way (%s)", self.client)
                self.transport.write(reply)
            self.transport.close()

    return HeaderDeadlineProtocol


def build_server(
    app: Any,
    *,
    host: str,
    port: int,
    keep_alive_timeout: float = 5.0,
    header_timeout: float = 10.0,
    shutdown_timeout: float = 30.0,
    log_config: dict[str, Any] | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> Any:
    """A ``uvicorn.Server`` for ``app``; ``on_ready(url)`` runs once the port is bound.

    Run it with ``server.run()`` (or ``server.run(sockets=[sock])`` on a bound socket).

    Args:
        app: The ASGI app (:func:`~qwen_embed.interfaces.server.create_app`).
        host: Address to bind (unused when ``run`` gets sockets).
        port: Port to bind; 0 picks a free one (the ``on_ready`` URL names it).
        keep_alive_timeout: Seconds an idle keep-alive connection stays open.
        header_timeout: Seconds a client has to send a request's line and headers.
        shutdown_timeout: Seconds a shutdown waits for requests in flight before cancelling them.
        log_config: A ``dictConfig`` applied at start (see :func:`logging_config`); ``None`` leaves logging alone.
        on_ready: Called with the served URL after the socket is bound.
    """
    try:
        import uvicorn
    except ImportError as error:
        raise ConfigurationError('The server needs its extra: pip install "qwen-embed[server]"') from error

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_ready is not None and not self.should_exit:
                bound = self.servers[0].sockets[0].getsockname() if self.servers else (host, port)
                name = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
                on_ready(f"http://{name}:{bound[1]}")

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_protocol(header_timeout),
        lifespan="on",
        log_config=log_config,
        access_log=False,
        timeout_keep_alive=keep_alive_timeout,  # type: ignore[arg-type]
        timeout_graceful_shutdown=shutdown_timeout,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=16 * 1024,
        server_header=False,
    )
    return Server(config)
