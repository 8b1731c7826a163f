"""Where the API listens: api.listen checked (no open verifier off loopback) and bound.

Owns the HOST:PORT parsing, the loopback rule and the listening socket; every failure is a
ConfigError naming the setting to fix, raised before anything serves.
"""

from __future__ import annotations

import ipaddress
import socket

from ..errors import ConfigError
from ..settings import ApiSettings


def listen_address(api: ApiSettings) -> tuple[str, int]:
    """Return (host, port) from api.listen; ConfigError for a bad one, or a non-loopback host
    without api.keys (an open verifier on a network is an abuse magnet)."""
    host, port = host_port(api.listen, setting="api.listen")
    if not api.keys and not is_loopback(host):
        raise ConfigError(
            "api.keys",
            f"refusing to listen on {host} without API keys; set MAILPROBE_API__KEYS='[\"…\"]' "
            "or listen on 127.0.0.1",
        )
    return host, port


def host_port(text: str, *, setting: str) -> tuple[str, int]:
    """Return (host, port) of a HOST:PORT setting; ConfigError naming `setting` otherwise."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(setting, f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Return True when every address `host` stands for is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:  # a host name: every address it stands for must be loopback
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def bind(host: str, port: int, *, setting: str = "api.listen") -> socket.socket:
    """Return a listening socket on host:port; ConfigError naming `setting` when it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(setting, f"cannot listen on {host}:{port} ({exc})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            setting, f"cannot listen on {host}:{port} ({exc.strerror or exc})"
        ) from None
    return sock
