"""MailboxHandler over MemoryStore, RFC 1939 rule by rule (memory streams)."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import pytest
import trio
from pop3_support import (
    ALICE_MESSAGES,
    MAILBOX_USERS,
    Client,
    ForwardingMailbox,
    memory_session,
    unstuff,
)
from test_sasl import ScramClient

from trio_pop3 import DEFAULT_MECHANISMS, CramMD5Mechanism, Limits, MailboxError, wire_size
from trio_pop3.mailbox import (
    Mailbox,
    MailboxHandler,
    MailStore,
    MemoryAuthenticator,
    MemoryStore,
    MessageInfo,
    ascii_lowercase,
)
from trio_pop3.mailbox._listings import format_listing

Factory = Callable[[], MailboxHandler]

SIZES = [wire_size(m) for m in ALICE_MESSAGES]
TOTAL = sum(SIZES)
UID = re.compile(r"[\x21-\x7e]{1,70}")


def normalised(message: bytes) -> bytes:
    data = re.sub(rb"\r?\n", b"\r\n", message)
    return data if data.endswith(b"\n") else data + b"\r\n"


async def logged_in(client: Client, user: str = "alice") -> None:
    await client.login(user, MAILBOX_USERS[user])


# -- AUTHORIZATION ---------------------------------------------------------------------


@pytest.mark.rfc("1939", "4")
async def test_greeting_without_apop_has_no_timestamp(mailbox_factory: Factory) -> None:
    # RFC 2449 §6 (GREET-05): no "<" in the greeting when APOP is off.
    async with memory_session(mailbox_factory, read_greeting=False) as s:
        greeting = await s.client.reply()
        assert greeting.startswith("+OK ")
        assert "<" not in greeting


@pytest.mark.rfc("1939", "7")
async def test_user_pass_login(mailbox_factory: Factory) -> None:
    async with memory_session(mailbox_factory) as s:
        assert await s.client.command("USER alice") == "+OK Send your password."
        assert await s.client.command("PASS secret") == (
            f"+OK Logged in, 3 messages ({TOTAL} octets)."
        )
        assert await s.client.command("STAT") == f"+OK 3 {TOTAL}"


@pytest.mark.rfc("1939", "7")
@pytest.mark.parametrize("failed_user", ["USER", "USER  ", "USER b\ufffe"])
async def test_failed_user_forgets_the_earlier_name(
    mailbox_factory: Factory, failed_user: str
) -> None:
    # RFC 1939 §7 (USER-01): PASS is valid only right after a *successful* USER; a
    # USER that fails (no name, or one SASLprep refuses) must not leave the earlier
    # name for PASS to log in with.
    async with memory_session(mailbox_factory) as s:
        c = s.client
        assert await c.command("USER alice") == "+OK Send your password."
        assert (await c.command(failed_user)).startswith("-ERR")
        assert await c.command("PASS secret") == "-ERR No user name given."
        assert (await c.command("STAT")).startswith("-ERR")  # still AUTHORIZATION


@pytest.mark.rfc("1939", "7")
async def test_failed_command_between_user_and_pass(mailbox_factory: Factory) -> None:
    # USER-01: any command between USER and PASS, failed or not, uses up the USER.
    async with memory_session(mailbox_factory) as s:
        c = s.client
        assert await c.command("USER alice") == "+OK Send your password."
        assert (await c.command("APOP alice 0123")).startswith("-ERR")
        assert await c.command("PASS secret") == "-ERR No user name given."


@pytest.mark.rfc("4616", "2")
async def test_credential_commands_may_be_longer(store: MemoryStore) -> None:
    # PLAIN-03: a 255-octet password must work; PASS carries it in a 262-octet line
    # (Dovecot takes 1 KiB lines before login).  USER and PASS go up to
    # max_auth_line; other commands keep the 255-octet limit.
    password = "p" * 255
    auth = MemoryAuthenticator({"alice": password, "b" * 300: "x"})
    factory = functools.partial(MailboxHandler, store, auth)
    async with memory_session(factory) as s:
        assert await s.client.command("NOOP " + "n" * 300) == "-ERR Command line too long."
        assert await s.client.command("USER " + "b" * 300) == "+OK Send your password."
        assert await s.client.command("USER alice") == "+OK Send your password."
        assert (await s.client.command("PASS " + password)).startswith("+OK Logged in")
    async with memory_session(factory) as s:
        assert await s.client.command("USER alice") == "+OK Send your password."
        reply = await s.client.command("PASS " + "p" * 9000)  # past max_auth_line
        assert reply == "-ERR Command line too long."


@pytest.mark.rfc("1939", "7")
async def test_password_may_start_with_a_space(
    store: MemoryStore, authenticator: MemoryAuthenticator
) -> None:
    # RFC 1939 §7 (WIRE-11): the argument of PASS is everything after the one space
    # that ends the keyword, so a password may start with a space (Dovecot agrees).
    users = MemoryAuthenticator({"alice": "secret", "carol": " spaced out"})
    factory = functools.partial(MailboxHandler, store, users)
    async with memory_session(factory) as s:
        assert await s.client.command("USER carol") == "+OK Send your password."
        assert (await s.client.command("PASS spaced out")).startswith("-ERR [AUTH]")
        assert await s.client.command("USER carol") == "+OK Send your password."
        assert (await s.client.command("PASS  spaced out")).startswith("+OK Logged in")


@pytest.mark.rfc("1939", "7")
async def test_pass_keeps_spaces(mailbox_factory: Factory) -> None:
    # RFC 1939 §7 (WIRE-11): the password is everything after the first space.
    async with memory_session(mailbox_factory) as s:
        assert await s.client.command("USER carol") == "+OK Send your password."
        assert (await s.client.command("PASS pass word")).startswith("-ERR [AUTH]")
        assert await s.client.command("USER carol") == "+OK Send your password."
        assert await s.client.command("PASS pass word ") == "+OK Logged in, 0 messages (0 octets)."


@pytest.mark.rfc("1939", "13")
async def test_unknown_user_and_wrong_password_look_identical(mailbox_factory: Factory) -> None:
    # RFC 1939 §13 (USER-03) and SEC-05: no user enumeration through replies.
    transcripts = []
    for user, password in [("alice", "wrong"), ("nobody", "secret"), ("nobody", "")]:
        async with memory_session(mailbox_factory) as s:
            user_reply = await s.client.command(f"USER {user}")
            pass_reply = await s.client.command(f"PASS {password}")
            transcripts.append((user_reply, pass_reply))
    assert transcripts[0] == ("+OK Send your password.", "-ERR [AUTH] Authentication failed.")
    assert transcripts[1] == transcripts[0]
    assert transcripts[2][0] == transcripts[0][0]
    assert transcripts[2][1].startswith("-ERR")


@pytest.mark.rfc("1939", "7")
async def test_pass_needs_user(mailbox_factory: Factory) -> None:
    # RFC 1939 §7 (USER-01): PASS is valid only right after a successful USER.
    async with memory_session(mailbox_factory) as s:
        c = s.client
        assert (await c.command("PASS secret")).startswith("-ERR")
        assert await c.command("USER alice") == "+OK Send your password."
        assert (await c.command("PASS wrong")).startswith("-ERR [AUTH]")
        # The failed PASS used up the USER.
        assert (await c.command("PASS secret")).startswith("-ERR")
        assert (await c.command("USER")).startswith("-ERR")
        assert (await c.command("STAT")).startswith("-ERR")  # still AUTHORIZATION
        await logged_in(c)


@pytest.mark.rfc("2449", "4")
async def test_255_octet_user_line(mailbox_factory: Factory) -> None:
    # RFC 2449 §4 (WIRE-04)
    async with memory_session(mailbox_factory) as s:
        assert await s.client.command("USER " + "u" * 248) == "+OK Send your password."
        assert (await s.client.command("PASS x")).startswith("-ERR [AUTH]")


# -- APOP -----------------------------------------------------------------------------------

RFC_TIMESTAMP = "<1896.697170952@dbc.mtview.ca.us>"
RFC_DIGEST = "c4c9334bac560ecc979e58001b3e22fb"


class FixedTimestampHandler(MailboxHandler):
    """The RFC 1939 §7 example: a known timestamp so the test vector applies."""

    def greeting(self) -> str:
        self._timestamp = RFC_TIMESTAMP
        return f"POP3 server ready {RFC_TIMESTAMP}"


@pytest.fixture
def apop_factory() -> Factory:
    store = MemoryStore({"mrose": [b"Subject: hi\n\nhello\n"]})
    auth = MemoryAuthenticator({"mrose": "tanstaaf", "alice": "secret"})
    return functools.partial(FixedTimestampHandler, store, auth, apop=True)


@pytest.mark.rfc("1939", "7")
async def test_apop_rfc_test_vector(apop_factory: Factory) -> None:
    # RFC 1939 §7 (APOP-01): MD5("<1896.697170952@dbc.mtview.ca.us>tanstaaf").
    async with memory_session(apop_factory, read_greeting=False) as s:
        assert await s.client.reply() == f"+OK POP3 server ready {RFC_TIMESTAMP}"
        reply = await s.client.command(f"APOP mrose {RFC_DIGEST}")
        assert reply == "+OK Logged in, 1 message (22 octets)."
        assert await s.client.command("STAT") == "+OK 1 22"


@pytest.mark.rfc("1939", "7")
async def test_apop_upper_case_digest_accepted(apop_factory: Factory) -> None:
    # APOP-01 pick: accept either case.
    async with memory_session(apop_factory) as s:
        assert (await s.client.command(f"APOP mrose {RFC_DIGEST.upper()}")).startswith("+OK")


@pytest.mark.rfc("1939", "7")
@pytest.mark.parametrize(
    ("arg", "reply"),
    [
        (f"mrose {'0' * 32}", "-ERR [AUTH] Authentication failed."),
        (f"nobody {RFC_DIGEST}", "-ERR [AUTH] Authentication failed."),
        (f"MROSE {RFC_DIGEST}", "-ERR [AUTH] Authentication failed."),
        (f"mrose {RFC_DIGEST[:-1]}", "-ERR [AUTH] Authentication failed."),
        ("mrose", "-ERR Usage: APOP name digest"),
        (f"mrose {RFC_DIGEST} extra", "-ERR Usage: APOP name digest"),
        ("", "-ERR Usage: APOP name digest"),
    ],
)
async def test_apop_failures(apop_factory: Factory, arg: str, reply: str) -> None:
    # RFC 1939 §7 (APOP-02): failure -> -ERR, still in AUTHORIZATION.
    async with memory_session(apop_factory) as s:
        assert await s.client.command(f"APOP {arg}".strip()) == reply
        assert (await s.client.command("STAT")).startswith("-ERR")
        assert (await s.client.command(f"APOP mrose {RFC_DIGEST}")).startswith("+OK")


@pytest.mark.rfc("1939", "7")
async def test_apop_only_after_the_greeting_or_a_failed_user_or_pass(
    apop_factory: Factory,
) -> None:
    # RFC 1939 §7 (APOP-02): not right after a successful USER; that name is then
    # forgotten, so PASS fails too, and after that failed PASS APOP is allowed.
    async with memory_session(apop_factory) as s:
        assert await s.client.command("USER mrose") == "+OK Send your password."
        assert await s.client.command(f"APOP mrose {RFC_DIGEST}") == (
            "-ERR APOP is not allowed after a successful USER."
        )
        assert await s.client.command("PASS tanstaaf") == "-ERR No user name given."
        assert (await s.client.command(f"APOP mrose {RFC_DIGEST}")).startswith("+OK")
    async with memory_session(apop_factory) as s:
        assert await s.client.command("USER") == "-ERR Missing user name."  # a failed USER
        assert (await s.client.command(f"APOP mrose {RFC_DIGEST}")).startswith("+OK")


@pytest.mark.rfc("6856", "2.2")
@pytest.mark.parametrize(
    ("stored", "digested"),
    [
        ("pass\u00b2", "pass2"),  # SASLprep maps SUPERSCRIPT TWO to "2" (NFKC)
        ("pass\u00b2", "pass\u00b2"),  # a secret stored unprepared, as Dovecot does
        ("two\u00a0words", "two words"),  # a no-break space maps to a space
        ("caf\u00e9", "caf\u00e9"),  # SASLprep leaves it as it is
    ],
)
async def test_apop_digest_of_the_saslprepped_secret(stored: str, digested: str) -> None:
    # RFC 6856 section 2.2 (UTF8-06): APOP with a UTF-8 secret uses its SASLprep form.
    store = MemoryStore({"mrose": [b"Subject: hi\n\nhello\n"]})
    auth = MemoryAuthenticator({"mrose": stored})
    factory = functools.partial(FixedTimestampHandler, store, auth, apop=True)
    digest = hashlib.md5((RFC_TIMESTAMP + digested).encode("utf-8")).hexdigest()
    async with memory_session(factory) as s:
        assert (await s.client.command("APOP mrose " + "0" * 32)).startswith("-ERR [AUTH]")
        assert (await s.client.command(f"APOP mrose {digest}")).startswith("+OK")


@pytest.mark.rfc("1939", "7")
async def test_apop_never_logs_in_with_an_empty_secret() -> None:
    store = MemoryStore({"mrose": [b"Subject: hi\n\nhello\n"]})
    factory = functools.partial(
        FixedTimestampHandler, store, MemoryAuthenticator({"mrose": ""}), apop=True
    )
    async with memory_session(factory) as s:
        for secret in ("", "\x00"):
            digest = hashlib.md5((RFC_TIMESTAMP + secret).encode("utf-8")).hexdigest()
            reply = await s.client.command(f"APOP mrose {digest}")
            assert reply == "-ERR [AUTH] Authentication failed."


@pytest.mark.rfc("3206", "6")
async def test_apop_non_ascii_digest_is_an_auth_failure(apop_factory: Factory) -> None:
    async with memory_session(apop_factory) as s:
        reply = await s.client.command("APOP mrose " + "\u00e9" * 32)
        assert reply == "-ERR [AUTH] Authentication failed."


async def test_apop_off_by_default(mailbox_factory: Factory) -> None:
    # APOP-04 pick: off unless enabled.
    async with memory_session(mailbox_factory) as s:
        assert await s.client.command(f"APOP alice {RFC_DIGEST}") == "-ERR APOP is not available."


@pytest.mark.rfc("1939", "7")
async def test_apop_timestamp_differs_per_greeting(
    store: MemoryStore, authenticator: MemoryAuthenticator
) -> None:
    # RFC 1939 §7 (GREET-03, GREET-04): a msg-id timestamp, different every time.
    factory = functools.partial(MailboxHandler, store, authenticator, apop=True)
    stamps = []
    for _ in range(5):
        async with memory_session(factory, read_greeting=False) as s:
            greeting = await s.client.reply()
            assert greeting.count("<") == 1
            assert greeting.count(">") == 1
            match = re.search(r"<[^<>@\s]+@[^<>@\s]+>", greeting)
            assert match is not None, greeting
            stamps.append(match.group())
            assert len(greeting) + 2 <= 512
    assert len(set(stamps)) == 5


# -- TRANSACTION ----------------------------------------------------------------------------


@pytest.mark.rfc("1939", "5")
async def test_stat_list_uidl(mailbox_factory: Factory, store: MemoryStore) -> None:
    # RFC 1939 §5, §7 (STAT-01, LIST-01, LIST-02, UIDL-01)
    uids = [uid for uid, _ in store.maildrops["alice"]]
    async with memory_session(mailbox_factory) as s:
        c = s.client
        await logged_in(c)
        assert await c.command("STAT") == f"+OK 3 {TOTAL}"
        first, lines = await c.multi("LIST")
        assert first == f"+OK 3 messages ({TOTAL} octets)"
        assert lines == [f"{n} {size}".encode() for n, size in enumerate(SIZES, 1)]
        for n, size in enumerate(SIZES, 1):
            assert await c.command(f"LIST {n}") == f"+OK {n} {size}"
            assert await c.command(f"UIDL {n}") == f"+OK {n} {uids[n - 1]}"
        first, lines = await c.multi("UIDL")
        assert first == "+OK"
        assert lines == [f"{n} {uid}".encode() for n, uid in enumerate(uids, 1)]
        assert await c.command("NOOP") == "+OK"  # NOOP-01


@pytest.mark.rfc("1939", "7")
async def test_uidl_ids_are_valid_unique_and_stable(
    mailbox_factory: Factory, store: MemoryStore
) -> None:
    # RFC 1939 §7 (UIDL-02, UIDL-03, UIDL-04)
    for _ in range(20):
        store.deliver("alice", b"Subject: same\n\nsame\n")  # identical content
    seen: list[list[bytes]] = []
    for _ in range(2):
        async with memory_session(mailbox_factory) as s:
            await logged_in(s.client)
            _, lines = await s.client.multi("UIDL")
            seen.append(lines)
            # A session ended without QUIT: the ids must still persist.
    assert seen[0] == seen[1]
    uids = [line.split(b" ", 1)[1].decode("ascii") for line in seen[0]]
    assert len(uids) == 23
    assert len(set(uids)) == 23
    assert all(UID.fullmatch(uid) for uid in uids)


@pytest.mark.rfc("1939", "5")
@pytest.mark.parametrize("number", [1, 2, 3])
async def test_retr_size_matches_octets_received(mailbox_factory: Factory, number: int) -> None:
    # RFC 1939 §5, §11 (RETR-01, SIZE-01, DOT-02, DOT-03, DOT-05): the LIST size is the
    # octet count received, for CRLF- and LF-stored messages and one starting with ".".
    message = ALICE_MESSAGES[number - 1]
    async with memory_session(mailbox_factory) as s:
        c = s.client
        await logged_in(c)
        listed = int((await c.command(f"LIST {number}")).split()[2])
        first, lines = await c.multi(f"RETR {number}")
        assert first == f"+OK {listed} octets"
        body = unstuff(lines)
        assert len(body) == listed == wire_size(message)
        assert body == normalised(message)
        for line in lines:  # DOT-02: stuffed, the first line included
            assert not line.startswith(b".") or line.startswith(b"..")


async def test_retr_first_line_dot_on_the_wire(mailbox_factory: Factory) -> None:
    # DOT-02: Dovecot fails this one; the very first line is stuffed.
    async with memory_session(mailbox_factory) as s:
        await logged_in(s.client)
        assert await s.client.command("RETR 3") == f"+OK {SIZES[2]} octets"
        assert await s.client.raw_line() == b"..From a dot\r\n"
        assert await s.client.data_lines() == [b"Subject: third", b"", b"no final newline"]


@pytest.mark.rfc("1939", "7")
@pytest.mark.parametrize(
    ("arg", "lines"),
    [
        ("1 0", [b"From: a@example.org", b"Subject: first", b""]),
        ("1 2", [b"From: a@example.org", b"Subject: first", b"", b"line 1", b"line 2"]),
        (
            "1 999",
            [b"From: a@example.org", b"Subject: first", b"", b"line 1", b"line 2", b"line 3"],
        ),
        ("2 0", [b"From: b@example.org", b"Subject: LF only", b""]),
        ("2 3", [b"From: b@example.org", b"Subject: LF only", b"", b"body a", b"..dotted", b".."]),
        ("3 0", [b"..From a dot", b"Subject: third", b""]),
        ("3 1", [b"..From a dot", b"Subject: third", b"", b"no final newline"]),
        ("  3   1 ", [b"..From a dot", b"Subject: third", b"", b"no final newline"]),
    ],
)
async def test_top(mailbox_factory: Factory, arg: str, lines: list[bytes]) -> None:
    # RFC 1939 §7 (TOP-01, TOP-02, DOT-02)
    async with memory_session(mailbox_factory) as s:
        await logged_in(s.client)
        first, got = await s.client.multi(f"TOP {arg}")
        assert first.startswith("+OK")
        assert got == lines


@pytest.mark.rfc("1939", "7")
@pytest.mark.parametrize(
    "arg",
    [
        "",
        "1",
        "1 -1",
        "1 x",
        "1 +1",
        "x 1",
        "0 1",
        "4 1",
        "1 1 1",
        "-1 0",
        "1 1.5",
        "1 " + "9" * 30,
    ],
)
async def test_top_bad_arguments(mailbox_factory: Factory, arg: str) -> None:
    # RFC 1939 §7 (TOP-01, WIRE-07): both arguments required, n non-negative.
    async with memory_session(mailbox_factory) as s:
        await logged_in(s.client)
        assert (await s.client.command(f"TOP {arg}".strip())).startswith("-ERR")
        assert await s.client.command("NOOP") == "+OK"


@pytest.mark.rfc("1939", "5")
@pytest.mark.parametrize("command", ["RETR", "DELE", "LIST", "UIDL", "TOP"])
@pytest.mark.parametrize(
    "arg", ["0", "4", "abc", "1 2", "+1", "-1", "1x", "99999999999999999999999", "\u0661"]
)
async def test_bad_message_numbers(mailbox_factory: Factory, command: str, arg: str) -> None:
    # RFC 1939 §5 (TRANS-03, WIRE-10): no such message -> -ERR, nothing changes.
    async with memory_session(mailbox_factory) as s:
        await logged_in(s.client)
        line = f"{command} {arg} 0" if command == "TOP" else f"{command} {arg}"
        if command == "TOP" and arg == "1 2":
            line = "TOP 1 2 0"
        assert (await s.client.command(line)).startswith("-ERR")
        assert await s.client.command("STAT") == f"+OK 3 {TOTAL}"


@pytest.mark.rfc("1939", "5")
@pytest.mark.parametrize("command", ["RETR", "DELE"])
async def test_message_number_required(mailbox_factory: Factory, command: str) -> None:
    async with memory_session(mailbox_factory) as s:
        await logged_in(s.client)
        assert await s.client.command(command) == "-ERR Message number required."


@pytest.mark.rfc("1939", "5")
@pytest.mark.parametrize("line", ["LIST 2", "RETR 2", "TOP 2 0", "UIDL 2", "DELE 2"])
async def test_deleted_messages_are_invisible(mailbox_factory: Factory, line: str) -> None:
    # RFC 1939 §5 (TRANS-02, STAT-01, LIST-01, UIDL-01)
    async with memory_session(mailbox_factory) as s:
        c = s.client
        await logged_in(c)
        assert await c.command("DELE 2") == "+OK Message 2 deleted."
        assert (await c.command(line)).startswith("-ERR")
        assert await c.command("STAT") == f"+OK 2 {SIZES[0] + SIZES[2]}"
        _, listing = await c.multi("LIST")
        assert [x.split()[0] for x in listing] == [b"1", b"3"]
        _, uidl = await c.multi("UIDL")
        assert [x.split()[0] for x in uidl] == [b"1", b"3"]


@pytest.mark.rfc("1939", "4")
async def test_numbers_stable_after_dele(mailbox_factory: Factory) -> None:
    # RFC 1939 §4 (TRANS-01): DELE never renumbers.
    async with memory_session(mailbox_factory) as s:
        c = s.client
        await logged_in(c)
        assert (await c.command("DELE 1")).startswith("+OK")
        first, lines = await c.multi("RETR 2")
        assert first == f"+OK {SIZES[1]} octets"
        assert unstuff(lines) == normalised(ALICE_MESSAGES[1])
        assert await c.command("LIST 3") == f"+OK 3 {SIZES[2]}"
        assert (await c.command("DELE 3")).startswith("+OK")
        assert await c.command("LIST 2") == f"+OK 2 {SIZES[1]}"
        assert await c.command("STAT") == f"+OK 1 {SIZES[1]}"


@pytest.mark.rfc("1939", "5")
async def test_rset(mailbox_factory: Factory) -> None:
    # RFC 1939 §5 (RSET-01)
    async with memory_session(mailbox_factory) as s:
        c = s.client
        await logged_in(c)
        assert (await c.command("DELE 1")).startswith("+OK")
        assert (await c.command("DELE 3")).startswith("+OK")
        assert await c.command("RSET") == f"+OK 3 messages ({TOTAL} octets)."
        assert await c.command("STAT") == f"+OK 3 {TOTAL}"
        assert await c.command("LIST 1") == f"+OK 1 {SIZES[0]}"
        assert (await c.command("DELE 1")).startswith("+OK")  # deletable again


@pytest.mark.rfc("1939", "5")
async def test_empty_maildrop(mailbox_factory: Factory) -> None:
    # RFC 1939 §5 (DOT-07, LIST-01): empty listings are +OK then ".".
    async with memory_session(mailbox_factory) as s:
        c = s.client
        await logged_in(c, "carol")
        assert await c.command("STAT") == "+OK 0 0"
        await c.send_line("LIST")
        assert await c.raw_line() == b"+OK 0 messages (0 octets)\r\n"
        assert await c.raw_line() == b".\r\n"
        await c.send_line("UIDL")
        assert await c.raw_line() == b"+OK\r\n"
        assert await c.raw_line() == b".\r\n"
        assert (await c.command("RETR 1")).startswith("-ERR")
        assert await c.command("RSET") == "+OK 0 messages (0 octets)."


@pytest.mark.rfc("1939", "4")
async def test_snapshot_at_login(mailbox_factory: Factory, store: MemoryStore) -> None:
    # LOCK-05: mail arriving during a session shows up in the next one.
    async with memory_session(mailbox_factory) as s:
        await logged_in(s.client)
        store.deliver("alice", b"Subject: late\n\nlate\n")
        assert await s.client.command("STAT") == f"+OK 3 {TOTAL}"
        assert (await s.client.command("LIST 4")).startswith("-ERR")
        assert await s.client.command("QUIT") == "+OK goodbye"
        await s.done.wait()
    async with memory_session(mailbox_factory) as s:
        await logged_in(s.client)
        assert (await s.client.command("STAT")).startswith("+OK 4 ")


# -- listings shared by sessions with the same snapshot -----------------------------------


class SharedSnapshotStore(MailStore):
    """A MemoryStore whose maildrops hand out one snapshot tuple while they stay unchanged.

    As MaildirStore does for a Maildir it finds unchanged since the last login.
    """

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.snapshots: dict[str, tuple[MessageInfo, ...]] = {}

    async def open(self, user: str) -> Mailbox:
        return SharedSnapshotMailbox(self, await self.inner.open(user), user)


class SharedSnapshotMailbox(ForwardingMailbox):
    def __init__(self, store: SharedSnapshotStore, inner: Mailbox, user: str) -> None:
        super().__init__(inner)
        self.store, self.user = store, user

    async def list_messages(self) -> Sequence[MessageInfo]:
        fresh = tuple(await self.inner.list_messages())
        kept = self.store.snapshots.get(self.user)
        if kept != fresh:
            self.store.snapshots[self.user] = kept = fresh
        return kept


@pytest.fixture
def shared_factory(store: MemoryStore, authenticator: MemoryAuthenticator) -> Factory:
    return functools.partial(MailboxHandler, SharedSnapshotStore(store), authenticator)


@pytest.fixture
def format_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record every listing MailboxHandler formats (rather than takes ready-made)."""
    calls: list[list[str]] = []

    def recording(lines: Iterable[str]) -> bytes:
        lines = list(lines)
        calls.append(lines)
        return format_listing(lines)

    monkeypatch.setattr("trio_pop3.mailbox._handler.format_listing", recording)
    return calls


