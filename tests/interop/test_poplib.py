"""Python's poplib against the real ``trio-pop3 serve`` process over real Maildirs.

Not interop-marked: poplib is in the standard library, so these run in the normal suite.
Every check of "what was removed" looks at the Maildir files on disk.
"""

from __future__ import annotations

import concurrent.futures
import os
import poplib
import re
import shutil
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from corpus import CORPUS, expected_size, expected_top, expected_wire, full_corpus

from .conftest import (
    CLIENT_TIMEOUT,
    Account,
    MailSetup,
    ServerFactory,
    ServerProcess,
    fresh_source,
    list_one,
    make_mail_setup,
    numbered,
    pop3_login,
    session,
    uidl_one,
    wait_for,
)

#: An APOP timestamp, an RFC 822 msg-id (RFC 1939 §7).
TIMESTAMP = re.compile(rb"<[^<>@\s]+@[^<>\s]+>")


def drop(client: poplib.POP3) -> None:
    """Close the connection without QUIT, as a crashed client would."""
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()


def try_login(server: ServerProcess, account: Account) -> poplib.POP3 | None:
    """Log in, or return None if the maildrop is still locked (``[IN-USE]``)."""
    client = server.connect()
    try:
        client.user(account.user)
        client.pass_(account.password)
    except BaseException as exc:
        client.close()
        if isinstance(exc, poplib.error_proto) and b"[IN-USE]" in reply_text(exc):
            return None
        raise
    return client


def login_when_unlocked(server: ServerProcess, account: Account) -> poplib.POP3:
    """Log in, polling while an ended session's lock is still being released."""
    result: list[poplib.POP3] = []

    def attempt() -> bool:
        client = try_login(server, account)
        if client is not None:
            result.append(client)
        return client is not None

    wait_for(attempt, what=f"the lock of {account.user} to be released")
    return result[0]


def uidl_map(client: poplib.POP3) -> dict[int, str]:
    _, lines, _ = client.uidl()
    return {int(n): uid for n, uid in (line.decode("ascii").split(" ") for line in lines)}


def reply_text(exc: poplib.error_proto) -> bytes:
    reply = exc.args[0]
    assert isinstance(reply, bytes)
    return reply


# --------------------------------------------------------------------------------------
# Read-only commands on one maildrop holding the whole corpus


@pytest.mark.rfc("2449", "5")
def test_capa_in_both_states(server: ServerProcess, corpus_account: Account) -> None:
    client = server.connect()
    try:
        before = client.capa()
        client.user(corpus_account.user)
        client.pass_(corpus_account.password)
        after = client.capa()
    finally:
        client.quit()
    for tag in ("TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING"):
        assert tag in before
    assert "PLAIN" in before["SASL"]
    # RFC 2449 §5 (CAPA-03): what AUTHORIZATION announced, TRANSACTION announces too.
    assert set(before) <= set(after)


@pytest.mark.rfc("6856", "3")
def test_lang_with_poplib(server: ServerProcess, corpus_account: Account) -> None:
    with session(server, corpus_account) as client:
        assert "LANG" in client.capa()
        reply, listing, _ = client._longcmd("LANG")  # type: ignore[attr-defined]
        assert reply.startswith(b"+OK")
        assert listing == [b"en English"]
        assert client._shortcmd("LANG en-GB") == b"+OK en Language changed."  # type: ignore[attr-defined]


