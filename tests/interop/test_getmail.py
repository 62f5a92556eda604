"""getmail6 (a retrieval agent written in Python, on poplib) against ``trio-pop3 serve``.

Each run gets a private rcfile and getmail directory (its ``oldmail`` file of fetched
UIDLs) and delivers through the same MDA script as the fetchmail tests, one file per
message.  What getmail 6 does, which these tests rely on or work around:

* It puts ``Return-Path: <...>`` first in every message it delivers (with
  ``delivered_to`` and ``received`` off it adds nothing else), and hands the MDA LF
  line ends with dot-stuffing removed.
* It refuses to run an MDA as root unless ``allow_root_commands``.
* Without ``read_all`` it fetches only messages whose UIDL is not in ``oldmail``.
* Exit status 0 both with and without new mail.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from corpus import CORPUS

from .conftest import (
    HOST,
    Account,
    MailSetup,
    ServerFactory,
    ServerProcess,
    check_status,
    free_port,
    make_certificate,
    require_tool,
    run_client,
    sorted_with_lf,
)
from .test_fetchmail import MDA_SCRIPT

pytestmark = pytest.mark.interop

GETMAIL_TIMEOUT = 60.0

#: Messages that getmail's own parsing leaves as they are.  It re-serialises each
#: message with Python's email package, which puts a blank line before a first line
#: that is not a header and after a header with no body, so those two corpus
#: messages are left to the other clients.
MESSAGES = [
    CORPUS[name]
    for name in (
        "dot-lines",
        "latin-1",
        "998-octet-line",
        "crlf-stored",
        "no-final-newline",
        "nul-bytes",
    )
]


@dataclass
class Getmail:
    """One account's getmail set-up: rcfile, getmail directory, MDA output directory."""

    directory: Path
    account: Account
    port: int
    retriever: str = "SimplePOP3Retriever"
    extra: str = ""

    def __post_init__(self) -> None:
        self.out = self.directory / "out"
        self.out.mkdir(parents=True)
        mda = self.directory / "mda.py"
        mda.write_text(MDA_SCRIPT)
        self.rcfile = self.directory / "getmailrc"
        self.rcfile.write_text(
            "[retriever]\n"
            f"type = {self.retriever}\n"
            f"server = {HOST}\n"
            f"port = {self.port}\n"
            f"username = {self.account.user}\n"
            f"password = {self.account.password}\n"
            f"{self.extra}\n"
            "[destination]\n"
            "type = MDA_external\n"
            f"path = {sys.executable}\n"
            f'arguments = ("-I", "-S", "{mda}", "{self.out}")\n'
            "allow_root_commands = true\n"
            "\n[options]\n"
            "verbose = 2\n"
            "delivered_to = false\n"
            "received = false\n"
        )
        self.rcfile.chmod(0o600)

    def run(self, *, delete: bool, read_all: bool = True) -> str:
        command = [
            require_tool("getmail"),
            "--rcfile", str(self.rcfile),
            "--getmaildir", str(self.directory),
            "--delete" if delete else "--dont-delete",
            "--all" if read_all else "--new",
        ]  # fmt: skip
        log = check_status(run_client(command, timeout=GETMAIL_TIMEOUT))
        assert "error" not in log.lower(), log
        return log

    def received(self) -> list[bytes]:
        """The delivered messages without getmail's Return-Path line, sorted."""
        messages = []
        for path in sorted(self.out.iterdir()):
            data = path.read_bytes()
            assert re.match(rb"Return-Path: <[^\n]*>\n", data), data[:80]
            messages.append(data.split(b"\n", 1)[1])
        return sorted(messages)


@pytest.mark.rfc("1939", "6")
def test_fetch_and_delete(server: ServerProcess, mail_setup: MailSetup, tmp_path: Path) -> None:
    account = mail_setup.new_account(MESSAGES)
    getmail = Getmail(tmp_path, account, server.port)
    log = getmail.run(delete=True)
    assert f"{len(MESSAGES)} messages" in log
    assert getmail.received() == sorted_with_lf(MESSAGES)
    assert account.files() == set()  # deleted, and removed at QUIT


@pytest.mark.rfc("1939", "7")
def test_new_mail_only(server: ServerProcess, mail_setup: MailSetup, tmp_path: Path) -> None:
    account = mail_setup.new_account(MESSAGES[:2])
    getmail = Getmail(tmp_path, account, server.port)
    getmail.run(delete=False, read_all=False)
    assert getmail.received() == sorted_with_lf(MESSAGES[:2])
    # UIDL-03: the ids are the same next session, so nothing is fetched again...
    getmail.run(delete=False, read_all=False)
    assert len(getmail.received()) == 2
    # ...until a message arrives.
    account.deliver(MESSAGES[2])
    getmail.run(delete=False, read_all=False)
    assert getmail.received() == sorted_with_lf(MESSAGES[:3])
    assert account.uids() == set(account.messages)  # nothing deleted


@pytest.mark.rfc("1939", "7")
def test_apop(server: ServerProcess, mail_setup: MailSetup, tmp_path: Path) -> None:
    account = mail_setup.new_account(MESSAGES[:1], plain=True)
    getmail = Getmail(tmp_path, account, server.port, extra="use_apop = true")
    getmail.run(delete=True)
    assert getmail.received() == sorted_with_lf(MESSAGES[:1])
    assert account.files() == set()


@pytest.mark.rfc("8314", "3.1")
def test_implicit_tls(
    server_factory: ServerFactory, mail_setup: MailSetup, tmp_path: Path
) -> None:
    cafile, chain, key = make_certificate(tmp_path)
    pop3s_port = free_port()
    server_factory(
        mail_setup, "--tls-cert", str(chain), "--tls-key", str(key), "--pop3s-port",
        str(pop3s_port),
    )  # fmt: skip
    account = mail_setup.new_account(MESSAGES)
    getmail = Getmail(
        tmp_path / "getmail",
        account,
        pop3s_port,
        retriever="SimplePOP3SSLRetriever",
        extra=f"ca_certs = {cafile}",
    )
    getmail.run(delete=True)
    assert getmail.received() == sorted_with_lf(MESSAGES)
    assert account.files() == set()
