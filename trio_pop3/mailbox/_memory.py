"""In-memory maildrops and users: for tests, demos and generated content."""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import final

from .._errors import MailboxInUse
from .._proto._wire import wire_size
from ._base import Authenticator, Mailbox, MailStore, MessageInfo

__all__ = ["MemoryAuthenticator", "MemoryMailbox", "MemoryStore"]

#: Chunk size when streaming a stored message, so tests exercise chunk boundaries
#: the way a file-backed store does.
MEMORY_CHUNK_SIZE = 64 * 1024

_uid_counter = itertools.count(1)


@final
class MemoryStore(MailStore):
    """Maildrops kept in memory, with the same exclusive lock as a real store.

    Example::

        store = MemoryStore({"alice": [b"Subject: hi\\n\\nHello\\n"]})
        store.deliver("alice", b"Subject: more\\n\\n...\\n")
    """

    def __init__(self, maildrops: Mapping[str, Iterable[bytes]] | None = None) -> None:
        #: user -> list of (uid, message bytes); mutate with :meth:`deliver`.
        self.maildrops: dict[str, list[tuple[str, bytes]]] = {}
        self._locked: set[str] = set()
        for user, messages in (maildrops or {}).items():
            for message in messages:
                self.deliver(user, message)

    def deliver(self, user: str, message: bytes, uid: str | None = None) -> str:
        """Add a message to ``user``'s maildrop and return its unique id."""
        if uid is None:
            digest = hashlib.sha1(message).hexdigest()[:12]
            uid = f"m{next(_uid_counter)}.{digest}"
        self.maildrops.setdefault(user, []).append((uid, bytes(message)))
        return uid

    def messages(self, user: str) -> list[bytes]:
        """Return the messages now stored for ``user``."""
        return [data for _, data in self.maildrops.get(user, [])]

    def is_locked(self, user: str) -> bool:
        """Return whether a session holds ``user``'s maildrop."""
        return user in self._locked

    async def open(self, user: str) -> MemoryMailbox:
        """Lock ``user``'s maildrop and return it (an unknown user has an empty one).

        Raises:
            MailboxInUse: another session holds ``user``'s maildrop.

        Cancellation:
            Never awaits: not a checkpoint, so it is never cancelled half-way.
        """
        if user in self._locked:
            raise MailboxInUse()
        self._locked.add(user)
        return MemoryMailbox(self, user)

    def _release(self, user: str) -> None:
        self._locked.discard(user)


@final
class MemoryMailbox(Mailbox):
    """An open maildrop of a :class:`MemoryStore`.

    Its methods never await (none is a checkpoint, so none is cancelled half-way)
    and raise nothing for a message of its own listing; :meth:`close` may be called
    any number of times.
    """

    def __init__(self, store: MemoryStore, user: str) -> None:
        self._store = store
        self._user = user
        self._open = True
        self._snapshot = [
            MessageInfo(uid=uid, size=wire_size(data), key=data)
            for uid, data in store.maildrops.get(user, [])
        ]

    async def list_messages(self) -> Sequence[MessageInfo]:
        """Return the snapshot taken when the maildrop was opened."""
        return self._snapshot

    async def read_message(self, message: MessageInfo) -> AsyncIterator[bytes]:
        """Yield the stored bytes in chunks."""
        data = message.key
        assert isinstance(data, bytes)
        for start in range(0, len(data), MEMORY_CHUNK_SIZE):
            yield data[start : start + MEMORY_CHUNK_SIZE]

    async def remove(self, messages: Sequence[MessageInfo]) -> None:
        """Remove ``messages`` (by unique id) from the store."""
        gone = {m.uid for m in messages}
        drop = self._store.maildrops.get(self._user, [])
        drop[:] = [(uid, data) for uid, data in drop if uid not in gone]

    async def close(self) -> None:
        """Release the lock."""
        if self._open:
            self._open = False
            self._store._release(self._user)


@final
class MemoryAuthenticator(Authenticator):
    """Users and plaintext passwords from a mapping (offers APOP and CRAM-MD5 too).

    Example::

        auth = MemoryAuthenticator({"alice": "secret"})

    Its methods never await (none is a checkpoint) and never raise.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = dict(users)

    async def check_password(self, user: str, password: str) -> bool:
        """Compare in constant time; an unknown user compares against a dummy."""
        expected = self.users.get(user)
        ok = hmac.compare_digest(
            (expected if expected is not None else "\x00unknown").encode("utf-8"),
            password.encode("utf-8"),
        )
        return ok and expected is not None

    async def get_secret(self, user: str) -> str | None:
        """Return the plaintext password."""
        return self.users.get(user)
