"""Who is calling: API keys (`Authorization: Bearer KEY`, or HTTP Basic with the key as password, for
clients like SillyTavern that only send Basic), `--api-auth` Basic users, or the local user in open mode.

Open mode: with no live API key (none made yet, or every one revoked) and no `--api-auth`, every request is
the local user, whatever it sends (Open WebUI always sends an `Authorization` header, sometimes empty)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import secrets

from fastapi import Request

from pictale.accounts.keys import KeyStore
from pictale.core.errors import Forbidden, NotAuthenticated
from pictale.core.types import LOCAL_PRINCIPAL, Principal


class Authenticator:
    def __init__(self, pairs: dict[str, str], keys: KeyStore | None = None) -> None:
        self.pairs = pairs
        self.keys = keys

    @property
    def enabled(self) -> bool:
        """False in open mode: no `--api-auth` and no live API key (checked per request)."""
        return bool(self.pairs) or (self.keys is not None and self.keys.has_keys())

    @property
    def open_mode(self) -> bool:
        return not self.enabled

    def describe(self) -> str:
        """For the start-up banner: "API keys (2) + HTTP Basic", "HTTP Basic", "open (local single user)"."""
        parts = []
        if self.keys is not None and self.keys.has_keys():
            parts.append(f"API keys ({self.keys.count()})")
        if self.pairs:
            parts.append("HTTP Basic")
        return " + ".join(parts) if parts else "open (local single user: no API keys, no --api-auth)"

    def check(self, request: Request) -> Principal:
        """The caller's principal; raises NotAuthenticated (401) when auth is on and nothing valid was sent."""
        if not self.enabled:
            return LOCAL_PRINCIPAL
        header = request.headers.get("authorization", "")
        scheme, _, value = header.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and value:
            principal = self.keys.verify(value) if self.keys is not None else None
            if principal is None:
                raise NotAuthenticated("Invalid API key")
            return principal
        if scheme != "basic" or not value:
            raise NotAuthenticated("Not authenticated")
        try:
            user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise NotAuthenticated("Incorrect username or password") from None
        principal = self._basic_user(user, password)
        if principal is None and self.keys is not None:
            principal = self.keys.verify(password)  # SillyTavern sends the key as a Basic password
        if principal is None:
            raise NotAuthenticated("Incorrect username or password")
        return principal

    def _basic_user(self, user: str, password: str) -> Principal | None:
        expected = self.pairs.get(user)
        # compare_digest on both branches keeps the timing independent of which part was wrong
        ok = secrets.compare_digest(password.encode(), (expected or "\0" + password).encode())
        return Principal(f"basic:{user}", user, True) if expected is not None and ok else None


def require_auth(request: Request) -> Principal:
    """Dependency on every route: the caller's Principal (also left on `request.state.principal`)."""
    principal = request.app.state.auth.check(request)
    request.state.principal = principal
    return principal


def require_admin(request: Request) -> Principal:
    """Key management: admin keys, `--api-auth` users and the local user in open mode."""
    principal = require_auth(request)
    if not principal.is_admin:
        raise Forbidden("only admin API keys can manage keys")
    return principal


def from_loopback(request: Request) -> bool:
    """The request comes from this machine (127.0.0.0/8 or ::1; behind a local proxy, uvicorn has already
    put the forwarded client address here)."""
    host = request.client.host if request.client else ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