@pytest.mark.rfc("1939", "5")
async def test_sessions_with_one_snapshot_share_its_listings(
    shared_factory: Factory, store: MemoryStore, format_calls: list[list[str]]
) -> None:
    # RFC 1939 §5, §7 (LIST-01, UIDL-01): the second session gets the same bytes,
    # formatted once.
    uids = [uid for uid, _ in store.maildrops["alice"]]
    expected_list = [f"{n} {size}".encode() for n, size in enumerate(SIZES, 1)]
    expected_uidl = [f"{n} {uid}".encode() for n, uid in enumerate(uids, 1)]
    for _ in range(3):
        async with memory_session(shared_factory) as s:
            await logged_in(s.client)
            assert await s.client.multi("LIST") == (
                f"+OK 3 messages ({TOTAL} octets)",
                expected_list,
            )
            assert await s.client.multi("UIDL") == ("+OK", expected_uidl)
    assert len(format_calls) == 2  # one LIST and one UIDL, in the first session


@pytest.mark.rfc("1939", "5")
async def test_shared_listings_never_show_deleted_messages(
    shared_factory: Factory, store: MemoryStore, format_calls: list[list[str]]
) -> None:
    # RFC 1939 §5 (TRANS-02, RSET-01): with messages marked deleted the listing is
    # the session's own; after RSET it is the shared one again.
    uids = [uid for uid, _ in store.maildrops["alice"]]
    async with memory_session(shared_factory) as s:
        await logged_in(s.client)
        await s.client.multi("LIST")  # fills the cache
        await s.client.multi("UIDL")
    async with memory_session(shared_factory) as s:
        c = s.client
        await logged_in(c)
        assert (await c.command("DELE 2")).startswith("+OK")
        first, lines = await c.multi("LIST")
        assert first == f"+OK 2 messages ({TOTAL - SIZES[1]} octets)"
        assert lines == [f"1 {SIZES[0]}".encode(), f"3 {SIZES[2]}".encode()]
        assert (await c.multi("UIDL"))[1] == [f"1 {uids[0]}".encode(), f"3 {uids[2]}".encode()]
        assert (await c.command("RSET")).startswith("+OK")
        _, lines = await c.multi("LIST")
        assert [line.split()[0] for line in lines] == [b"1", b"2", b"3"]
        assert await c.command("QUIT") == "+OK goodbye"
    assert len(format_calls) == 4  # the two of the first session and two with DELE 2


