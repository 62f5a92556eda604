"""curl's POP3 client against the real ``trio-pop3 serve`` process.

What curl does (7.88), which these tests rely on:

* ``pop3://user:pass@host:port/`` sends LIST; ``/N`` sends RETR N and writes the
  message with CRLF line ends, dot-stuffing removed; it always ends with QUIT.
* ``-X CMD`` sends CMD instead and, like LIST and RETR, expects a multi-line reply: for
  a single-line command (DELE, NOOP, STAT) ``-I`` (no body) is required, otherwise curl
  waits for a "." line that never comes until the server's idle timeout.  With ``-I``
  only ``-v`` shows the reply.
* curl prefers SASL from CAPA (PLAIN here); ``--login-options AUTH=...`` picks the
  mechanism, ``AUTH=+APOP`` APOP; ``--sasl-ir`` sends PLAIN's initial response on the
  AUTH line.  A refused login exits 67 (CURLE_LOGIN_DENIED).
* curl never sends UTF8 (RFC 6856), so a message with a raw UTF-8 header reaches it as
  ``serve``'s default RFC 6857 surrogate (with ``--utf8-legacy refuse`` it would get
  ``-ERR [UTF8]`` and exit 8, weird server reply).
"""

from __future__ import annotations

import email
import email.policy
import re
import subprocess
from pathlib import Path

import pytest
from corpus import CORPUS, expected_size, expected_top, expected_wire, full_corpus

from .conftest import (
    HOST,
    Account,
    MailSetup,
    ServerFactory,
    ServerProcess,
    fresh_source,
    require_tool,
)

pytestmark = pytest.mark.interop

CURL_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def curl() -> str:
    return require_tool("curl")


def url(server: ServerProcess, account: Account, path: str = "/", password: str = "") -> str:
    return f"pop3://{account.user}:{password or account.password}@{HOST}:{server.port}{path}"


