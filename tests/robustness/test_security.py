"""Security checks: user enumeration, secrets in logs, escaping the Maildir.

* No user enumeration by reply: an unknown user and a wrong password of a known user
  get byte-identical transcripts for USER/PASS, APOP, AUTH PLAIN (initial response
  and continuation) and AUTH LOGIN (USER-03, CODE-06/07, SEC-05, CONN-10).
* No user enumeration by timing: a real ``PasswdFileAuthenticator`` over SSHA512 and
  over BLF-CRYPT users, ``auth_failure_delay=0``, interleaved samples, medians
  compared with a generous bound (SEC-05).
* Passwords never in logs, with ``debug=True`` (the wire transcript) at DEBUG level.
* User names cannot escape the Maildir root; symlinks (message file, ``cur/``, the
  user directory) cannot make the server read outside.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
from pop3_support import memory_session, unstuff
from robust_support import MaildirFixture

from trio_pop3 import Limits, MailboxError
from trio_pop3._passwd import PasswdFileAuthenticator, hash_password
from trio_pop3.mailbox import (
    Authenticator,
    MailboxHandler,
    MaildirStore,
    MemoryAuthenticator,
    MemoryStore,
)

SECRET = "Sup3r-s3cret-pw"
NO_DELAY = Limits(auth_failure_delay=0, max_auth_failures=None, max_bad_commands=None)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- enumeration by reply --------------------------------------------------------------------

#: Each scenario: the lines a client sends (USER is substituted).
SCENARIOS: dict[str, list[str]] = {
    "USER/PASS": ["USER {user}", "PASS wrong-password"],
    "APOP": ["APOP {user} " + "0" * 32],
    "AUTH PLAIN IR": ["AUTH PLAIN {plain}"],
    "AUTH PLAIN continuation": ["AUTH PLAIN", "{plain}"],
    "AUTH LOGIN": ["AUTH LOGIN", "{user64}", b64(b"wrong-password")],
    "AUTH LOGIN IR": ["AUTH LOGIN {user64}", b64(b"wrong-password")],
}


async def transcript(user: str, lines: Sequence[str]) -> list[str]:
    store = MemoryStore({"alice": [b"Subject: x\n\ny\n"]})
    auth = MemoryAuthenticator({"alice": SECRET})
    factory = functools.partial(MailboxHandler, store, auth, apop=True)
    replies = []
    async with memory_session(factory, limits=NO_DELAY) as s:
        for line in lines:
            line = line.format(
                user=user,
                plain=b64(f"\0{user}\0wrong-password".encode()),
                user64=b64(user.encode()),
            )
            replies.append(await s.client.command(line))
        replies.append(await s.client.command("STAT"))  # still in AUTHORIZATION
    return replies


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_unknown_user_and_wrong_password_are_indistinguishable(scenario: str) -> None:
    # RFC 1939 §13 (USER-03), RFC 3206 (CODE-06): the same bytes for both.
    unknown = await transcript("ghost", SCENARIOS[scenario])
    known = await transcript("alice", SCENARIOS[scenario])
    assert unknown == known
    assert known[-2].startswith("-ERR [AUTH]"), known


# -- enumeration by timing ----------------------------------------------------------------------


async def time_failures(
    auth: Authenticator, known: str, samples: int
) -> tuple[list[float], list[float]]:
    """Interleaved PASS round trips: (unknown user, wrong password of ``known``)."""
    store = MemoryStore()
    factory = functools.partial(MailboxHandler, store, auth)
    unknown_times: list[float] = []
    known_times: list[float] = []
    async with memory_session(factory, limits=NO_DELAY) as s:

        async def attempt(user: str) -> float:
            assert (await s.client.command(f"USER {user}")).startswith("+OK")
            start = time.perf_counter()
            reply = await s.client.command("PASS not-the-password")
            elapsed = time.perf_counter() - start
            assert reply.startswith("-ERR [AUTH]"), reply
            return elapsed

        for user in ("ghost", known):  # warm-up
            await attempt(user)
        for i in range(samples):
            # Alternate which goes first, so drift in load hits both alike.
            order = ("ghost", known) if i % 2 == 0 else (known, "ghost")
            for user in order:
                (unknown_times if user == "ghost" else known_times).append(await attempt(user))
    return unknown_times, known_times


def indistinguishable(unknown: list[float], known: list[float]) -> tuple[bool, str]:
    """Medians within a factor 1.5, or within 0.5 ms of each other (busy 2-core box)."""
    mu, mk = statistics.median(unknown), statistics.median(known)
    ratio = max(mu, mk) / max(min(mu, mk), 1e-9)
    figures = f"median unknown {mu * 1e3:.3f} ms, wrong password {mk * 1e3:.3f} ms, x{ratio:.2f}"
    print(figures)
    return ratio <= 1.5 or abs(mu - mk) <= 0.0005, figures


def passwd_file(tmp_path: Path, entries: dict[str, str]) -> PasswdFileAuthenticator:
    path = tmp_path / "passwd"
    path.write_text("".join(f"{user}:{stored}\n" for user, stored in entries.items()))
    return PasswdFileAuthenticator(path)


async def test_timing_ssha512(tmp_path: Path) -> None:
    # SEC-05: an unknown user costs the same hash as a real one.
    auth = passwd_file(tmp_path, {u: hash_password(SECRET, "SSHA512") for u in "abc"})
    ok, figures = indistinguishable(*await time_failures(auth, "a", 150))
    assert ok, figures


async def test_timing_blf_crypt(tmp_path: Path) -> None:
    # bcrypt cost 6 keeps the test short; the dummy has the users' cost either way.
    auth = passwd_file(tmp_path, {u: hash_password(SECRET, "BLF-CRYPT", rounds=6) for u in "abc"})
    ok, figures = indistinguishable(*await time_failures(auth, "a", 25))
    assert ok, figures


async def test_timing_minority_scheme_user(tmp_path: Path) -> None:
    entries = {u: hash_password(SECRET, "SSHA512") for u in "abc"}
    entries["mig"] = hash_password(SECRET, "BLF-CRYPT", rounds=6)
    auth = passwd_file(tmp_path, entries)
    ok, figures = indistinguishable(*await time_failures(auth, "mig", 25))
    assert ok, figures


# -- secrets never in logs ---------------------------------------------------------------------


async def test_passwords_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = MemoryStore({"alice": [b"Subject: x\n\ny\n"]})
    auth = MemoryAuthenticator({"alice": SECRET})
    factory = functools.partial(MailboxHandler, store, auth, apop=True)
    wrong = "Wr0ng-guess-pw"
    secrets = [SECRET, wrong]
    plain_ok = b64(f"\0alice\0{SECRET}".encode())
    plain_bad = b64(f"\0alice\0{wrong}".encode())
    login_pw = b64(SECRET.encode())
    secrets += [plain_ok, plain_bad, login_pw, b64(wrong.encode())]
    conversations: list[list[str]] = [
        ["USER alice", f"PASS {wrong}", "USER alice", f"pass {SECRET}", "QUIT"],
        ["USER alice", f" PaSs\t{SECRET}", "QUIT"],
        ["USER alice", f"PASS  {SECRET} ", "QUIT"],
        [f"AUTH PLAIN {plain_bad}", f"auth plain {plain_ok}", "QUIT"],
        ["AUTH PLAIN", plain_bad, "AUTH PLAIN", plain_ok, "QUIT"],
        ["AUTH LOGIN", b64(b"alice"), b64(wrong.encode()), "QUIT"],
        [f"AUTH LOGIN {b64(b'alice')}", login_pw, "QUIT"],
        ["AUTH PLAIN", "*", f"PASS {SECRET}", "QUIT"],  # cancelled, then out of order
    ]
    for lines in conversations:
        async with memory_session(factory, limits=NO_DELAY, debug=True) as s:
            for line in lines:
                await s.client.command(line)
    # APOP: the digest is derived from the secret; it must not be logged either.
    async with memory_session(factory, limits=NO_DELAY, debug=True, read_greeting=False) as s:
        greeting = await s.client.reply()
        stamp = greeting[greeting.index("<") :]
        digest = hashlib.md5((stamp + SECRET).encode()).hexdigest()
        secrets.append(digest)
        assert (await s.client.command(f"APOP alice {digest}")).startswith("+OK")
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "C: b'USER alice'" in text  # the transcript was on
    for secret in secrets:
        assert secret not in text, secret


# -- user names and symlinks --------------------------------------------------------------------

BAD_NAMES = ["../x", "..", ".", "/etc", "a/b", "a\x00b", "a\\b", "", ".hidden", "x" * 300]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_user_name_cannot_escape_the_root(tmp_path: Path, name: str) -> None:
    root = tmp_path / "mail"
    root.mkdir()
    before = sorted(os.listdir(tmp_path))
    store = MaildirStore(root)
    with pytest.raises(MailboxError) as info:
        await store.open(name)
    assert str(info.value.code) == "SYS/PERM"
    assert sorted(os.listdir(tmp_path)) == before
    assert os.listdir(root) == []


class AnyUser(Authenticator):
    """Accepts every user name with the password 'pw' (a misconfigured backend)."""

    async def check_password(self, user: str, password: str) -> bool:
        return password == "pw"


@pytest.mark.parametrize("name", ["../x", "..", "/etc", "a/b", "a\\b", ".hidden", "../../tmp"])
async def test_user_name_over_the_wire(tmp_path: Path, name: str) -> None:
    root = tmp_path / "mail"
    root.mkdir()
    store = MaildirStore(root)
    factory = functools.partial(MailboxHandler, store, AnyUser())
    async with memory_session(factory, limits=NO_DELAY) as s:
        assert (await s.client.command(f"USER {name}")).startswith("+OK")
        assert (await s.client.command("PASS pw")).startswith("-ERR [SYS/PERM]")
        plain = b64(f"\0{name}\0pw".encode())
        assert (await s.client.command(f"AUTH PLAIN {plain}")).startswith("-ERR [SYS/PERM]")
    assert sorted(os.listdir(tmp_path)) == ["mail"]
    assert os.listdir(root) == []


async def read_all(store: MaildirStore, user: str = "alice") -> tuple[str, list[bytes]]:
    """Log in as ``user``; return the login reply and every message RETR returns."""
    factory = functools.partial(MailboxHandler, store, AnyUser())
    bodies: list[bytes] = []
    async with memory_session(factory, limits=NO_DELAY) as s:
        await s.client.command(f"USER {user}")
        reply = await s.client.command("PASS pw")
        if reply.startswith("+OK"):
            _, lines = await s.client.multi("LIST")
            for n in range(1, len(lines) + 3):
                first, data = await s.client.multi(f"RETR {n}")
                if first.startswith("+OK"):
                    bodies.append(unstuff(data))
    return reply, bodies


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A secret file and a fake Maildir outside the mail root."""
    out = tmp_path / "outside"
    for sub in ("cur", "new", "tmp"):
        (out / sub).mkdir(parents=True)
    (out / "secret.txt").write_bytes(b"root:TOPSECRET:0:0\n")
    (out / "cur" / "1.M1P1.evil:2,").write_bytes(b"Subject: TOPSECRET\n\nx\n")
    return out