@pytest.mark.rfc("1939", "5")
def test_stat_list_uidl(server: ServerProcess, corpus_account: Account) -> None:
    messages = list(corpus_account.messages.items())
    sizes = [expected_size(message) for _, message in messages]
    with session(server, corpus_account) as client:
        # RFC 1939 §5 (STAT-01, SIZE-01): count and exact CRLF size of the maildrop
        # (what RETR sends, the surrogate of a UTF-8 header included).
        assert client.stat() == (len(messages), sum(sizes))
        resp, lines, _ = client.list()
        assert resp.startswith(b"+OK")
        # RFC 1939 §4 (TRANS-01): numbered 1..n in delivery order.
        assert lines == [f"{n} {size}".encode() for n, size in enumerate(sizes, 1)]
        # RFC 1939 §5 (LIST-02)
        for n, size in enumerate(sizes, 1):
            assert list_one(client, n) == f"+OK {n} {size}".encode()
        # RFC 1939 §7 (UIDL-01, UIDL-02): the Maildir base names, in order.
        resp, lines, _ = client.uidl()
        assert resp.startswith(b"+OK")
        assert lines == [f"{n} {uid}".encode() for n, (uid, _) in enumerate(messages, 1)]
        for n, (uid, _) in enumerate(messages, 1):
            assert uidl_one(client, n) == f"+OK {n} {uid}".encode()
            assert re.fullmatch(r"[\x21-\x7e]{1,70}", uid)
        # RFC 1939 §5 (TRANS-03): no such message.
        for bad in (0, len(messages) + 1):
            with pytest.raises(poplib.error_proto, match=r"^b?'?-ERR"):
                client.list(bad)
            with pytest.raises(poplib.error_proto, match=r"^b?'?-ERR"):
                client.uidl(bad)
        assert client.noop().startswith(b"+OK")


@pytest.mark.rfc("1939", "5")
@pytest.mark.parametrize("name", [*CORPUS, "big"])
def test_retr_byte_for_byte(
    server: ServerProcess, corpus_account: Account, corpus_numbers: dict[str, int], name: str
) -> None:
    # RFC 1939 §3, §5 (RETR-01, DOT-02, DOT-05): poplib removes the stuffing dots and
    # the line ends; joining with CRLF must give back exactly the CRLF form.
    message = full_corpus()[name]
    number = corpus_numbers[name]
    # RFC 6856 §2.1 (UTF8-02): a raw UTF-8 header needs UTF8 mode.
    with session(server, corpus_account, utf8=name == "utf-8") as client:
        listed = int(list_one(client, number).split()[2])
        resp, lines, octets = client.retr(number)
    assert resp.startswith(b"+OK")
    received = b"\r\n".join(lines) + b"\r\n"
    assert received == expected_wire(message)
    # RFC 1939 §5, §11 (SIZE-01, DOT-03): LIST size == octets sent without stuffing.
    assert octets == listed == len(expected_wire(message))


@pytest.mark.rfc("1939", "7")
@pytest.mark.parametrize("body_lines", [0, 3])
@pytest.mark.parametrize("name", list(CORPUS))
def test_top(
    server: ServerProcess,
    corpus_account: Account,
    corpus_numbers: dict[str, int],
    name: str,
    body_lines: int,
) -> None:
    # RFC 1939 §7 (TOP-01, TOP-02): the header, the blank line, n body lines, stuffed.
    with session(server, corpus_account, utf8=name == "utf-8") as client:
        resp, lines, octets = client.top(corpus_numbers[name], body_lines)
    assert resp.startswith(b"+OK")
    received = b"\r\n".join(lines) + b"\r\n"
    assert received == expected_top(CORPUS[name], body_lines)
    assert octets == len(received)


