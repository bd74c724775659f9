"""What every answer carries, and who may ask: two ASGI middlewares.

- :class:`SecurityHeaders`: ``X-Content-Type-Options: nosniff``, a Content-Security-Policy that
  lets the page load its own scripts, styles and images only (no inline ones, no other host),
  and no framing by other sites (``frame-ancestors``, ``X-Frame-Options``).
- :class:`HostGuard`: a request is answered only if its Host is a localhost name, an IP address,
  the host the server listens on, or one of ``allowed_hosts``; so a web page whose domain an
  attacker rebinds to 127.0.0.1 (DNS rebinding) cannot reach a local server. An IP address is
  safe to answer: rebinding needs a name.
"""

from __future__ import annotations

import ipaddress
import json

from zhangcolor.options import ServeConfig

#: The page and the docs load everything from this server; results are blob: URLs.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    b"x-content-type-options": b"nosniff",
    b"content-security-policy": CSP.encode(),
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
    b"cross-origin-resource-policy": b"same-origin",
}


class SecurityHeaders:
    """Adds :data:`HEADERS` to every HTTP answer."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in HEADERS.items() if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def host_name(host: str) -> str:
    """The name of a Host header's value, without port, brackets or a final dot, lowercased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.split(":")[0]
    return host.rstrip(".")


def allowed_names(config: ServeConfig) -> frozenset[str] | None:
    """The host names ``config`` answers besides localhost names and IP addresses; None: any."""
    names = {host_name(h) for h in config.allowed_hosts}
    if "*" in names:
        return None
    return frozenset({*names, host_name(config.host)})


def is_allowed(host: str | None, names: frozenset[str] | None) -> bool:
    """Whether a request with this Host header (None: it had none) may be answered."""
    if host is None or names is None:
        return True  # without a Host there is no name to rebind
    name = host_name(host)
    if name == "localhost" or name.endswith(".localhost") or name in names:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostGuard:
    """Answers 400 ``bad_host`` to a request whose Host is not allowed (see the module)."""

    def __init__(self, app, config: ServeConfig):
        self.app, self.names = app, allowed_names(config)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            hosts = [v for k, v in scope.get("headers", []) if k == b"host"]
            host = hosts[0].decode("latin-1") if hosts else None
            if not is_allowed(host, self.names):
                return await _refuse(send, host or "")
        return await self.app(scope, receive, send)


async def _refuse(send, host: str) -> None:
    shown = host[:80]
    body = json.dumps(
        {
            "error": "bad_host",
            "detail": f"this server does not answer to the host {shown!r}; open it by "
            "localhost or its IP address, or start it with --allowed-host NAME",
        }
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *HEADERS.items(),
    ]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})