def leaked(bodies: list[bytes]) -> bool:
    return any(b"TOPSECRET" in body for body in bodies)


async def test_symlinked_message_file_is_not_served(tmp_path: Path, outside: Path) -> None:
    fixture = MaildirFixture(str(tmp_path / "mail"), "alice")
    fixture.add(b"Subject: real\n\nhello\n")
    os.symlink(outside / "secret.txt", os.path.join(fixture.path, "cur", "2.M2P2.link:2,"))
    os.symlink("/etc/passwd", os.path.join(fixture.path, "new", "3.M3P3.passwd"))
    os.mkfifo(os.path.join(fixture.path, "cur", "4.M4P4.fifo:2,"))  # must not hang
    with trio.fail_after(10):
        reply, bodies = await read_all(MaildirStore(tmp_path / "mail"))
    assert reply.startswith("+OK Logged in, 1 message"), reply
    assert bodies == [b"Subject: real\r\n\r\nhello\r\n"]


async def test_message_swapped_for_symlink_after_list(tmp_path: Path, outside: Path) -> None:
    # TOCTOU: listed as a regular file, replaced by a symlink before RETR (O_NOFOLLOW).
    fixture = MaildirFixture(str(tmp_path / "mail"), "alice")
    uid = fixture.add(b"Subject: real\n\nhello\n")
    store = MaildirStore(tmp_path / "mail")
    factory = functools.partial(MailboxHandler, store, AnyUser())
    async with memory_session(factory, limits=NO_DELAY) as s:
        await s.client.login("alice", "pw")
        path = fixture.files()[uid]
        os.unlink(path)
        os.symlink(outside / "secret.txt", path)
        first, lines = await s.client.multi("RETR 1")
        assert first.startswith("-ERR"), first
        first, lines = await s.client.multi("TOP 1 5")
        assert first.startswith("-ERR"), first
        assert not leaked(lines)