@pytest.mark.rfc("6856", "2.1")
def test_utf8_header_is_downgraded_outside_utf8_mode(
    server: ServerProcess, corpus_account: Account, corpus_numbers: dict[str, int]
) -> None:
    with session(server, corpus_account) as client:
        assert "UTF8" in client.capa()
        number = corpus_numbers["utf-8"]
        # RFC 6856 §2.1 (UTF8-02): no raw UTF-8 header outside UTF8 mode; serve sends
        # the RFC 6857 surrogate by default, its size in RETR's +OK.
        reply, lines, octets = client.retr(number)
        assert reply == f"+OK {octets} octets".encode()
        # RFC 1939 §5 (SIZE-01): LIST gives the surrogate's exact size too.
        assert list_one(client, number) == f"+OK {number} {octets}".encode()
        assert all(line.isascii() for line in lines[: lines.index(b"")])  # the header
        _, top, _ = client.top(number, 0)
        assert all(line.isascii() for line in top)
        assert top[-1] == b""
        # An 8-bit body, or 8-bit header octets that are not UTF-8, need no UTF8 mode.
        latin1 = client.retr(corpus_numbers["latin-1"])
        assert b"\r\n".join(latin1[1]) + b"\r\n" == expected_wire(CORPUS["latin-1"])
        # UTF8-01: only valid in AUTHORIZATION.
        with pytest.raises(poplib.error_proto, match="-ERR"):
            client.utf8()


# --------------------------------------------------------------------------------------
# DELE, RSET, QUIT and what ends up on disk


@pytest.mark.rfc("1939", "6")
def test_dele_removes_only_after_quit(server: ServerProcess, account: Account) -> None:
    before = account.files()
    with session(server, account) as client:
        by_number = numbered(client, account)
        uids = uidl_map(client)
        count, size = client.stat()
        assert client.dele(1).startswith(b"+OK")
        assert client.dele(3).startswith(b"+OK")
        # RFC 1939 §5 (STAT-01, LIST-01, TRANS-02): deleted messages are gone from view.
        removed_size = sum(len(expected_wire(by_number[n])) for n in (1, 3))
        assert client.stat() == (count - 2, size - removed_size)
        listed = [int(line.split()[0]) for line in client.list()[1]]
        assert listed == [n for n in range(1, count + 1) if n not in (1, 3)]
        for command in ("RETR 1", "LIST 1", "UIDL 1", "DELE 1", "TOP 1 0"):
            with pytest.raises(poplib.error_proto, match="-ERR"):
                client._shortcmd(command)  # type: ignore[attr-defined]
        with pytest.raises(poplib.error_proto, match="-ERR"):
            client.top(3, 0)
        # TRANS-01: numbers do not shift after DELE.
        assert b"\r\n".join(client.retr(2)[1]) + b"\r\n" == expected_wire(by_number[2])
        # RFC 1939 §5 (DELE-01): nothing removed before UPDATE.
        assert account.files() == before
        assert client.quit().startswith(b"+OK")
    # RFC 1939 §6 (STATE-07): exactly the two deleted messages are gone.  Message 2,
    # retrieved and kept, is flagged seen (new/X is now cur/X:2,S), as in Dovecot.
    before_uids = {name.split("/", 1)[1] for name in before}
    assert account.uids() == before_uids - {uids[1], uids[3]}
    assert f"cur/{uids[2]}:2,S" in account.files()
    with session(server, account) as client:
        assert client.stat()[0] == count - 2
        assert set(uidl_map(client).values()) == set(uids.values()) - {uids[1], uids[3]}


@pytest.mark.rfc("1939", "5")
def test_rset_then_quit_removes_nothing(server: ServerProcess, account: Account) -> None:
    before = account.files()
    with session(server, account) as client:
        count, size = client.stat()
        for n in range(1, count + 1):
            client.dele(n)
        assert client.stat() == (0, 0)
        # RFC 1939 §5 (RSET-01): every mark is undone.
        assert client.rset().startswith(b"+OK")
        assert client.stat() == (count, size)
        assert client.quit().startswith(b"+OK")
    assert account.files() == before


@pytest.mark.rfc("1939", "6")
def test_dropped_connection_after_dele_removes_nothing(
    server: ServerProcess, account: Account
) -> None:
    before = account.files()
    client = pop3_login(server, account)
    count, size = client.stat()
    for n in range(1, count + 1):
        assert client.dele(n).startswith(b"+OK")
    assert client.noop().startswith(b"+OK")  # the DELEs were all processed
    drop(client)
    # RFC 1939 §6 (STATE-06): no UPDATE without QUIT.  Once the lock is free the
    # session is over; nothing may have been removed.
    again = login_when_unlocked(server, account)
    try:
        assert again.stat() == (count, size)
    finally:
        again.quit()
    assert account.files() == before