def run_curl(curl: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run curl without any curlrc or proxy, bounded in time, capturing its output."""
    return subprocess.run(
        [curl, "-q", "--silent", "--show-error", "--noproxy", "*", "--max-time", "30", *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=CURL_TIMEOUT,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> bytes:
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def sent(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    """The command lines curl sent (from ``-v``)."""
    lines = result.stderr.decode(errors="replace").splitlines()
    return [line[2:] for line in lines if line.startswith("> ")]


def received(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    """The reply lines curl received (from ``-v``)."""
    lines = result.stderr.decode(errors="replace").splitlines()
    return [line[2:] for line in lines if line.startswith("< ")]


@pytest.mark.rfc("1939", "5")
def test_list(curl: str, server: ServerProcess, corpus_account: Account) -> None:
    out = ok(run_curl(curl, url(server, corpus_account)))
    sizes = [len(expected_wire(m)) for m in corpus_account.messages.values()]
    # The UTF-8 header message is listed with the size of the surrogate RETR sends
    # curl, which never sends UTF8 (RFC 6856 §2.1).
    number = list(corpus_account.messages.values()).index(CORPUS["utf-8"]) + 1
    surrogate = ok(run_curl(curl, url(server, corpus_account, f"/{number}")))
    assert len(surrogate) > sizes[number - 1]
    sizes[number - 1] = len(surrogate)
    # RFC 1939 §5 (LIST-01, SIZE-01): the exact size of what RETR sends.
    assert out == b"".join(f"{n} {size}\r\n".encode() for n, size in enumerate(sizes, 1))


@pytest.mark.rfc("1939", "5")
@pytest.mark.parametrize("name", [name for name in [*CORPUS, "big"] if name != "utf-8"])
def test_retr_byte_for_byte(
    curl: str,
    server: ServerProcess,
    corpus_account: Account,
    corpus_numbers: dict[str, int],
    name: str,
) -> None:
    # RFC 1939 §3, §5 (RETR-01, DOT-02, DOT-05): curl removes the stuffing.
    out = ok(run_curl(curl, url(server, corpus_account, f"/{corpus_numbers[name]}")))
    assert out == expected_wire(full_corpus()[name])


@pytest.mark.rfc("6856", "2.1")
def test_retr_utf8_header_reaches_curl_downgraded(
    curl: str, server: ServerProcess, corpus_account: Account, corpus_numbers: dict[str, int]
) -> None:
    # RFC 6856 §2.1 (UTF8-02): curl cannot send UTF8, so it gets the RFC 6857
    # surrogate: an ASCII header that reads as the original, the body as stored.
    out = ok(run_curl(curl, url(server, corpus_account, f"/{corpus_numbers['utf-8']}")))
    header, _, body = out.partition(b"\r\n\r\n")
    assert header.isascii()
    stored = expected_wire(CORPUS["utf-8"])
    assert body == stored.partition(b"\r\n\r\n")[2]
    message = email.message_from_bytes(out, policy=email.policy.default)
    original = email.message_from_bytes(CORPUS["utf-8"], policy=email.policy.default)
    assert message["Subject"] == original["Subject"]


@pytest.mark.rfc("1939", "7")
def test_uidl(curl: str, server: ServerProcess, corpus_account: Account) -> None:
    out = ok(run_curl(curl, "-X", "UIDL", url(server, corpus_account)))
    # RFC 1939 §7 (UIDL-01): the Maildir base names, in delivery order.
    expected = [f"{n} {uid}\r\n".encode() for n, uid in enumerate(corpus_account.messages, 1)]
    assert out == b"".join(expected)


@pytest.mark.rfc("1939", "7")
@pytest.mark.parametrize("name", ["dot-lines", "first-line-dot", "crlf-stored", "headers-only"])
def test_top_0(
    curl: str,
    server: ServerProcess,
    corpus_account: Account,
    corpus_numbers: dict[str, int],
    name: str,
) -> None:
    # RFC 1939 §7 (TOP-01, TOP-02): the header and the blank line.
    command = f"TOP {corpus_numbers[name]} 0"
    out = ok(run_curl(curl, "-X", command, url(server, corpus_account)))
    assert out == expected_top(CORPUS[name], 0)


@pytest.mark.rfc("1939", "6")
def test_dele_then_quit_removes_the_message(
    curl: str, server: ServerProcess, account: Account
) -> None:
    before = account.files()
    first_uid = next(iter(account.messages))
    result = run_curl(curl, "-v", "-I", "-X", "DELE 1", url(server, account))
    ok(result)
    assert "DELE 1" in sent(result)
    # curl ends with QUIT: RFC 1939 §6 (STATE-07) removes exactly message 1.
    assert {name.split("/", 1)[1] for name in before - account.files()} == {first_uid}
    assert len(account.files()) == len(before) - 1
    out = ok(run_curl(curl, "-X", "UIDL", url(server, account)))
    assert first_uid.encode() not in out


@pytest.mark.rfc("1939", "5")
def test_stat_and_noop(curl: str, server: ServerProcess, account: Account) -> None:
    sizes = [expected_size(m) for m in account.messages.values()]
    stat = run_curl(curl, "-v", "-I", "-X", "STAT", url(server, account))
    assert ok(stat) == b""
    # RFC 1939 §5 (STAT-01): "+OK nn mm", nothing after.
    assert f"+OK {len(sizes)} {sum(sizes)}" in received(stat)
    noop = run_curl(curl, "-v", "--head", "--request", "NOOP", url(server, account))
    assert ok(noop) == b""
    assert "NOOP" in sent(noop)
    assert received(noop)[-1].startswith("+OK")


@pytest.mark.rfc("5034", "4")
@pytest.mark.parametrize(
    ("options", "expected_command"),
    [
        (["--login-options", "AUTH=PLAIN"], "AUTH PLAIN"),
        (["--login-options", "AUTH=LOGIN"], "AUTH LOGIN"),
        (["--sasl-ir"], "AUTH PLAIN "),
        (["--login-options", "AUTH=+APOP"], "APOP "),
    ],
    ids=["plain", "login", "sasl-ir", "apop"],
)
def test_login_methods(
    curl: str,
    server: ServerProcess,
    mail_setup: MailSetup,
    options: list[str],
    expected_command: str,
) -> None:
    # A {PLAIN} user, so APOP works too (the module's server runs with --apop).
    account = mail_setup.new_account(list(CORPUS.values())[:3], plain=True)
    result = run_curl(curl, "-v", *options, url(server, account))
    out = ok(result)
    commands = sent(result)
    login = [c for c in commands if c.startswith(("AUTH", "APOP", "USER"))]
    assert login, commands
    assert login[0].startswith(expected_command)
    if expected_command == "AUTH PLAIN":
        assert login[0] == "AUTH PLAIN"  # RFC 5034 §4 (SASL-07): empty challenge first
    sizes = [len(expected_wire(m)) for m in account.messages.values()]
    assert out == b"".join(f"{n} {size}\r\n".encode() for n, size in enumerate(sizes, 1))


@pytest.mark.rfc("1939", "7")
def test_wrong_password_exits_67(curl: str, server: ServerProcess, account: Account) -> None:
    # A fresh source address: the server's failed-login delay is per address.
    source = fresh_source()
    result = run_curl(
        curl, "-v", "--interface", source, url(server, account, password="not-the-password")
    )
    assert result.returncode == 67, result.stderr  # CURLE_LOGIN_DENIED
    assert result.stdout == b""
    # RFC 3206 (CODE-06): curl's AUTH PLAIN fails with [AUTH]; no retry with USER/PASS.
    assert [line for line in received(result) if line.startswith("-ERR")] == [
        "-ERR [AUTH] Authentication failed."
    ]
    # Logged for fail2ban.  (The user name of a SASL failure is logged as "-": a bug,
    # see test_cli.py::test_failed_sasl_login_logs_the_user.)
    assert re.search(
        rf"authentication failure: user=\S+ rip={re.escape(source)}$", server.stderr, re.M
    )


def test_big_message_to_file(
    curl: str,
    server: ServerProcess,
    corpus_account: Account,
    corpus_numbers: dict[str, int],
    tmp_path: Path,
) -> None:
    # The 5 MiB message through curl's --output, compared byte for byte.
    target = tmp_path / "big.eml"
    ok(
        run_curl(
            curl, "--output", str(target), url(server, corpus_account, f"/{corpus_numbers['big']}")
        )
    )
    assert target.read_bytes() == expected_wire(full_corpus()["big"])


def test_behind_a_proxy_protocol_balancer(
    curl: str, server_factory: ServerFactory, mail_setup: MailSetup
) -> None:
    # curl --haproxy-protocol sends a PROXY v1 header, as HAProxy does, before the
    # POP3 session; serve --proxy-protocol takes the client's address from it.
    account = mail_setup.new_account(list(CORPUS.values())[:2])
    proxied = server_factory(mail_setup, "--proxy-protocol", "127.0.0.0/8", "--debug")
    result = run_curl(curl, "--haproxy-protocol", url(proxied, account))
    sizes = [len(expected_wire(m)) for m in account.messages.values()]
    assert ok(result) == b"".join(f"{n} {size}\r\n".encode() for n, size in enumerate(sizes, 1))
    assert re.search(r"proxied for 127\.0\.0\.1:\d+", proxied.stderr), proxied.stderr
    assert f"login: user={account.user} rip=127.0.0.1" in proxied.stderr
