"""The ``trio-pop3`` command: serve Maildirs, hash passwords, run a demo."""

from __future__ import annotations

import argparse
import functools
import getpass
import ipaddress
import logging
import math
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, NoReturn, TypeVar

import trio

from ._config import DEFAULT_IDLE_TIMEOUT, Limits
from ._sasl import (
    DEFAULT_MECHANISMS,
    CramMD5Mechanism,
    LoginMechanism,
    PlainMechanism,
    SASLMechanism,
    ScramSHA256Mechanism,
)
from ._server import POP3Server
from ._version import __version__
from ._workers import parse_worker_fds, supervise, watch_supervisor, worker_listeners
from .mailbox import Authenticator, MailboxHandler, MailStore, ascii_lowercase

__all__ = ["main"]

logger = logging.getLogger("trio_pop3")

T = TypeVar("T", int, float)

#: Port of the demo server: an unprivileged stand-in for 110.
DEMO_PORT = 1110

#: Login timeout of the CLI server: Dovecot's 3 minutes before login; after login
#: the RFC 1939 minimum of 10 minutes applies.
CLI_LOGIN_TIMEOUT = 180.0

#: How many user names a start-up warning lists before it stops: enough to find them,
#: short enough for one log line.
_NAMES_SHOWN = 5


class UsageError(Exception):
    """A bad command line or configuration: one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _number(
    convert: Callable[[str], T], ok: Callable[[T], bool], what: str, bad: str
) -> Callable[[str], T]:
    """An argparse type: ``convert`` the text, then require ``ok`` (NaN never is)."""

    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{bad}: {text!r}")
        return value

    return parse


# Finite only: an infinite timeout would let one idle session hold its maildrop lock
# for ever (RFC 1939 section 3 wants an autologout timer), and no delay is endless.
_positive_float = _number(
    float, lambda v: 0 < v < math.inf, "not a number", "must be positive and finite"
)
_non_negative_float = _number(
    float, lambda v: 0 <= v < math.inf, "not a number", "must be >= 0 and finite"
)
_port = _number(int, lambda v: 0 <= v <= 65535, "not a port number", "port out of range")
_count = _number(int, lambda v: v >= 1, "not a number", "must be at least 1")


#: ``--workers`` above this many per usable CPU is warned about: one trio process
#: keeps one core busy (two workers on this 2-CPU machine ran both cores full in
#: every benchmark round), so more only add memory (about 30 MB each) and contention.
WORKERS_PER_CPU_WARNING = 2


def usable_cpus() -> int:
    """Return how many CPUs this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _workers(text: str) -> int:
    """``--workers``: a count, or ``auto`` for one worker per usable CPU."""
    return usable_cpus() if text == "auto" else _count(text)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``--trusted-network``, ``--proxy-protocol``: an address or a CIDR network."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP network: {text!r}") from None


#: What ``--sasl`` may name: the mechanisms that work with a passwd-file.
SASL_MECHANISMS: dict[str, Callable[[], SASLMechanism]] = {
    "PLAIN": PlainMechanism,
    "LOGIN": LoginMechanism,
    "SCRAM-SHA-256": ScramSHA256Mechanism,
    "CRAM-MD5": CramMD5Mechanism,
}

#: ``--sasl``'s default: MailboxHandler's own (Dovecot's usual ``auth_mechanisms =
#: plain login`` plus SCRAM-SHA-256, which never sends the password).
DEFAULT_SASL = ",".join(mechanism.name for mechanism in DEFAULT_MECHANISMS)


def _mechanisms(text: str) -> tuple[SASLMechanism, ...]:
    """``--sasl``: mechanism names separated by commas, or ``none``."""
    if text.strip().lower() == "none":
        return ()
    names = [name.strip().upper() for name in text.split(",")]
    unknown = [name for name in names if name not in SASL_MECHANISMS]
    if unknown or not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"not a list of distinct mechanisms from {', '.join(SASL_MECHANISMS)}: {text!r}"
        )
    return tuple(SASL_MECHANISMS[name]() for name in names)