@pytest.mark.rfc("1939", "6")
def test_dropped_during_big_retr_removes_nothing(
    server: ServerProcess, mail_setup: MailSetup
) -> None:
    account = mail_setup.new_account([CORPUS["dot-lines"], full_corpus()["big"]])
    before = account.files()
    client = pop3_login(server, account)
    client.dele(1)
    # Read only the start of the 5 MiB response, then vanish (STATE-06).
    client.sock.sendall(b"RETR 2\r\n")
    assert client.file.readline().startswith(b"+OK")
    assert len(client.file.read(64 * 1024)) == 64 * 1024
    drop(client)
    again = login_when_unlocked(server, account)
    try:
        assert again.stat()[0] == 2
        _, lines, _ = again.retr(2)
        assert b"\r\n".join(lines) + b"\r\n" == expected_wire(full_corpus()["big"])
    finally:
        again.quit()
    # Nothing removed; the second session's RETR 2 flagged that message seen.
    assert account.uids() == {name.split("/", 1)[1] for name in before}


# --------------------------------------------------------------------------------------
# Authentication


@pytest.mark.rfc("1939", "7")
def test_apop_with_plain_user(server: ServerProcess, mail_setup: MailSetup) -> None:
    account = mail_setup.new_account(list(CORPUS.values())[:2], plain=True)
    client = server.connect()
    # RFC 1939 §7 (GREET-03): the greeting carries a <...@...> timestamp.
    assert TIMESTAMP.search(client.getwelcome())
    try:
        assert client.apop(account.user, account.password).startswith(b"+OK")
        assert client.stat()[0] == 2
    finally:
        client.quit()
    # A second connection has a different timestamp (GREET-04).
    other = server.connect()
    try:
        first = TIMESTAMP.search(client.getwelcome())
        second = TIMESTAMP.search(other.getwelcome())
        assert first is not None
        assert second is not None
        assert first.group() != second.group()
    finally:
        other.quit()


def failed_logins(
    server: ServerProcess, attempts: Sequence[Callable[[poplib.POP3], object]]
) -> list[bytes]:
    """Run failing login ``attempts`` in parallel, each on a fresh connection from a fresh
    loopback address (each failure costs the server's 2 s delay); return the -ERR
    replies.  Each attempt must raise :class:`poplib.error_proto`.
    """

    def run(attempt: Callable[[poplib.POP3], object]) -> bytes:
        client = server.connect(source=fresh_source())
        try:
            with pytest.raises(poplib.error_proto) as info:
                attempt(client)
            # STATE-04, APOP-02, USER-01: still in AUTHORIZATION after the failure.
            with pytest.raises(poplib.error_proto, match="-ERR"):
                client.stat()
            return reply_text(info.value)
        finally:
            client.quit()

    with concurrent.futures.ThreadPoolExecutor(len(attempts)) as pool:
        return list(pool.map(run, attempts))


@dataclass
class AuthFailures:
    """The replies of :func:`auth_failures`."""

    account: Account
    apop: list[bytes]
    user: list[bytes]
    pass_: list[bytes]


