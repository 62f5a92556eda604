"""mpop (a pipelining retrieval agent with GNU SASL and GnuTLS) against ``trio-pop3 serve``.

Each run gets a private configuration file (mode 0600, it holds the password), a
private UIDL file and a Maildir to deliver into.  What mpop 1.4 does, which these
tests rely on:

* It pipelines: after UIDL it sends every ``RETR`` (and ``DELE``) in one write and
  then reads the replies (RFC 2449 section 6.6), so these tests exercise the
  server's batched replies with a real client.
* It delivers into a Maildir with LF line ends and dot-stuffing removed, adding no
  header with ``received_header off``.
* It remembers the UIDLs it fetched (``uidls_file``) and, with ``keep on``, fetches
  only new mail next time.
* Its ``auth`` method is exactly the one configured: a server that does not offer it
  is an error, so each test proves that mechanism end to end.
* Exit status 0: success (new mail or none); otherwise an error.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
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
    check_status as check,
    free_port,
    make_certificate,
    require_tool,
    run_client,
    sorted_with_lf,
)

pytestmark = pytest.mark.interop

MPOP_TIMEOUT = 60.0


@dataclass
class Mpop:
    """One account's mpop set-up: configuration, UIDL file and the Maildir it fills."""

    directory: Path
    account: Account
    port: int
    settings: Sequence[str] = ()

    def __post_init__(self) -> None:
        self.out = self.directory / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (self.out / sub).mkdir(parents=True)
        self.config = self.directory / "mpoprc"
        lines = [
            "account test",
            f"host {HOST}",
            f"port {self.port}",
            f"user {self.account.user}",
            f"password {self.account.password}",
            f"delivery maildir {self.out}",
            f"uidls_file {self.directory / 'uidls'}",
            "received_header off",
            "timeout 20",
            *self.settings,
        ]
        self.config.write_text("\n".join(lines) + "\n")
        self.config.chmod(0o600)  # mpop refuses a configuration others can read

    def run(self, *options: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, HOME=str(self.directory))
        return run_client(
            [require_tool("mpop"), "-C", str(self.config), "--debug", *options, "test"],
            timeout=MPOP_TIMEOUT,
            env=env,
        )

    def received(self) -> list[bytes]:
        """The delivered messages, sorted (Maildir names carry no order)."""
        return sorted(path.read_bytes() for path in (self.out / "new").iterdir())


#: Corpus messages that reach mpop unchanged: the UTF-8 one would arrive as the RFC
#: 6857 surrogate (mpop never sends UTF8), checked by the fetchmail and poplib tests.
MESSAGES = [message for name, message in CORPUS.items() if name != "utf-8"]


@pytest.mark.rfc("2449", "6.6")
@pytest.mark.rfc("1939", "6")
def test_pipelined_fetch_and_delete(
    server: ServerProcess, mail_setup: MailSetup, tmp_path: Path
) -> None:
    account = mail_setup.new_account(MESSAGES)
    mpop = Mpop(tmp_path, account, server.port, ["tls off", "auth user", "keep off"])
    log = check(mpop.run())
    assert mpop.received() == sorted_with_lf(MESSAGES)
    # Every RETR went out before the first message came back: the pipelined batch.
    first_retr = log.index("--> RETR 1\n")
    first_reply = log.index("<-- +OK", first_retr)
    assert f"--> RETR {len(MESSAGES)}\n" in log[first_retr:first_reply]
    assert log.count("--> DELE") == len(MESSAGES)
    # STATE-07 (RFC 1939 section 6): what mpop deleted is gone after its QUIT.
    assert account.files() == set()


@pytest.mark.rfc("1939", "7")
def test_keep_fetches_only_new_mail(
    server: ServerProcess, mail_setup: MailSetup, tmp_path: Path
) -> None:
    account = mail_setup.new_account(MESSAGES)
    mpop = Mpop(tmp_path, account, server.port, ["tls off", "auth user", "keep on"])
    check(mpop.run())
    assert mpop.received() == sorted_with_lf(MESSAGES)
    # UIDL-03: the same ids next session, so nothing is fetched again.
    again = check(mpop.run())
    assert "--> RETR" not in again
    late = b"Subject: late arrival\n\nonly this one is new\n"
    account.deliver(late)
    third = check(mpop.run())
    assert third.count("--> RETR") == 1
    assert mpop.received() == sorted_with_lf([*MESSAGES, late])
    # Nothing was deleted; what was retrieved is flagged seen.
    assert account.uids() == set(account.messages)


