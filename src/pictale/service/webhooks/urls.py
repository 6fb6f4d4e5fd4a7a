"""Where webhooks may go: never to this machine or its private networks unless the setting allows it.

A shared server that POSTs wherever a client asks is a server-side request forgery tool (cloud metadata at
169.254.169.254, admin pages on 127.0.0.1, the LAN). A `callback_url` is refused at submission (4xx naming
`callback_url`) when its host is, or resolves to, any address that is not globally routable: loopback,
private, link-local, shared (CGNAT), multicast, reserved, unspecified. Every resolved address is checked,
and the check runs again just before each delivery (a name may resolve elsewhere by then).
`PICTALE_CALLBACK_ALLOW_PRIVATE=true` lifts it (a receiver on the same machine or LAN).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from pictale.core.errors import CallbackRefused

Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (system resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _why_refused(address: str) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for label, hit in (
        ("a loopback address", ip.is_loopback),
        ("a link-local address", ip.is_link_local),
        ("a private address", ip.is_private),
        ("a multicast address", ip.is_multicast),
        ("an unspecified address", ip.is_unspecified),
        ("a reserved address", ip.is_reserved),
        ("not a public address", not ip.is_global),
    ):
        if hit:
            return label
    return None


def check_callback_url(url: str, *, allow_private: bool = False, resolver: Resolver = resolve) -> None:
    """Raise CallbackRefused (422, param `callback_url`) unless `url` is http(s) to public addresses only."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused("callback_url must be an absolute http:// or https:// URL", param="callback_url")
    if allow_private:
        return
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise CallbackRefused("callback_url has an invalid port", param="callback_url") from None
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError):
            raise CallbackRefused(f"callback_url: host {host!r} does not resolve", param="callback_url") from None
    if not addresses:
        raise CallbackRefused(f"callback_url: host {host!r} does not resolve", param="callback_url")
    for address in addresses:
        why = _why_refused(address)
        if why is not None:
            shown = host if host == address else f"{host!r} resolves to {address}, which"
            raise CallbackRefused(
                f"callback_url: {shown} is {why}; webhooks go only to public addresses "
                "(set PICTALE_CALLBACK_ALLOW_PRIVATE=true to allow private and loopback receivers)",
                param="callback_url",
            )