def _expire(text: str) -> int | Literal["NEVER"] | None:
    """``--expire``: ``NEVER``, a number of days, or ``none`` (not announced)."""
    if text.upper() == "NEVER":
        return "NEVER"
    if text.lower() == "none":
        return None
    return _number(int, lambda v: v >= 0, "not NEVER, none or a number", "must be >= 0")(text)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``trio-pop3``."""
    parser = _Parser(prog="trio-pop3", description="A POP3 server for Maildirs, on trio.")
    parser.add_argument("--version", action="version", version=f"trio-pop3 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="serve Maildirs to users of a passwd-file")
    serve.add_argument("--host", default=None, help="address to listen on (default: all)")
    serve.add_argument("--port", type=_port, default=110, help="POP3 port (default: 110)")
    serve.add_argument(
        "--maildir-root", required=True, type=Path, help="ROOT/<user>/ is a Maildir"
    )
    serve.add_argument("--users", required=True, type=Path, help="Dovecot-style passwd-file")
    serve.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_IDLE_TIMEOUT,
        help="idle seconds after login (default: 600, RFC 1939's minimum)",
    )
    serve.add_argument(
        "--login-timeout",
        type=_positive_float,
        default=CLI_LOGIN_TIMEOUT,
        help="idle seconds before login (default: 180)",
    )
    serve.add_argument(
        "--max-connections",
        type=_count,
        default=Limits().max_connections,
        help="concurrent clients (default: %(default)s)",
    )
    serve.add_argument(
        "--max-connections-per-address",
        type=_count,
        default=Limits().max_connections_per_address,
        help="concurrent clients from one address (default: %(default)s)",
    )
    serve.add_argument(
        "--auth-failure-delay",
        type=_non_negative_float,
        default=Limits().auth_failure_delay,
        help="seconds before answering a failed login, doubled per further failure "
        "of the connection or address, up to 15 (default: %(default)s; 0 disables)",
    )
    serve.add_argument(
        "--trusted-network",
        action="append",
        type=_network,
        default=[],
        metavar="CIDR",
        help="client network exempt from the failed-login delay and the per-address "
        "connection limit, and counted as secure for plaintext logins, e.g. a webmail "
        "front end (repeatable; default: none)",
    )
    serve.add_argument(
        "--proxy-protocol",
        action="append",
        type=_network,
        default=[],
        metavar="CIDR",
        help="network of a load balancer that sends HAProxy's PROXY protocol header "
        "(v1 or v2) with the client's address; when given, every connection must come "
        "from such a network and start with the header (repeatable; default: none)",
    )
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate chain (enables STLS)")
    serve.add_argument("--tls-key", type=Path, help="PEM private key")
    serve.add_argument("--pop3s-port", type=_port, default=None, help="implicit-TLS port (995)")
    serve.add_argument(
        "--allow-insecure-auth",
        action="store_true",
        help="allow plaintext logins without TLS even when TLS is configured",
    )
    serve.add_argument(
        "--require-tls",
        action="store_true",
        help="refuse every login (SCRAM included) until TLS is active, except from "
        "--trusted-network clients (RFC 2595 section 2.2; Dovecot's ssl = required)",
    )
    serve.add_argument("--apop", action="store_true", help="offer APOP (needs {PLAIN} secrets)")
    serve.add_argument(
        "--sasl",
        type=_mechanisms,
        default=DEFAULT_SASL,
        metavar="MECH,...",
        help="SASL mechanisms AUTH offers, in order, from "
        f"{', '.join(SASL_MECHANISMS)} (CRAM-MD5 needs {{PLAIN}} secrets), or none "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--utf8-legacy",
        choices=("downgrade", "refuse", "send"),
        default="downgrade",
        help="messages with UTF-8 headers to clients that did not send UTF8: send "
        "them with the header recoded to ASCII (RFC 6857, default), refuse them with "
        "-ERR [UTF8], or send them as stored (as Dovecot does; against RFC 6856)",
    )
    serve.add_argument(
        "--expire",
        type=_expire,
        default="NEVER",
        metavar="NEVER|DAYS|none",
        help="announce in CAPA how long mail may stay on the server (RFC 2449 EXPIRE): "
        "NEVER (default: trio-pop3 deletes nothing itself), days, or none to not "
        "announce it",
    )
    serve.add_argument(
        "--no-maildrop-lock",
        dest="maildrop_lock",
        action="store_false",
        help="let sessions of the same user run concurrently (Dovecot's default; "
        "RFC 1939 asks for the lock, which stays on by default)",
    )
    serve.add_argument(
        "--keep-username-case",
        dest="fold_username",
        action="store_false",
        help="log users in under the name exactly as sent; by default A-Z in it are "
        "lowercased first (USER ALICE is alice), as Dovecot's %%Lu does",
    )
    serve.add_argument(
        "--replace-nuls",
        action="store_true",
        help="send NUL octets in messages as 0x80, for clients that stop at a NUL "
        "(Outlook; Dovecot's outlook-no-nuls workaround)",
    )
    serve.add_argument(
        "--enable-last",
        action="store_true",
        help="answer the obsolete LAST command (RFC 1460) for old clients: the highest "
        "message number retrieved, or seen before the session (Dovecot's "
        "pop3_enable_last)",
    )
    serve.add_argument(
        "--no-mark-seen",
        dest="mark_seen",
        action="store_false",
        help="leave retrieved messages as they are; by default QUIT gives the messages "
        "retrieved with RETR the Maildir S (seen) flag, as Dovecot does",
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N|auto",
        help="worker processes sharing the listening socket, one core each; auto: one "
        "per usable CPU (default: 1; limits and login throttling are per worker)",
    )
    serve.add_argument("--debug", action="store_true", help="log a wire transcript")
    # Internal: set by the --workers supervisor on the command line of each worker.
    serve.add_argument("--worker-fds", help=argparse.SUPPRESS)

    hashp = sub.add_parser("hash-password", help="print a passwd-file password hash")
    hashp.add_argument("--scheme", default="SSHA512", help="scheme (default: SSHA512)")
    hashp.add_argument("--password", help="the password (default: prompt, or read stdin)")

    demo = sub.add_parser("demo", help="serve sample mail on 127.0.0.1, no set-up needed")
    demo.add_argument(
        "--port",
        type=_port,
        default=None,
        help="port (default: 1110, or any free port if 1110 is taken)",
    )
    demo.add_argument("--debug", action="store_true", help="log a wire transcript")
    return parser


def _setup_logging(debug: bool) -> None:
    # Records need no thread or process data: skip gathering it for each one.  The
    # pid goes into the format instead (each worker process runs this itself).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # Nor where each call was made from (the format has no file or line): the logging
    # HOWTO's "Optimization" section names this switch.  It saved a stack walk per
    # record, about 1 % of a benchmark session's CPU.
    logging._srcfile = None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter(f"trio-pop3[{os.getpid()}]"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler])


class _LogFormatter(logging.Formatter):
    """``logging.Formatter("%(asctime)s TAG: %(levelname)s %(message)s")``, made cheaper.

    The output is that formatter's, byte for byte (local time, as
    ``2026-11-27 13:49:11,123``); a server writes two records per session.  The date
    and time are formatted once per second (``strftime`` was a third of a record's
    cost: 11-13 us per record before, 8 us after), and the line is built directly
    rather than through the generic ``%``-style template.
    """

    _second = -1
    _text = ""

    def __init__(self, tag: str) -> None:
        super().__init__(f"%(asctime)s {tag}: %(levelname)s %(message)s")
        self._tag = tag

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)  # the rare record with a traceback
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        return f"{record.asctime} {self._tag}: {record.levelname} {record.message}"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        msec_format = self.default_msec_format
        return self._text if msec_format is None else msec_format % (self._text, record.msecs)


def _ssl_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError("--tls-cert and --tls-key must be given together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8314 section 4.1
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load TLS certificate/key: {exc}") from None
    return context


#: What ``serve`` logs on SIGHUP, which it otherwise ignores.  Operators and
#: logrotate send it out of habit, since Dovecot, Postfix and nginx reload on it;
#: dying of it (the default action) would stop the service, and systemd's
#: ``Restart=on-failure`` does not restart a process killed by SIGHUP.
HANGUP_MESSAGE = (
    "nothing to reload (the passwd-file is re-read when it changes; "
    "other options need a restart); still serving"
)


async def _serve_until_signal(
    server: POP3Server,
    on_ready: Callable[[list[str]], None],
    worker_fds: str | None = None,
    *,
    keep_on_hangup: bool = False,
) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully.

    With ``keep_on_hangup`` (``serve``), SIGHUP is logged and changes nothing (see
    :data:`HANGUP_MESSAGE`); otherwise (``demo``) it ends the process as usual.

    The first signal stops accepting and ends idle sessions with ``-ERR [SYS/TEMP]``;
    busy sessions get :data:`DEFAULT_SHUTDOWN_GRACE` seconds.  A second signal
    cancels them at once.  Either way nothing uncommitted is removed.

    With ``worker_fds`` this is a worker of ``--workers`` (see :mod:`._workers`): it
    serves the inherited listeners, stops on SIGTERM only, and shuts down when its
    supervisor goes away.
    """
    stop_signals = (signal.SIGINT, signal.SIGTERM) if worker_fds is None else (signal.SIGTERM,)
    hangup = (signal.SIGHUP,) if keep_on_hangup else ()  # workers ignore it (SIG_IGN)
    with trio.open_signal_receiver(*stop_signals, *hangup) as signals:
        async with trio.open_nursery() as nursery:

            async def run(task_status: trio.TaskStatus[list[trio.SocketListener]]) -> None:
                if worker_fds is None:
                    await server.serve(task_status=task_status)
                else:
                    plain, secure = parse_worker_fds(worker_fds)
                    await server._serve_on(
                        worker_listeners(plain), worker_listeners(secure), task_status=task_status
                    )
                # serve() returns once shutdown() has let the last session end.
                nursery.cancel_scope.cancel()

            async def orphaned() -> None:
                await watch_supervisor()
                if not server.draining:
                    logger.info("supervisor gone, shutting down")
                    server.shutdown()

            try:
                listeners = await nursery.start(run)
            except OSError as exc:
                raise UsageError(f"cannot listen: {exc.strerror or exc}") from None
            on_ready([_address(listener) for listener in listeners])
            if worker_fds is not None:
                nursery.start_soon(orphaned)
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    logger.info("received SIGHUP: %s", HANGUP_MESSAGE)
                elif not server.draining:
                    logger.info("received %s, shutting down", name)
                    server.shutdown()
                else:
                    logger.info("received %s again, stopping now", name)
                    nursery.cancel_scope.cancel()


