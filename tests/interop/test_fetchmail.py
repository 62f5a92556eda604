"""fetchmail against the real ``trio-pop3 serve`` process, delivering through an MDA.

Every run uses a private rcfile (mode 0600, it holds the password) and a private
``FETCHMAILHOME`` (its ``.fetchids`` and lock) in ``tmp_path``, and an MDA script that
writes each message it is given to its own file.  What fetchmail 6.4 does, which these
tests rely on or work around:

* It sends ``STLS`` even when CAPA does not offer it and gives up when that fails, so
  plain POP3 needs ``--sslproto ''``.
* It adds a ``Received:`` header unless ``--invisible``; with ``--norewrite`` it leaves
  the other headers alone.  So no fetchmail header has to be stripped here.
* It hands the MDA LF line ends (CRLF converted), dot-stuffing removed.
* It refuses a message whose first line is not a header ("incorrect header line
  found") unless ``--bad-header accept``; with it, the DOT-02 message arrives intact.
* It adds the blank line after a header-only message (no body separator).
* With ``--uidl --keep`` it downloads with ``TOP n 99999999`` instead of RETR.
* It tries ``LAST`` (gone since RFC 1725; ``-ERR`` here) and then uses UIDL.
* It never sends ``UTF8`` (RFC 6856), so a message with a raw UTF-8 header reaches it
  as ``serve``'s default RFC 6857 surrogate.  (Refused with ``-ERR [UTF8]``, fetchmail
  reports "couldn't fetch headers", leaves it on the server and goes on.)
* Exit status 0: mail delivered; 1: no new mail.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from corpus import CORPUS, expected_wire, full_corpus

from .conftest import (
    HOST,
    Account,
    MailSetup,
    ServerProcess,
    check_status as check,
    require_tool,
    run_client,
)

pytestmark = pytest.mark.interop

FETCHMAIL_TIMEOUT = 60.0

#: The MDA: writes its standard input to DIR/msg.NNNN, the first free number.
MDA_SCRIPT = """\
import itertools, os, sys
directory = sys.argv[1]
data = sys.stdin.buffer.read()
flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
for n in itertools.count(1):
    try:
        fd = os.open(os.path.join(directory, "msg.%04d" % n), flags, 0o600)
    except FileExistsError:
        continue
    break
with os.fdopen(fd, "wb") as f:
    f.write(data)
"""


@pytest.fixture(scope="module")
def fetchmail() -> str:
    return require_tool("fetchmail")


def as_delivered(message: bytes) -> bytes:
    """What fetchmail hands the MDA: LF line ends, a final LF, a header-only message
    completed with the blank line.
    """
    delivered = expected_wire(message).replace(b"\r\n", b"\n")
    if b"\n\n" not in delivered:
        delivered += b"\n"
    return delivered


@dataclass
class Fetchmail:
    """One user's fetchmail set-up: rcfile, FETCHMAILHOME, MDA and its output directory."""

    binary: str
    server: ServerProcess
    account: Account
    directory: Path

    def __post_init__(self) -> None:
        self.home = self.directory / "home"
        self.out = self.directory / "out"
        self.home.mkdir(parents=True)
        self.out.mkdir()
        self.home.chmod(0o700)
        self.rcfile = self.directory / "fetchmailrc"
        self.rcfile.write_text(
            f"poll {HOST} protocol POP3 port {self.server.port}\n"
            f'    user "{self.account.user}" password "{self.account.password}"\n'
        )
        self.rcfile.chmod(0o600)  # fetchmail refuses a readable rcfile with a password
        self.mda = self.directory / "mda.py"
        self.mda.write_text(MDA_SCRIPT)

    def run(self, *options: str) -> subprocess.CompletedProcess[str]:
        mda = shlex.join([sys.executable, "-I", "-S", str(self.mda), str(self.out)])
        command = [
            self.binary,
            "-f", str(self.rcfile),
            "--nosyslog",
            "--norewrite",
            "--invisible",  # no Received: header
            "--bad-header", "accept",  # the message whose first line starts with "."
            "--sslproto", "",  # plain POP3: do not try STLS
            "-p", "POP3",
            "--port", str(self.server.port),
            "--user", self.account.user,
            "--timeout", "20",
            "--mda", mda,
            "-v",
            *options,
            HOST,
        ]  # fmt: skip
        env = dict(os.environ, FETCHMAILHOME=str(self.home), HOME=str(self.home))
        env.pop("FETCHMAILUSER", None)
        return run_client(command, timeout=FETCHMAIL_TIMEOUT, env=env)

    def received(self) -> list[bytes]:
        """The messages the MDA got, in delivery order."""
        return [path.read_bytes() for path in sorted(self.out.iterdir())]