@pytest.fixture(scope="module")
def auth_failures(server: ServerProcess, mail_setup: MailSetup) -> AuthFailures:
    """Six failing logins, run at once so the module pays the 2 s failure delay once."""
    plain = mail_setup.new_account(plain=True)
    hashed = mail_setup.new_account()
    account = mail_setup.new_account(list(CORPUS.values())[:2])
    user_replies: list[bytes] = []

    def user_pass(user: str, password: str) -> Callable[[poplib.POP3], object]:
        def attempt(client: poplib.POP3) -> None:
            user_replies.append(client.user(user))
            client.pass_(password)

        return attempt

    replies = failed_logins(
        server,
        [
            lambda client: client.apop(plain.user, "wrong secret"),
            # No plaintext secret stored: APOP cannot succeed for an SSHA512 user.
            lambda client: client.apop(hashed.user, hashed.password),
            lambda client: client.apop("no-such-user", "anything"),
            user_pass(account.user, "wrong-password"),
            user_pass("nobody-here", "wrong-password"),
            user_pass("nobody-here", account.password),
        ],
    )
    return AuthFailures(account, replies[:3], user_replies, replies[3:])


@pytest.mark.rfc("1939", "7")
def test_apop_failures(auth_failures: AuthFailures) -> None:
    replies = auth_failures.apop
    # SEC-05: one reply for all of them, with [AUTH] (CODE-06).
    assert len(set(replies)) == 1, replies
    assert replies[0].startswith(b"-ERR [AUTH]")


@pytest.mark.rfc("1939", "7")
def test_unknown_user_and_wrong_password_get_identical_replies(
    server: ServerProcess, auth_failures: AuthFailures
) -> None:
    # USER-03, SEC-05: USER never tells; PASS fails the same way for both causes.
    user_replies = auth_failures.user
    assert len(user_replies) == 3
    assert len(set(user_replies)) == 1, user_replies
    assert user_replies[0].startswith(b"+OK")
    replies = auth_failures.pass_
    assert len(set(replies)) == 1, replies
    assert replies[0].startswith(b"-ERR [AUTH]")
    # APOP and PASS failures look alike too.
    assert set(replies) == set(auth_failures.apop)
    # A wrong password left the right one working (and the maildrop unlocked).
    account = auth_failures.account
    with session(server, account) as client:
        assert client.stat()[0] == len(account.messages)


# --------------------------------------------------------------------------------------
# Locking and snapshots


@pytest.mark.rfc("1939", "4")
def test_concurrent_login_gets_in_use(server: ServerProcess, account: Account) -> None:
    first = pop3_login(server, account)
    try:
        second = server.connect()
        second.user(account.user)
        # RFC 1939 §4, RFC 2449 §8.1.2 (LOCK-02, CODE-03)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
            second.pass_(account.password)
        # STATE-03: still in AUTHORIZATION; the failed attempt released nothing.
        with pytest.raises(poplib.error_proto, match="-ERR"):
            second.stat()
        assert first.stat()[0] == len(account.messages)
        second.quit()
    finally:
        assert first.quit().startswith(b"+OK")
    # LOCK-03: released when the session ends; disconnect() runs before the QUIT reply
    # is flushed, so an immediate new login must succeed (no polling here).
    for _ in range(5):
        with session(server, account) as client:
            assert client.stat()[0] == len(account.messages)


@pytest.mark.rfc("1939", "4")
def test_lock_across_two_server_processes(
    server: ServerProcess,
    mail_setup: MailSetup,
    server_factory: ServerFactory,
) -> None:
    account = mail_setup.new_account(list(CORPUS.values())[:3])
    other = server_factory(mail_setup)
    first = pop3_login(server, account)
    try:
        second = other.connect()
        second.user(account.user)
        # LOCK-02: the flock excludes sessions of other processes too.
        with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
            second.pass_(account.password)
        second.quit()
        # And the other way round is excluded as well while the lock is held.
    finally:
        first.quit()
    with session(other, account) as client:
        assert client.stat()[0] == 3
        third = server.connect()
        third.user(account.user)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
            third.pass_(account.password)
        third.quit()
    with session(server, account) as client:
        assert client.stat()[0] == 3