def _is_loopback(host: str | None) -> bool:
    """Whether ``--host`` names only this machine (None: all interfaces, so no)."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: the address it resolves to may be anything
        return False


def _address(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _cmd_serve(args: argparse.Namespace) -> int:
    from ._passwd import PasswdFileAuthenticator, PasswdFileError
    from .mailbox._maildir import MaildirStore

    _setup_logging(args.debug)
    if not args.maildir_root.is_dir():
        raise UsageError(f"--maildir-root {args.maildir_root}: not a directory")
    cpus = usable_cpus()
    if args.worker_fds is None and args.workers > WORKERS_PER_CPU_WARNING * cpus:
        logger.warning(
            "--workers %d is more than %d per usable CPU (%d here): each worker keeps a "
            "core busy, so the extra ones only add memory and contention",
            args.workers,
            WORKERS_PER_CPU_WARNING,
            cpus,
        )
    if args.timeout < DEFAULT_IDLE_TIMEOUT:
        # RFC 1939 section 3 (TIME-02): an autologout timer is at least 10 minutes.
        logger.warning(
            "--timeout %g is below RFC 1939's minimum of %g seconds after login",
            args.timeout,
            DEFAULT_IDLE_TIMEOUT,
        )
    try:
        authenticator = PasswdFileAuthenticator(args.users)
    except PasswdFileError as exc:
        raise UsageError(str(exc)) from None
    if args.fold_username and args.worker_fds is None:
        passwd = authenticator.passwd
        unreachable = sorted(user for user in passwd if ascii_lowercase(user) != user)
        if unreachable:
            logger.warning(
                "passwd-file %s: %d user names have capital letters (%s) and cannot log "
                "in, since names are lowercased at login as in Dovecot; lowercase them "
                "(and their Maildirs), or pass --keep-username-case",
                args.users,
                len(unreachable),
                ", ".join(unreachable[:_NAMES_SHOWN]),
            )
    context = _ssl_context(args.tls_cert, args.tls_key)
    if context is None and args.worker_fds is None and not _is_loopback(args.host):
        # RFC 8314 section 2 / RFC 2595 section 2.3: passwords should not cross a
        # network in the clear.  A warning, not an error: a trusted network, or a
        # TLS proxy in front, are legitimate.
        logger.warning(
            "no TLS configured: USER/PASS, PLAIN and LOGIN send passwords in the clear "
            "to %s; give --tls-cert and --tls-key, or listen on 127.0.0.1",
            args.host or "all interfaces",
        )
    if args.pop3s_port is not None and context is None:
        raise UsageError("--pop3s-port needs --tls-cert and --tls-key")
    if args.require_tls and context is None:
        raise UsageError("--require-tls needs --tls-cert and --tls-key")
    if args.require_tls and args.allow_insecure_auth:
        raise UsageError("--require-tls and --allow-insecure-auth contradict each other")
    store = MaildirStore(args.maildir_root, lock=args.maildrop_lock, mark_seen=args.mark_seen)
    server = _make_server(
        store,
        authenticator,
        port=args.port,
        host=args.host,
        timeout=args.timeout,
        login_timeout=args.login_timeout,
        limits=Limits(
            max_connections=args.max_connections,
            max_connections_per_address=args.max_connections_per_address,
            auth_failure_delay=args.auth_failure_delay,
            trusted_networks=args.trusted_network,
        ),
        ssl_context=context,
        pop3s_port=args.pop3s_port,
        allow_insecure_auth=args.allow_insecure_auth,
        require_tls=args.require_tls,
        apop=args.apop,
        mechanisms=args.sasl,
        utf8_legacy=args.utf8_legacy,
        expire=args.expire,
        username_format=ascii_lowercase if args.fold_username else None,
        replace_nuls=args.replace_nuls,
        enable_last=args.enable_last,
        proxy_protocol=args.proxy_protocol,
        debug=args.debug,
    )

    def ready(addresses: list[str]) -> None:
        logger.info("listening on %s", ", ".join(addresses))

    if args.worker_fds is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor passes it on
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor logs it
        trio.run(_serve_until_signal, server, ready, args.worker_fds)
    elif args.workers > 1:
        trio.run(_supervise, server, args, ready)
    else:
        trio.run(functools.partial(_serve_until_signal, server, ready, keep_on_hangup=True))
    return 0


async def _supervise(
    server: POP3Server, args: argparse.Namespace, on_ready: Callable[[list[str]], None]
) -> None:
    """Bind the listeners, then run ``--workers`` worker processes on them."""
    try:
        plain, secure = await server._open_listeners()
    except OSError as exc:
        raise UsageError(f"cannot listen: {exc.strerror or exc}") from None
    on_ready([_address(listener) for listener in plain + secure])
    command = [sys.executable, "-m", "trio_pop3", *args.argv]
    await supervise(args.workers, command, plain, secure, hangup_message=HANGUP_MESSAGE)


def _make_server(
    store: MailStore,
    authenticator: Authenticator,
    *,
    allow_insecure_auth: bool = False,
    require_tls: bool = False,
    apop: bool = False,
    mechanisms: Sequence[SASLMechanism] = DEFAULT_MECHANISMS,
    utf8_legacy: Literal["refuse", "downgrade", "send"] = "refuse",
    expire: int | Literal["NEVER"] | None = "NEVER",
    username_format: Callable[[str], str] | None = ascii_lowercase,
    replace_nuls: bool = False,
    enable_last: bool = False,
    **options: object,
) -> POP3Server:
    factory = functools.partial(
        MailboxHandler,
        store,
        authenticator,
        apop=apop,
        allow_insecure_auth=allow_insecure_auth,
        require_tls=require_tls,
        mechanisms=mechanisms,
        utf8_legacy=utf8_legacy,
        expire=expire,
        username_format=username_format,
        replace_nuls=replace_nuls,
        enable_last=enable_last,
    )
    return POP3Server(factory, **options)  # type: ignore[arg-type]


def _cmd_hash_password(args: argparse.Namespace) -> int:
    from ._passwd import UnsupportedScheme, hash_password

    password = args.password
    if password is None:
        if sys.stdin.isatty():
            password = getpass.getpass("Password: ")
            if getpass.getpass("Again: ") != password:
                raise UsageError("passwords do not match")
        else:
            line = sys.stdin.buffer.readline().rstrip(b"\r\n")
            try:
                password = line.decode("utf-8")
            except UnicodeDecodeError:
                raise UsageError("the password is not valid UTF-8") from None
    try:
        # Clients send UTF-8 (RFC 6856), and the server refuses a command that is not,
        # so a password with stray octets (from the command line, decoded with
        # surrogateescape) could never be sent.
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("the password is not valid UTF-8") from None
    try:
        print(hash_password(password, args.scheme))
    except (UnsupportedScheme, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return 0


DEMO_USER = "demo"
DEMO_PASSWORD = "demo"

DEMO_MESSAGES = [
    b"From: trio_pop3 <demo@example.org>\nTo: demo@example.org\n"
    b"Subject: Welcome to trio_pop3\n\n"
    b"This message was served by trio_pop3's demo server.\n"
    b".This line starts with a dot and is byte-stuffed on the wire.\n"
    b"\nDelete me with DELE and QUIT; the demo Maildir is thrown away at exit.\n",
    b"From: trio_pop3 <demo@example.org>\nTo: demo@example.org\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\nMIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
    b"Gr\xc3\xbc\xc3\x9fe aus trio_pop3! 8-bit bodies pass through untouched.\n",
    b"From: trio_pop3 <demo@example.org>\nTo: demo@example.org\nSubject: A short one\n\n.\n",
]


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._passwd import PasswdFileAuthenticator
    from .mailbox._maildir import MaildirStore, deliver

    _setup_logging(args.debug)
    tmp = Path(tempfile.mkdtemp(prefix="trio-pop3-demo-"))
    try:
        maildir = tmp / "mail" / DEMO_USER
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, mode=0o700)
        for message in DEMO_MESSAGES:
            deliver(maildir, message)
        users = tmp / "passwd"
        users.write_text(f"{DEMO_USER}:{{PLAIN}}{DEMO_PASSWORD}\n")
        port = args.port
        if port is None:
            # "No arguments needed": a second demo, or anything else on 1110, must
            # not stop the first run of a newcomer.
            port = DEMO_PORT if _port_free("127.0.0.1", DEMO_PORT) else 0
        server = _make_server(
            MaildirStore(tmp / "mail"),
            PasswdFileAuthenticator(users),
            port=port,
            host="127.0.0.1",
            debug=args.debug,
        )

        def ready(addresses: list[str]) -> None:
            port = addresses[0].rsplit(":", 1)[1]
            print(_demo_instructions(port), flush=True)

        trio.run(_serve_until_signal, server, ready)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _demo_instructions(port: str) -> str:
    u, p = DEMO_USER, DEMO_PASSWORD
    return f"""\
