"""Examples for the authentication how-to: an Authenticator and a SASL mechanism."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Awaitable, Callable

import trio

import trio_pop3
from trio_pop3.mailbox import Authenticator

# A hash of a random password: unknown users are checked against it, so that they
# take as long as known ones.
_SALT = os.urandom(16)
_DUMMY = (_SALT, hashlib.scrypt(os.urandom(16), salt=_SALT, n=2**14, r=8, p=1))


class ScryptAuthenticator(Authenticator):
    """Users and scrypt password hashes, e.g. loaded from a database at start-up."""

    def __init__(self, users: dict[str, tuple[bytes, bytes]]) -> None:
        self.users = users  # name -> (salt, scrypt hash)
        self.limiter = trio.CapacityLimiter(4)  # at most 4 hashes at once

    @staticmethod
    def make(password: str) -> tuple[bytes, bytes]:
        """Return the (salt, hash) to store for ``password``."""
        salt = os.urandom(16)
        return salt, hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)

    async def check_password(self, user: str, password: str) -> bool:
        salt, expected = self.users.get(user, _DUMMY)

        def compute() -> bytes:
            return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)

        # scrypt takes tens of milliseconds: keep it off the event loop.
        actual = await trio.to_thread.run_sync(compute, limiter=self.limiter)
        return hmac.compare_digest(actual, expected) and user in self.users


class OAuthBearerMechanism(trio_pop3.SASLMechanism):
    """OAUTHBEARER (RFC 7628) with a caller-supplied token check.

    Simplified: a failure is answered ``-ERR [AUTH]`` at once, without RFC 7628's
    JSON error challenge (section 3.2.2), which POP3 clients handle either way.
    """

    name = "OAUTHBEARER"
    plaintext = True  # a bearer token is as reusable as a password: TLS only
    initial_response = True

    def __init__(self, verify: Callable[[str, str], Awaitable[bool]]) -> None:
        self.verify = verify  # (user, token) -> valid?  Shared by all connections.

    async def authenticate(self, exchange: trio_pop3.SASLExchange) -> str:
        # "n,a=user,\x01auth=Bearer TOKEN\x01\x01" (RFC 7628 section 3.1)
        message = await self.first_response(exchange)
        try:
            gs2_header, *fields = message.decode("utf-8").split("\x01")
        except UnicodeDecodeError:
            raise trio_pop3.AuthenticationFailed() from None
        user = gs2_header.removeprefix("n,a=").removesuffix(",")
        values = dict(field.split("=", 1) for field in fields if "=" in field)
        token = values.get("auth", "").removeprefix("Bearer ")
        if not user or not token or not await self.verify(user, token):
            raise trio_pop3.AuthenticationFailed()
        return user