@pytest.mark.rfc("1939", "4")
async def test_shared_listings_follow_a_changed_maildrop(
    shared_factory: Factory, store: MemoryStore
) -> None:
    # RFC 1939 §4 (LOCK-05): a new snapshot gets its own listing.
    async with memory_session(shared_factory) as s:
        await logged_in(s.client)
        assert len((await s.client.multi("UIDL"))[1]) == 3
    new_message = b"Subject: new\n\nnew\n"
    store.deliver("alice", new_message)
    async with memory_session(shared_factory) as s:
        await logged_in(s.client)
        _, lines = await s.client.multi("UIDL")
        assert [line.split()[0] for line in lines] == [b"1", b"2", b"3", b"4"]
        _, lines = await s.client.multi("LIST")
        assert lines[3] == f"4 {wire_size(new_message)}".encode()


# -- wrong state and CAPA -----------------------------------------------------------------


@pytest.mark.rfc("1939", "3")
@pytest.mark.parametrize(
    "line", ["STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 0", "UIDL"]
)
async def test_transaction_commands_before_login(mailbox_factory: Factory, line: str) -> None:
    # RFC 1939 §3 (WIRE-08)
    async with memory_session(mailbox_factory) as s:
        assert (await s.client.command(line)).startswith("-ERR")
        await logged_in(s.client)


