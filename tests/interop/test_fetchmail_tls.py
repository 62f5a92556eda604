"""fetchmail over STLS and over implicit TLS (POP3S) against ``trio-pop3 serve``.

The server gets a trustme certificate; fetchmail checks it against the test CA
(``--sslcertck --sslcertfile``).  Plaintext login is refused without TLS (the CLI's
default once TLS is configured), so a successful fetch proves the session was
encrypted before the password went out.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from corpus import CORPUS

from .conftest import (
    HOST,
    MailSetup,
    ServerFactory,
    check_status as check,
    free_port,
    make_certificate,
    require_tool,
    run_client,
)
from .test_fetchmail import FETCHMAIL_TIMEOUT, MDA_SCRIPT, assert_same_messages

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(CA file, certificate chain, private key) for 127.0.0.1 and localhost."""
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_servers(
    server_factory: ServerFactory,
    mail_setup: MailSetup,
    certificate: tuple[Path, Path, Path],
) -> tuple[int, int]:
    """A server with STLS on one port and implicit TLS on another: (port, pop3s_port)."""
    _, chain, key = certificate
    pop3s_port = free_port()
    server = server_factory(
        mail_setup,
        "--tls-cert",
        str(chain),
        "--tls-key",
        str(key),
        "--pop3s-port",
        str(pop3s_port),
    )
    return server.port, pop3s_port


def run_fetchmail(
    tmp_path: Path,
    user: str,
    password: str,
    port: int,
    cafile: Path,
    *tls_options: str,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    home, out = tmp_path / "home", tmp_path / "out"
    home.mkdir(mode=0o700)
    out.mkdir()
    rcfile = tmp_path / "fetchmailrc"
    rcfile.write_text(
        f'poll {HOST} protocol POP3 port {port}\n    user "{user}" password "{password}"\n'
    )
    rcfile.chmod(0o600)
    mda_script = tmp_path / "mda.py"
    mda_script.write_text(MDA_SCRIPT)
    mda = shlex.join([sys.executable, "-I", "-S", str(mda_script), str(out)])
    command = [
        require_tool("fetchmail"),
        "-f", str(rcfile),
        "--nosyslog", "--norewrite", "--invisible",
        "--bad-header", "accept",
        "-p", "POP3", "--port", str(port), "--user", user,
        "--timeout", "20",
        # fetchmail matches DNS names only, not IP addresses: name the certificate's.
        "--sslcertck", "--sslcertfile", str(cafile), "--sslcommonname", "localhost",
        "--mda", mda, "-v", "--nokeep", "--all",
        *tls_options,
        HOST,
    ]  # fmt: skip
    env = dict(os.environ, FETCHMAILHOME=str(home), HOME=str(home))
    result = run_client(command, timeout=FETCHMAIL_TIMEOUT, env=env)
    return result, out


@pytest.mark.rfc("2595", "4")
def test_fetchmail_over_stls(
    tls_servers: tuple[int, int],
    mail_setup: MailSetup,
    certificate: tuple[Path, Path, Path],
    tmp_path: Path,
) -> None:
    port, _ = tls_servers
    messages = [CORPUS["dot-lines"], CORPUS["latin-1"], CORPUS["crlf-stored"]]
    account = mail_setup.new_account(messages)
    result, out = run_fetchmail(
        tmp_path, account.user, account.password, port, certificate[0], "--sslproto", "auto"
    )
    log = check(result, 0)
    assert "POP3> STLS" in log
    assert_same_messages([p.read_bytes() for p in sorted(out.iterdir())], messages)
    assert account.files() == set()


@pytest.mark.rfc("8314", "3.1")
def test_fetchmail_over_pop3s(
    tls_servers: tuple[int, int],
    mail_setup: MailSetup,
    certificate: tuple[Path, Path, Path],
    tmp_path: Path,
) -> None:
    _, pop3s_port = tls_servers
    messages = [CORPUS["first-line-dot"], CORPUS["no-final-newline"], CORPUS["998-octet-line"]]
    account = mail_setup.new_account(messages)
    result, out = run_fetchmail(
        tmp_path, account.user, account.password, pop3s_port, certificate[0], "--ssl"
    )
    log = check(result, 0)
    assert "POP3> STLS" not in log
    assert_same_messages([p.read_bytes() for p in sorted(out.iterdir())], messages)
    assert account.files() == set()