trio-pop3 demo: serving {len(DEMO_MESSAGES)} sample messages on 127.0.0.1:{port}
  user: {u}   password: {p}   (Ctrl-C stops it and deletes the demo Maildir)

Read the mail with curl:
  curl pop3://{u}:{p}@127.0.0.1:{port}/          # list messages
  curl pop3://{u}:{p}@127.0.0.1:{port}/1         # retrieve message 1

or with Python's poplib:
  python3 -c "import poplib; p = poplib.POP3('127.0.0.1', {port}); p.user('{u}'); \\
p.pass_('{p}'); print(p.stat()); print(b'\\n'.join(p.retr(1)[1]).decode()); p.quit()"
"""


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": _cmd_serve,
    "hash-password": _cmd_hash_password,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``trio-pop3``; returns the exit status.

    A bad command line or configuration prints one line to stderr and returns 2;
    SIGINT and SIGTERM stop the server cleanly with status 0.
    """
    try:
        try:
            args = build_parser().parse_args(argv)
            # The command line, for --workers to start its workers with.
            args.argv = list(sys.argv[1:] if argv is None else argv)
            return _COMMANDS[args.command](args)
        except* UsageError as group:
            # trio.run() wraps errors raised inside nurseries in exception groups.
            raise _first(group) from None
    except UsageError as exc:
        print(f"trio-pop3: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 0


def _first(group: BaseExceptionGroup[UsageError]) -> UsageError:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, UsageError)
    return exc


def _entry() -> NoReturn:  # pragma: no cover - console script shim
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()