async def test_cur_symlinked_outside_the_root(tmp_path: Path, outside: Path) -> None:
    fixture = MaildirFixture(str(tmp_path / "mail"), "alice")
    shutil.rmtree(os.path.join(fixture.path, "cur"))
    os.symlink(outside / "cur", os.path.join(fixture.path, "cur"))
    reply, bodies = await read_all(MaildirStore(tmp_path / "mail"))
    assert reply.startswith("-ERR [SYS/PERM]"), reply
    assert not leaked(bodies)


async def test_user_dir_symlinked_outside_the_root(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "mail").mkdir()
    os.symlink(outside, tmp_path / "mail" / "alice")
    reply, bodies = await read_all(MaildirStore(tmp_path / "mail"))
    assert reply.startswith("-ERR [SYS/PERM]"), reply
    assert not leaked(bodies)


async def test_cur_symlinked_to_another_users_maildir(tmp_path: Path) -> None:
    root = str(tmp_path / "mail")
    alice = MaildirFixture(root, "alice")
    alice.add(b"Subject: alice\n\nmine\n")
    bob = MaildirFixture(root, "bob")
    bob.add(b"Subject: TOPSECRET of bob\n\nhis\n")
    shutil.rmtree(os.path.join(alice.path, "cur"))
    os.symlink(os.path.join(bob.path, "cur"), os.path.join(alice.path, "cur"))
    reply, bodies = await read_all(MaildirStore(root))
    assert not leaked(bodies), (reply, bodies)
