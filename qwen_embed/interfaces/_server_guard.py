"""ASGI layers around the server's routes: observe (request id, access log, metrics, the last-resort 500),
the Host check against DNS rebinding, and the API key.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from ._server_http import error_body
from ._server_metrics import Metrics

__all__ = ["Observe", "RequireKey", "allowed_host_names", "host_allowed", "is_loopback"]

logger = logging.getLogger("qwen_embed.server")
access_logger = logging.getLogger("qwen_embed.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_WILDCARDS = ("", "0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    """``True`` for ``localhost`` and loopback addresses (what only this machine can reach)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_host_names(host: str, extras: Iterable[str]) -> frozenset[str]:
    """Names a browser may send in ``Host`` for this server: ``localhost``, the bound name, the extras.

    Address literals (``127.0.0.1``, ``[::1]``, a LAN address) are always accepted: DNS
    rebinding needs a name the attacker controls, so a literal cannot carry it. A wildcard
    bind (``0.0.0.0``, ``::``) also accepts this machine's host names.
    """
    names = {"localhost", host.strip("[]").lower()}
    names.update(name.strip().lower().rstrip(".") for name in extras)
    if host in _WILDCARDS:
        names.update({socket.gethostname().lower(), socket.getfqdn().lower()})
    return frozenset(n for n in names if n)


def host_allowed(value: str, allowed: frozenset[str]) -> bool:
    """Whether a ``Host`` header value (name or literal, with or without a port) names this server."""
    host = value.strip().lower()
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        name = host.partition(":")[0]
    else:
        name = host
    name = name.rstrip(".")
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name in allowed or "*" in allowed


async def send_error(
    send: Send, status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
) -> None:
    body = error_body(status, message, code=code)
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value)
    return None


class Observe:
    """Outermost layer: request id, Host check, metrics, access log, a logged 500 for any escape, and a JSON 503
    for a request the shutdown cancels.

    Args:
        app: The app inside.
        metrics: The app's metrics.
        allowed_hosts: Names accepted in ``Host`` (``None``: no check).
        active: Filled with the tasks of the requests being answered (the app's lifespan waits for the ones a
            shutdown cancelled to send their 503).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        allowed_hosts: frozenset[str] | None,
        active: set[asyncio.Task[Any]] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.allowed_hosts = allowed_hosts  # None: no Host check
        self.active = active if active is not None else set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        request_id = secrets.token_hex(6)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        answer = {"status": 0}

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        self.metrics.in_flight.inc()
        task = asyncio.current_task()
        if task is not None:
            self.active.add(task)
        try:
            host = _header(scope, b"host")
            if (
                self.allowed_hosts is not None
                and host is not None
                and not host_allowed(host.decode("latin-1"), self.allowed_hosts)
            ):
                logger.warning(
                    "refused Host %r (request %s): not a name of this server", host.decode("latin-1"), request_id
                )
                await send_error(
                    tracked,
                    400,
                    f"Host {host.decode('latin-1')!r} is not a name of this server. "
                    "Start it with --allowed-host NAME to accept that name.",
                    code="invalid_host",
                )
            else:
                await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when --shutdown-timeout is over: answer them in JSON
            # and end quietly (re-raised, uvicorn would log the cancellation as a crash and answer plain text).
            logger.warning(
                "request %s (%s %s) cancelled by the shutdown", request_id, scope.get("method"), scope.get("path")
            )
            if not answer["status"]:
                await send_error(
                    tracked,
                    503,
                    "The server shut down before this request finished (its --shutdown-timeout ran out); "
                    "send it again once the server is back.",
                    code="shutting_down",
                    headers={"Connection": "close"},
                )
        except Exception:
            logger.exception("request %s (%s %s) failed", request_id, scope.get("method"), scope.get("path"))
            if not answer["status"]:
                await send_error(
                    tracked, 500, f"Internal server error (request {request_id}); the server's log has the details."
                )
        finally:
            self.active.discard(task)
            seconds = time.perf_counter() - began
            self.metrics.in_flight.dec()
            status = answer["status"] or 499  # 499: the client left before any answer
            self.metrics.request_done(scope.get("path", ""), status, seconds)
            if access_logger.isEnabledFor(logging.INFO):
                client = scope.get("client")
                where = f"{client[0]}:{client[1]}" if client else "-"
                extra = f" {state['inputs']} inputs {state['tokens']} tokens" if "inputs" in state else ""
                access_logger.info(
                    '%s "%s %s" %d %.1f ms%s [%s]',
                    where,
                    scope.get("method"),
                    scope.get("path"),
                    status,
                    seconds * 1000,
                    extra,
                    request_id,
                )


class RequireKey:
    """``Authorization: Bearer KEY`` on every path but the open ones; 401 in OpenAI's shape otherwise."""

    def __init__(self, app: ASGIApp, *, key: str, open_paths: Iterable[str]) -> None:
        self.app = app
        self._key = key.encode("utf-8")
        self._open = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self._open:
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        if header is None:
            await send_error(
                send,
                401,
                "No API key: send the header 'Authorization: Bearer KEY' "
                "(the openai client's api_key) with this server's --api-key.",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            return
        scheme, _, token = header.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._key):
            await send_error(
                send, 401, "Incorrect API key provided.", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
            )
            return
        await self.app(scope, receive, send)