@pytest.mark.rfc("1939", "3")
@pytest.mark.parametrize(
    "line", ["USER alice", "PASS secret", f"APOP alice {RFC_DIGEST}", "AUTH PLAIN"]
)
async def test_authorization_commands_after_login(mailbox_factory: Factory, line: str) -> None:
    # RFC 1939 §3 (WIRE-08), RFC 5034 §4 (SASL-02)
    async with memory_session(mailbox_factory) as s:
        await logged_in(s.client)
        assert (await s.client.command(line)).startswith("-ERR")
        assert await s.client.command("STAT") == f"+OK 3 {TOTAL}"


@pytest.mark.rfc("2449", "5")
async def test_capa_in_both_states(mailbox_factory: Factory) -> None:
    # RFC 2449 §5 (CAPA-01, CAPA-03), §6 (CAP-USER, CAP-TOP, CAP-UIDL, CAP-RESP, CAP-PIPE)
    async with memory_session(mailbox_factory) as s:
        _, before = await s.client.multi("CAPA")
        await logged_in(s.client)
        _, after = await s.client.multi("CAPA")
    for caps in (before, after):
        for tag in (b"USER", b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING", b"AUTH-RESP-CODE"):
            assert tag in caps
        assert all(len(cap) + 2 <= 512 for cap in caps)  # RESP-04
        assert b"STLS" not in caps  # no TLS configured (CONN-06)
    assert set(before) <= set(after)  # CAPA-03


# -- locking ----------------------------------------------------------------------------


@pytest.mark.rfc("2449", "8.1.2")
async def test_in_use_for_concurrent_login(mailbox_factory: Factory, store: MemoryStore) -> None:
    # RFC 1939 §4 (LOCK-01, LOCK-02), RFC 2449 §8.1.2 (CODE-03)
    async with memory_session(mailbox_factory) as first:
        await logged_in(first.client)
        assert store.is_locked("alice")
        async with memory_session(mailbox_factory) as second:
            assert await second.client.command("USER alice") == "+OK Send your password."
            reply = await second.client.command("PASS secret")
            assert reply == "-ERR [IN-USE] Mailbox is locked by another POP3 session."
            # The failed session is still in AUTHORIZATION and can log in elsewhere.
            await logged_in(second.client, "bob")
            assert first.client is not second.client
        assert (await first.client.command("DELE 1")).startswith("+OK")
        assert await first.client.command("QUIT") == "+OK goodbye"
        assert await first.client.read_to_eof() == b""
        await first.done.wait()
    assert not store.is_locked("alice")
    async with memory_session(mailbox_factory) as third:
        await logged_in(third.client)
        assert await third.client.command("STAT") == f"+OK 2 {TOTAL - SIZES[0]}"


class BrokenListStore(MailStore):
    """Takes the MemoryStore lock, then fails to list the maildrop."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.locked_at_failure: bool | None = None

    async def open(self, user: str) -> Mailbox:
        return BrokenListMailbox(self, await self.inner.open(user), user)


class BrokenListMailbox(ForwardingMailbox):
    def __init__(self, store: BrokenListStore, inner: Mailbox, user: str) -> None:
        super().__init__(inner)
        self.store, self.user = store, user

    async def list_messages(self) -> Sequence[MessageInfo]:
        self.store.locked_at_failure = self.store.inner.is_locked(self.user)
        raise MailboxError("Maildrop is corrupt.")


@pytest.mark.rfc("1939", "4")
async def test_lock_released_before_err(
    store: MemoryStore, authenticator: MemoryAuthenticator
) -> None:
    # RFC 1939 §4 (STATE-03, LOCK-03): a lock taken for a login that fails is released
    # before the -ERR goes out.
    broken = BrokenListStore(store)
    factory = functools.partial(MailboxHandler, broken, authenticator)
    async with memory_session(factory) as s:
        assert await s.client.command("USER alice") == "+OK Send your password."
        assert await s.client.command("PASS secret") == "-ERR [SYS/TEMP] Maildrop is corrupt."
        assert broken.locked_at_failure is True
        assert not store.is_locked("alice")  # already free when the reply arrived
        assert (await s.client.command("STAT")).startswith("-ERR")  # still AUTHORIZATION


# -- UPDATE ---------------------------------------------------------------------------------


@pytest.mark.rfc("1939", "6")
@pytest.mark.parametrize(
    ("commands", "kept"),
    [
        (["DELE 2", "QUIT"], [1, 3]),
        (["DELE 1", "DELE 3", "QUIT"], [2]),
        (["DELE 1", "DELE 2", "DELE 3", "QUIT"], []),
        (["DELE 1", "RSET", "QUIT"], [1, 2, 3]),
        (["DELE 1", "RSET", "DELE 2", "QUIT"], [1, 3]),
        (["RETR 1", "TOP 2 0", "QUIT"], [1, 2, 3]),
    ],
)
async def test_quit_removes_exactly_the_deleted(
    mailbox_factory: Factory, store: MemoryStore, commands: list[str], kept: list[int]
) -> None:
    # RFC 1939 §6 (STATE-07, DELE-01): nothing is removed before QUIT, then exactly
    # the marked messages.
    async with memory_session(mailbox_factory) as s:
        await logged_in(s.client)
        first = ""
        for line in commands:
            await s.client.send_line(line)
            first = await s.client.reply()
            assert first.startswith("+OK"), (line, first)
            if line.startswith(("RETR", "TOP")):
                await s.client.data_lines()
            if line != "QUIT":
                assert store.messages("alice") == list(ALICE_MESSAGES)  # DELE-01
        assert first == "+OK goodbye"
        assert await s.client.read_to_eof() == b""
        await s.done.wait()
    assert store.messages("alice") == [ALICE_MESSAGES[n - 1] for n in kept]
    assert not store.is_locked("alice")


@pytest.mark.rfc("1939", "6")
async def test_quit_in_authorization_touches_nothing(
    mailbox_factory: Factory, store: MemoryStore
) -> None:
    # RFC 1939 §6 (STATE-05)
    async with memory_session(mailbox_factory) as s:
        assert await s.client.command("USER alice") == "+OK Send your password."
        assert await s.client.command("QUIT") == "+OK goodbye"
        assert await s.client.read_to_eof() == b""
    assert store.messages("alice") == list(ALICE_MESSAGES)


# -- user name format (Dovecot's auth_username_format = %Lu) ----------------------------


def folding_factory(store: MemoryStore, *, apop: bool = False) -> Callable[[], MailboxHandler]:
    users = MemoryAuthenticator({"alice": "secret", "åsa": "pw"})
    return functools.partial(
        MailboxHandler,
        store,
        users,
        username_format=ascii_lowercase,
        apop=apop,
        mechanisms=[*DEFAULT_MECHANISMS, CramMD5Mechanism()],
    )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "method", ["USER/PASS", "APOP", "AUTH PLAIN", "AUTH LOGIN", "AUTH CRAM-MD5", "SCRAM"]
)
async def test_username_format_applies_to_every_login(method: str) -> None:
    # Dovecot (transcript D2): USER ALICE logs in as alice.  Every way of logging in
    # looks the user up, and opens the maildrop, under the formatted name.
    store = MemoryStore({"alice": [b"Subject: x\r\n\r\nhi\r\n"], "åsa": []})
    factory = folding_factory(store, apop=True)
    async with memory_session(factory, read_greeting=False) as s:
        greeting = await s.client.reply()
        if method == "USER/PASS":
            assert (await s.client.command("USER ALICE")).startswith("+OK")
            reply = await s.client.command("PASS secret")
        elif method == "APOP":
            timestamp = greeting[greeting.index("<") :]
            digest = hashlib.md5((timestamp + "secret").encode()).hexdigest()
            reply = await s.client.command(f"APOP AlIcE {digest}")
        elif method == "AUTH PLAIN":
            reply = await s.client.command("AUTH PLAIN " + b64("\0ALICE\0secret"))
        elif method == "AUTH LOGIN":
            assert (await s.client.command("AUTH LOGIN " + b64("ALICE"))).startswith("+ ")
            reply = await s.client.command(b64("secret"))
        elif method == "AUTH CRAM-MD5":
            nonce = base64.b64decode((await s.client.command("AUTH CRAM-MD5"))[2:])
            digest = hmac.new(b"secret", nonce, "md5").hexdigest()
            reply = await s.client.command(b64(f"ALICE {digest}"))
        else:
            scram = ScramClient("ALICE", "secret")
            first = base64.b64encode(scram.first()).decode()
            server_first = await s.client.command(f"AUTH SCRAM-SHA-256 {first}")
            final = scram.final(base64.b64decode(server_first[2:]))
            server_final = await s.client.command(base64.b64encode(final).decode())
            scram.check_final(base64.b64decode(server_final[2:]))
            reply = await s.client.command("")
        assert reply.startswith("+OK"), reply
        assert await s.client.command("STAT") == "+OK 1 18"


@pytest.mark.parametrize("authzid", ["alice", "ALICE", "Alice"])
async def test_username_format_applies_to_the_authzid(authzid: str) -> None:
    # RFC 4616 section 2: an authzid naming the authenticated user itself is allowed;
    # with the format, "ALICE" and "alice" are that user.
    store = MemoryStore({"alice": [b"Subject: x\r\n\r\nhi\r\n"], "åsa": []})
    async with memory_session(folding_factory(store)) as s:
        reply = await s.client.command("AUTH PLAIN " + b64(f"{authzid}\0ALICE\0secret"))
        assert reply.startswith("+OK"), reply
    async with memory_session(folding_factory(store)) as s:
        scram = ScramClient("ALICE", "secret", authzid=authzid)
        first = base64.b64encode(scram.first()).decode()
        server_first = await s.client.command(f"AUTH SCRAM-SHA-256 {first}")
        final = scram.final(base64.b64decode(server_first[2:]))
        server_final = await s.client.command(base64.b64encode(final).decode())
        scram.check_final(base64.b64decode(server_final[2:]))
        assert (await s.client.command("")).startswith("+OK")


async def test_authzid_of_another_user_is_refused_with_a_format() -> None:
    store = MemoryStore({"alice": [], "åsa": []})
    async with memory_session(folding_factory(store)) as s:
        reply = await s.client.command("AUTH PLAIN " + b64("åsa\0ALICE\0secret"))
        assert reply.startswith("-ERR [AUTH]"), reply


async def test_username_format_lowercases_ascii_only() -> None:
    store = MemoryStore({"alice": [], "åsa": []})
    async with memory_session(folding_factory(store)) as s:
        assert (await s.client.command("USER ÅSA")).startswith("+OK")
        assert (await s.client.command("PASS pw")).startswith("-ERR [AUTH]")  # as Dovecot
    async with memory_session(folding_factory(store)) as s:
        assert (await s.client.command("USER åSA")).startswith("+OK")
        assert (await s.client.command("PASS pw")).startswith("+OK")


async def test_failed_login_logs_the_formatted_name(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore({"alice": []})
    async with memory_session(folding_factory(store)) as s:
        assert (await s.client.command("AUTH PLAIN " + b64("\0ALICE\0wrong"))).startswith("-ERR")
    assert "authentication failure: user=alice " in caplog.text


async def test_names_kept_as_sent_by_default(mailbox_factory: Factory) -> None:
    async with memory_session(mailbox_factory) as s:
        assert (await s.client.command("USER ALICE")).startswith("+OK")
        assert (await s.client.command("PASS secret")).startswith("-ERR [AUTH]")


#: Unique-ids a careless backend might give; only the last is one UIDL may send.
BAD_UIDS = ["has space", "", "x" * 71, "caf\u00e9", "tab\there", "dup", "dup", "ok-1"]


class BadUidMailbox(ForwardingMailbox):
    async def list_messages(self) -> Sequence[MessageInfo]:
        inner = await self.inner.list_messages()
        return [MessageInfo(uid, m.size, m.key) for uid, m in zip(BAD_UIDS, inner, strict=True)]


class BadUidStore(MailStore):
    def __init__(self) -> None:
        self.inner = MemoryStore({"alice": [b"Subject: x\n\nbody\n"] * len(BAD_UIDS)})

    async def open(self, user: str) -> Mailbox:
        return BadUidMailbox(await self.inner.open(user))


@pytest.mark.rfc("1939", "7")
async def test_unique_ids_uidl_cannot_send_are_replaced(caplog: pytest.LogCaptureFixture) -> None:
    # UIDL-01: 1 to 70 characters from 0x21 to 0x7E, whatever the backend gives; a
    # replacement is stable from session to session, as a unique-id must be.
    store = BadUidStore()
    factory = functools.partial(MailboxHandler, store, MemoryAuthenticator(MAILBOX_USERS))
    listings = []
    for _ in range(2):
        async with memory_session(factory) as s:
            await s.client.login()
            _, lines = await s.client.multi("UIDL")
            listings.append(lines)
            for line in lines:
                number, uid = line.split(b" ")
                assert 1 <= len(uid) <= 70
                assert all(0x21 <= octet <= 0x7E for octet in uid), uid
                single = await s.client.command(f"UIDL {number.decode()}")
                assert single == f"+OK {number.decode()} {uid.decode()}"
    assert listings[0] == listings[1]
    uids = [line.split(b" ")[1].decode() for line in listings[0]]
    assert uids[-1] == "ok-1"
    assert uids[:5] == [hashlib.sha1(uid.encode()).hexdigest() for uid in BAD_UIDS[:5]]
    assert "which UIDL cannot send" in caplog.text
    assert "gave one unique-id to several messages" in caplog.text


# -- LAST (RFC 1460, obsolete; enable_last) ---------------------------------------------


class SeenStore(MailStore):
    """A MemoryStore whose maildrops say the messages numbered in ``seen`` were seen."""

    def __init__(self, inner: MemoryStore, seen: set[int]) -> None:
        self.inner, self.seen = inner, seen

    async def open(self, user: str) -> Mailbox:
        return SeenMailbox(await self.inner.open(user), self.seen)


class SeenMailbox(ForwardingMailbox):
    def __init__(self, inner: Mailbox, seen: set[int]) -> None:
        super().__init__(inner)
        self.seen_numbers = seen
        self.uids: list[str] = []

    def seen(self, message: MessageInfo) -> bool:
        assert type(message) is MessageInfo  # the backend's own entry, never a surrogate's
        return message.uid in {self.uids[n - 1] for n in self.seen_numbers}

    async def list_messages(self) -> Sequence[MessageInfo]:
        messages = await self.inner.list_messages()
        self.uids = [m.uid for m in messages]
        return messages


@pytest.mark.rfc("1939", "5")
async def test_last_is_unknown_unless_enabled(mailbox_factory: Factory) -> None:
    # RSET-01: LAST is gone from RFC 1939; Dovecot answers it only with pop3_enable_last.
    async with memory_session(mailbox_factory) as s:
        await logged_in(s.client)
        assert await s.client.command("LAST") == "-ERR Unknown command: LAST"


@pytest.mark.rfc("1939", "5")
@pytest.mark.parametrize("utf8_legacy", ["refuse", "downgrade"])
async def test_last_counts_retr_top_and_earlier_seen_flags(
    authenticator: MemoryAuthenticator, utf8_legacy: Literal["refuse", "downgrade"]
) -> None:
    # Message 2 has a UTF-8 header: with "downgrade" it is listed with its surrogate's
    # size, and Mailbox.seen still gets the backend's own entry.
    utf8 = "Subject: caf\u00e9\r\n\r\nbody\r\n".encode()
    store = MemoryStore({"alice": [ALICE_MESSAGES[0], utf8, ALICE_MESSAGES[2]]})
    factory = functools.partial(
        MailboxHandler,
        SeenStore(store, {2}),
        authenticator,
        enable_last=True,
        utf8_legacy=utf8_legacy,
    )
    async with memory_session(factory) as s:
        assert await s.client.command("LAST") == ("-ERR LAST not allowed in AUTHORIZATION state.")
        await logged_in(s.client)
        assert await s.client.command("LAST") == "+OK 2"  # seen before the session
        assert (await s.client.multi("RETR 1"))[0].startswith("+OK")
        assert await s.client.command("LAST") == "+OK 2"
        assert (await s.client.multi("TOP 3 0"))[0].startswith("+OK")
        assert await s.client.command("LAST") == "+OK 3"
        assert (await s.client.command("RETR 9")).startswith("-ERR ")
        assert await s.client.command("LAST") == "+OK 3"
        assert (await s.client.command("RSET")).startswith("+OK 3 messages")
        assert await s.client.command("LAST") == "+OK 0"  # as Dovecot does
        assert await s.client.command("LAST 1") == "+OK 0"  # arguments ignored, like NOOP


async def test_last_off_memory_backend_starts_at_zero(
    store: MemoryStore, authenticator: MemoryAuthenticator
) -> None:
    # The Mailbox.seen default: no message was seen before.
    factory = functools.partial(MailboxHandler, store, authenticator, enable_last=True)
    async with memory_session(factory) as s:
        await logged_in(s.client)
        assert await s.client.command("LAST") == "+OK 0"


@pytest.mark.rfc("5034", "4")
async def test_cancelled_exchanges_count_as_bad_commands(mailbox_factory: Factory) -> None:
    # SASL-05: "*" cancels, answered -ERR without a delay; but each exchange may cost
    # a password hash, so a client looping AUTH and "*" meets max_bad_commands.
    async with memory_session(mailbox_factory, limits=Limits(max_bad_commands=3)) as s:
        for _ in range(4):
            assert await s.client.command("AUTH PLAIN") == "+ "
            assert await s.client.command("*") == "-ERR Authentication aborted by client."
        with trio.fail_after(10):
            assert await s.client.read_to_eof() == b"-ERR Too many bad commands.\r\n"
    async with memory_session(mailbox_factory, limits=Limits(max_bad_commands=3)) as s:
        for _ in range(3):  # a completed command in between starts the count again
            assert await s.client.command("AUTH PLAIN") == "+ "
            assert await s.client.command("*") == "-ERR Authentication aborted by client."
        assert (await s.client.multi("CAPA"))[0].startswith("+OK")
        assert await s.client.command("AUTH PLAIN") == "+ "
        assert await s.client.command("*") == "-ERR Authentication aborted by client."
        await logged_in(s.client)
