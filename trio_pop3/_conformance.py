"""The conformance check of :mod:`trio_pop3.testing`: :func:`check_handler` and
:func:`check_mailbox_backend`.

The rules and results are in :mod:`trio_pop3._conformance_rules`, the checks in
:mod:`trio_pop3._conformance_checker`; the names are public through
:mod:`trio_pop3.testing`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from ._conformance_checker import _Checker
from ._conformance_rules import (
    _MAILBOX_ONLY_RULES,
    CONFORMANCE_MESSAGES,
    CONFORMANCE_RULES,
    ConformanceError,
    ConformanceReport,
)
from ._handler import POP3Handler
from ._mailbox import Authenticator, MailStore
from ._server import POP3Server
from ._testing_servers import _as_server

__all__ = ["check_handler", "check_mailbox_backend"]


_Part = tuple[str, Callable[[], Awaitable[None]]]


async def _run(checker: _Checker, extra: Sequence[_Part]) -> ConformanceReport:
    parts: list[_Part] = [
        ("authorization", checker.check_authorization),
        ("listing", checker.check_listing),
        ("retrieval", checker.check_retrieval),
        ("locking", checker.check_locking),
        *extra,
        ("deletion", checker.check_deletion),  # last: it removes a message
    ]
    for name, body in parts:
        await checker.part(name, body)
    rules = CONFORMANCE_RULES.keys() - (set() if extra else _MAILBOX_ONLY_RULES)
    report = checker.report(sorted(rules))
    if report.failed:
        raise ConformanceError(report)
    return report


async def check_handler(
    server: POP3Server | Callable[[], POP3Handler],
    /,
    *,
    user: str,
    password: str,
    messages: Sequence[bytes] | int = CONFORMANCE_MESSAGES,
    skip: Iterable[str] = (),
    **server_options: Any,
) -> ConformanceReport:
    """Run the RFC 1939 / RFC 2449 conformance rules against a handler.

    The handler must serve a world in which ``user`` logs in with ``password`` (USER
    and PASS) to a maildrop holding ``messages``, in any order.  The check logs in
    many times over memory streams, retrieves everything, tries commands in the wrong
    state, holds the maildrop from two sessions at once, and at the very end deletes
    one message with DELE and QUIT: afterwards the maildrop holds one message fewer.

    Args:
        server: A handler factory, or a :class:`~trio_pop3.POP3Server` built on one.
        user: A user whose maildrop holds ``messages``.
        password: That user's password.
        messages: The stored messages (LF or CRLF line ends), compared byte for byte
            after CRLF normalisation; each must carry the ``X-Conformance-Id`` header
            of :data:`CONFORMANCE_MESSAGES` (use those).  For a backend that makes up
            its own content, the number of messages it holds (at least 3): then the
            content is checked for structure only (stuffing, sizes, TOP).
        skip: IDs of :data:`CONFORMANCE_RULES` to leave out.
        **server_options: Options for the :class:`~trio_pop3.POP3Server` built from a
            factory; ``limits`` defaults to :data:`TEST_LIMITS`.

    Returns:
        A :class:`ConformanceReport` of the rules checked, if none was broken.

    Raises:
        ConformanceError: rules were broken; its message lists each rule ID, what the
            rule says and what was seen.  Every rule is checked before it is raised.
        ValueError: fewer than 3 messages, or an unknown rule in ``skip``.

    Example::

        factory = functools.partial(MyHandler, db=make_test_db(CONFORMANCE_MESSAGES))
        report = await check_handler(factory, user="alice", password="secret")

    Cancellation:
        Under ``autojump_clock`` a backend that blocks in a worker thread lets the
        clock jump; run backends that use threads with the real clock.  The check has
        no timeout of its own: wrap it in ``trio.fail_after`` to bound a hang.
        Cancelling it cancels the session in progress, whose ``disconnect()`` hook
        still runs; the DELE and QUIT of the last step may or may not have happened.

    Error handling:
        Wrong replies, broken wire format and dropped connections are collected as
        rule failures.  Any other exception, such as one escaping the server with
        ``catch_errors=False``, stops the check and propagates.
    """
    pop3 = _as_server(server, server_options)
    expected = None if isinstance(messages, int) else list(messages)
    count = messages if isinstance(messages, int) else len(messages)
    checker = _Checker(pop3, user, password, expected, count, skip)
    return await _run(checker, ())


async def check_mailbox_backend(
    store_factory: Callable[[Mapping[str, Sequence[bytes]]], MailStore | Awaitable[MailStore]],
    /,
    *,
    handler_class: Callable[[MailStore, Authenticator], POP3Handler] | None = None,
    verbatim: bool = True,
    skip: Iterable[str] = (),
    **server_options: Any,
) -> ConformanceReport:
    """Run the conformance rules against a :class:`~trio_pop3.mailbox.MailStore`.

    ``store_factory`` is called once with ``{user: [message, ...]}`` for two users:
    ``"alice"`` with :data:`CONFORMANCE_MESSAGES` and ``"bob"`` with none, and returns
    a store holding exactly those (it may be a coroutine function).  The store is
    served by :class:`~trio_pop3.mailbox.MailboxHandler` (or ``handler_class``) with
    a :class:`~trio_pop3.mailbox.MemoryAuthenticator`, and the rules of
    :func:`check_handler` run against it, plus DOT-07 (bob's empty maildrop),
    LOCK-01 (bob logs in while alice's maildrop is locked), and UIDL-02 and UIDL-04
    on the unique-ids the store itself lists (MailboxHandler would send a bad one
    as a digest, which hides it on the wire).

    Args:
        store_factory: Makes a store pre-loaded with the given maildrops.
        handler_class: Called as ``handler_class(store, authenticator)`` for each
            connection; a :class:`~trio_pop3.mailbox.MailboxHandler` subclass.
        verbatim: Whether the store keeps the given bytes.  False for a backend that
            generates its messages: it must then hold as many messages as it was given
            (their content is ignored), and content is checked for structure only.
        skip: IDs of :data:`CONFORMANCE_RULES` to leave out.
        **server_options: See :func:`check_handler`.

    Returns:
        A :class:`ConformanceReport`, if no rule was broken.

    Raises:
        ConformanceError: rules were broken (all of them are listed).
        TypeError: ``store_factory`` returned something that is not a
            :class:`~trio_pop3.mailbox.MailStore`.
        ValueError: an unknown rule in ``skip``.

    Example::

        def make_store(maildrops):
            root = tmp_path / "maildirs"
            for user, messages in maildrops.items():
                for message in messages:
                    deliver(root / user, message)
            return MaildirStore(root)

        report = await check_mailbox_backend(make_store)

    Cancellation:
        As for :func:`check_handler`.

    Error handling:
        As for :func:`check_handler`; an exception from ``store_factory``
        propagates.
    """
    from .mailbox import MailboxHandler, MemoryAuthenticator

    password = "conformance-secret"
    maildrops: dict[str, Sequence[bytes]] = {"alice": CONFORMANCE_MESSAGES, "bob": ()}
    made = store_factory(maildrops)
    store = await made if inspect.isawaitable(made) else made
    if not isinstance(store, MailStore):
        raise TypeError(f"store_factory returned {store!r}, not a MailStore")
    authenticator = MemoryAuthenticator({"alice": password, "bob": password})
    make_handler = handler_class if handler_class is not None else MailboxHandler
    pop3 = _as_server(functools.partial(make_handler, store, authenticator), server_options)
    expected = list(CONFORMANCE_MESSAGES) if verbatim else None
    checker = _Checker(pop3, "alice", password, expected, len(CONFORMANCE_MESSAGES), skip)
    extra: list[_Part] = [
        ("empty maildrop", functools.partial(checker.check_empty, "bob")),
        ("another user", functools.partial(checker.check_other_user, "bob")),
        ("backend unique-ids", functools.partial(checker.check_backend_uids, store, "alice")),
    ]
    return await _run(checker, extra)
