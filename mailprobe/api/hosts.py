"""Which Host headers a keyless API answers: loopback names only (DNS rebinding).

Without API keys the API listens on loopback only, but a web page in the operator's browser can
still reach it: its attacker-controlled name is re-pointed at 127.0.0.1 (DNS rebinding) and the
browser sends that name as Host. Refusing every Host that is not a loopback name closes this.
Hand-written rather than Starlette's TrustedHostMiddleware: it cuts the port at the first ":",
so an IPv6 literal ([::1]:8080) never matches, and it takes no address ranges (127.0.0.0/8).
"""

from __future__ import annotations

import ipaddress

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback_host(host: str) -> bool:
    """Return True when a Host header value (name or literal, port optional) is loopback."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8080
        name = name[1 : name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class LoopbackHostOnly:
    """ASGI middleware: 421 for any HTTP request whose Host is not a loopback name."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not is_loopback_host(host):
                response = JSONResponse(
                    {
                        "error": "misdirected_request",
                        "message": "without api.keys this API answers only requests addressed "
                        "to a loopback name (localhost, 127.0.0.1, [::1]); set api.keys to "
                        "serve other names",
                    },
                    status_code=421,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