@pytest.mark.rfc("1939", "4")
def test_new_mail_appears_in_next_session(server: ServerProcess, account: Account) -> None:
    count = len(account.messages)
    with session(server, account) as client:
        size = client.stat()[1]
        late = b"Subject: arrived during the session\n\nlate\n"
        uid = account.deliver(late)
        # RFC 1939 §4 (LOCK-05): the session works on the snapshot taken at login.
        assert client.stat() == (count, size)
        assert len(client.list()[1]) == count
        assert uid not in uidl_map(client).values()
        with pytest.raises(poplib.error_proto, match="-ERR"):
            client.retr(count + 1)
    with session(server, account) as client:
        assert client.stat() == (count + 1, size + len(expected_wire(late)))
        uids = uidl_map(client)
        assert uids[count + 1] == uid
        assert b"\r\n".join(client.retr(count + 1)[1]) + b"\r\n" == expected_wire(late)


@pytest.mark.rfc("1939", "7")
def test_uidl_stable_across_sessions(server: ServerProcess, account: Account) -> None:
    with session(server, account) as client:
        first = uidl_map(client)
        client.dele(2)
    # RFC 1939 §7 (UIDL-03): the same ids in a later session...
    with session(server, account) as client:
        second = uidl_map(client)
    without_2 = [uid for n, uid in sorted(first.items()) if n != 2]
    assert list(second.values()) == without_2
    # ...even after another program moved a message to cur/ and set flags.
    name = without_2[0]
    os.rename(account.maildir / "new" / name, account.maildir / "cur" / f"{name}:2,S")
    with session(server, account) as client:
        assert list(uidl_map(client).values()) == without_2


@pytest.mark.rfc("1939", "7")
def test_uidl_stable_across_server_restart(tmp_path: Path, server_factory: ServerFactory) -> None:
    setup = make_mail_setup(tmp_path / "restart")
    account = setup.new_account(list(CORPUS.values()))
    first_server = server_factory(setup)
    # GREET-05: without --apop there is no timestamp in the greeting.
    client = first_server.connect()
    assert b"<" not in client.getwelcome()
    client.quit()
    with session(first_server, account) as client:
        before = uidl_map(client)
        sizes_before = client.list()[1]
    assert first_server.stop() == 0
    second_server = server_factory(setup)
    with session(second_server, account) as client:
        # RFC 1939 §7 (UIDL-03): ids persist across a server restart.
        assert uidl_map(client) == before
        assert client.list()[1] == sizes_before
    assert list(before.values()) == list(account.messages)


@pytest.mark.rfc("1939", "6")
def test_sigterm_during_session_with_dele_removes_nothing(
    tmp_path: Path, server_factory: ServerFactory
) -> None:
    setup = make_mail_setup(tmp_path / "sigterm")
    account = setup.new_account(list(CORPUS.values()))
    before = account.files()
    proc = server_factory(setup)
    client = pop3_login(proc, account)
    count = client.stat()[0]
    for n in range(1, count + 1):
        client.dele(n)
    assert client.noop().startswith(b"+OK")
    # RFC 1939 §6 (STATE-06): a server shutdown is not UPDATE.  Exit status 0.
    assert proc.stop(signal.SIGTERM) == 0
    client.sock.settimeout(CLIENT_TIMEOUT)
    rest = client.file.read()  # whatever the server said before closing, then EOF
    client.close()
    assert b"+OK" not in rest
    assert rest in (b"", b"-ERR [SYS/TEMP] Server shutting down.\r\n"), rest
    assert account.files() == before
    assert "received SIGTERM" in proc.stderr


def test_maildir_of_new_user_is_created(server: ServerProcess, mail_setup: MailSetup) -> None:
    # A user of the passwd-file without a Maildir yet gets an empty, private one.
    account = mail_setup.new_account()
    shutil.rmtree(account.maildir, ignore_errors=True)
    with session(server, account) as client:
        assert client.stat() == (0, 0)
        assert client.list()[1] == []
        assert client.uidl()[1] == []
    assert (account.maildir / "new").is_dir()
    assert account.maildir.stat().st_mode & 0o777 == 0o700
