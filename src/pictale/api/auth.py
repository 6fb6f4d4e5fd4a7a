"""HTTP Basic from `--api-auth`. With no credentials configured every request is accepted, including an
empty `Authorization:` header (Open WebUI always sends one)."""

from __future__ import annotations

import base64
import binascii
import secrets

from fastapi import Request

from pictale.core.errors import NotAuthenticated


class Authenticator:
    def __init__(self, pairs: dict[str, str]) -> None:
        self.pairs = pairs

    @property
    def enabled(self) -> bool:
        return bool(self.pairs)

    def check(self, request: Request) -> str | None:
        """Return the user name, or None when auth is off. Raises NotAuthenticated."""
        if not self.enabled:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            raise NotAuthenticated("Not authenticated")
        try:
            user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise NotAuthenticated("Incorrect username or password") from None
        expected = self.pairs.get(user)
        # compare_digest on both branches keeps the timing independent of which part was wrong
        ok = secrets.compare_digest(password.encode(), (expected or "\0" + password).encode())
        if expected is None or not ok:
            raise NotAuthenticated("Incorrect username or password")
        return user


async def require_auth(request: Request) -> str | None:
    return request.app.state.auth.check(request)