@pytest.mark.rfc("1939", "7")
def test_apop(server: ServerProcess, mail_setup: MailSetup, tmp_path: Path) -> None:
    account = mail_setup.new_account([CORPUS["dot-lines"]], plain=True)
    mpop = Mpop(tmp_path, account, server.port, ["tls off", "auth apop", "keep off"])
    log = check(mpop.run())
    assert "--> APOP" in log
    assert mpop.received() == sorted_with_lf([CORPUS["dot-lines"]])


@pytest.mark.rfc("1939", "7")
def test_wrong_password_fails_and_keeps_the_mail(
    server: ServerProcess, mail_setup: MailSetup, tmp_path: Path
) -> None:
    account = mail_setup.new_account([CORPUS["dot-lines"]])
    wrong = Account(account.user, "not the password", account.maildir)
    mpop = Mpop(tmp_path, wrong, server.port, ["tls off", "auth user", "keep off"])
    result = mpop.run()
    assert result.returncode != 0
    assert "-ERR [AUTH] Authentication failed." in result.stdout + result.stderr
    assert mpop.received() == []
    assert len(account.files()) == 1


# -- TLS ---------------------------------------------------------------------------------


@dataclass
class TLSServer:
    port: int
    pop3s_port: int
    cafile: Path


@pytest.fixture
def tls_server(server_factory: ServerFactory, mail_setup: MailSetup, tmp_path: Path) -> TLSServer:
    """``serve`` with STLS, implicit TLS, APOP and every SASL mechanism."""
    cafile, chain, key = make_certificate(tmp_path)
    pop3s_port = free_port()
    server = server_factory(
        mail_setup,
        "--tls-cert", str(chain),
        "--tls-key", str(key),
        "--pop3s-port", str(pop3s_port),
        "--apop",
        "--sasl", "PLAIN,LOGIN,SCRAM-SHA-256,CRAM-MD5",
    )  # fmt: skip
    return TLSServer(server.port, pop3s_port, cafile)


@pytest.mark.rfc("2595", "4")
@pytest.mark.rfc("5034", "4")
@pytest.mark.parametrize(
    ("method", "implicit", "plain"),
    [
        ("scram-sha-256", False, True),  # STLS, then SCRAM ({PLAIN} or SCRAM secrets)
        ("plain", True, False),  # implicit TLS (RFC 8314), AUTH PLAIN
        ("login", False, False),
        ("user", False, False),  # USER/PASS, allowed once TLS is on
        ("cram-md5", False, True),  # needs a {PLAIN} secret
        ("apop", False, True),  # the plaintext greeting's timestamp, used after STLS
    ],
)
def test_over_tls(
    tls_server: TLSServer,
    mail_setup: MailSetup,
    tmp_path: Path,
    method: str,
    implicit: bool,
    plain: bool,
) -> None:
    account = mail_setup.new_account([CORPUS["dot-lines"], CORPUS["crlf-stored"]], plain=plain)
    settings = [
        "tls on",
        f"tls_starttls {'off' if implicit else 'on'}",
        f"tls_trust_file {tls_server.cafile}",
        f"auth {method}",
        "keep off",
    ]
    port = tls_server.pop3s_port if implicit else tls_server.port
    mpop = Mpop(tmp_path / "mpop", account, port, settings)
    log = check(mpop.run())
    assert ("--> STLS" in log) != implicit
    assert mpop.received() == sorted_with_lf([CORPUS["dot-lines"], CORPUS["crlf-stored"]])
    assert account.files() == set()


@pytest.mark.rfc("2595", "2.3")
def test_plaintext_login_refused_without_tls(
    tls_server: TLSServer, mail_setup: MailSetup, tmp_path: Path
) -> None:
    account = mail_setup.new_account([CORPUS["dot-lines"]])
    mpop = Mpop(tmp_path, account, tls_server.port, ["tls off", "auth user", "keep off"])
    result = mpop.run()
    assert result.returncode != 0
    assert "Plaintext authentication disallowed" in result.stdout + result.stderr
    assert len(account.files()) == 1