def fetches(log: str) -> int:
    """How many messages fetchmail downloaded: RETR, or ``TOP n 99999999`` with --keep."""
    return len(re.findall(r"POP3> (?:RETR \d+|TOP \d+ \d+)$", log, re.M))


def assert_same_messages(received: Sequence[bytes], sent: Sequence[bytes]) -> None:
    expected = [as_delivered(message) for message in sent]
    assert len(received) == len(expected)
    missing = [message[:80] for message in expected if message not in received]
    assert not missing
    assert sorted(received) == sorted(expected)


def without_utf8(messages: dict[str, bytes]) -> list[bytes]:
    return [message for name, message in messages.items() if name != "utf-8"]


@pytest.fixture
def setup_fetchmail(
    fetchmail: str, server: ServerProcess, mail_setup: MailSetup, tmp_path: Path
) -> Fetchmail:
    """A fresh user with the whole corpus (5 MiB message included) but the UTF-8 one."""
    account = mail_setup.new_account(without_utf8(full_corpus()))
    return Fetchmail(fetchmail, server, account, tmp_path / "fetchmail")


@pytest.mark.rfc("1939", "5")
def test_fetch_keep(setup_fetchmail: Fetchmail) -> None:
    fm = setup_fetchmail
    assert fm.account.files() == {f"new/{uid}" for uid in fm.account.messages}
    log = check(fm.run("--keep", "--all"), 0)
    assert_same_messages(fm.received(), list(fm.account.messages.values()))
    # --keep: no DELE, and a QUIT that removes nothing.  What fetchmail retrieved is
    # flagged seen, as Dovecot does; the base name, so the UIDL, stays the same.
    assert "POP3> DELE" not in log
    assert "POP3> QUIT" in log
    assert fm.account.files() == {f"cur/{uid}:2,S" for uid in fm.account.messages}


@pytest.mark.rfc("1939", "6")
def test_fetch_and_delete(setup_fetchmail: Fetchmail) -> None:
    fm = setup_fetchmail
    log = check(fm.run("--nokeep", "--all"), 0)
    assert_same_messages(fm.received(), list(fm.account.messages.values()))
    # RFC 1939 §6 (STATE-07): everything fetchmail deleted is gone after its QUIT.
    assert log.count("POP3> DELE") == len(fm.account.messages)
    assert fm.account.files() == set()
    again = fm.run("--nokeep", "--all")
    check(again, 1)  # no mail
    assert len(fm.received()) == len(fm.account.messages)


@pytest.mark.rfc("1939", "7")
def test_uidl_mode_fetches_only_new_mail(setup_fetchmail: Fetchmail) -> None:
    fm = setup_fetchmail
    check(fm.run("--uidl", "--keep"), 0)
    first = fm.received()
    assert_same_messages(first, list(fm.account.messages.values()))
    assert (fm.home / ".fetchids").is_file()
    # RFC 1939 §7 (UIDL-03, UIDL-06): same ids next session, so nothing is new.
    second = check(fm.run("--uidl", "--keep"), 1)
    assert "POP3> UIDL" in second
    assert fetches(second) == 0
    assert fm.received() == first
    # A message delivered now is the only one fetched by the next run.
    late = b"Subject: late arrival\n\nfetch me, and only me\n"
    fm.account.deliver(late)
    third = check(fm.run("--uidl", "--keep"), 0)
    assert fetches(third) == 1
    assert fm.received() == [*first, as_delivered(late)]


@pytest.mark.rfc("6856", "2.1")
def test_utf8_header_message_arrives_downgraded(
    fetchmail: str, server: ServerProcess, mail_setup: MailSetup, tmp_path: Path
) -> None:
    account = mail_setup.new_account([CORPUS["dot-lines"], CORPUS["utf-8"], CORPUS["latin-1"]])
    fm = Fetchmail(fetchmail, server, account, tmp_path / "fetchmail")
    check(fm.run("--nokeep", "--all"), 0)
    # RFC 6856 §2.1 (UTF8-02): fetchmail does not send UTF8, so it gets the RFC 6857
    # surrogate, and nothing is stuck on the server.
    first, surrogate, last = fm.received()
    assert_same_messages([first, last], [CORPUS["dot-lines"], CORPUS["latin-1"]])
    header, _, body = surrogate.partition(b"\n\n")
    assert header.isascii()
    assert body == CORPUS["utf-8"].partition(b"\n\n")[2]
    subject = email.message_from_bytes(surrogate, policy=email.policy.default)["Subject"]
    assert (
        subject
        == email.message_from_bytes(CORPUS["utf-8"], policy=email.policy.default)["Subject"]
    )
    assert account.files() == set()
