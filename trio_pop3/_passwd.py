"""Dovecot passwd-files, and an authenticator over them.

Stored passwords and their schemes are :mod:`trio_pop3._schemes`, whose public
names are re-exported here.

Passwd-files
------------
Dovecot's passwd-file format, one user per line::

    user:password:uid:gid:gecos:home:shell:extra_fields

Only ``user`` and ``password`` are needed; the password field ends at the next
``:`` (use a ``.B64`` or ``.HEX`` encoded PLAIN password to store a ``:``).
Everything after the seventh ``:`` is ``extra_fields``, a space-separated list of
``key=value`` items that may itself contain ``:`` (``userdb_mail=maildir:~/Maildir``).
Blank lines and lines starting with ``#`` are skipped.  An empty password field
disables the account: no password matches it.

Of the extra fields, those that make Dovecot refuse, restrict or redirect a login
(``LOGIN_CONTROL_FIELDS``: ``nologin``, ``allow_nets``, ``proxy``, ``host``,
``user`` and others) are not implemented here.  Ignoring them would let a user in
whom Dovecot keeps out, so :class:`PasswdFileAuthenticator` refuses every login of
an entry that has one, and logs it when it loads the file.  All other extra fields
(``userdb_*``, ``nodelay``, ...) and the uid, gid, gecos, home and shell fields are
ignored.

Example::

    # /etc/trio-pop3/passwd
    alice:{SSHA512}LhJc8FMj...an4=
    bob:{BLF-CRYPT}$2y$05$05Dg5NaiPYZeTbEEI.Vth...:1000:1000::/home/bob::nodelay

    auth = PasswdFileAuthenticator("/etc/trio-pop3/passwd")
    ok = await auth.check_password("alice", "secret")
"""

from __future__ import annotations

import functools
import hmac
import logging
import math
import os
import secrets
import stat
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, final

import trio

from ._mailbox import Authenticator, ScramCredentials
from ._names import is_safe_username
from ._schemes import (
    _PLAIN_NAMES,
    ARGON2_MEMORY_COST as ARGON2_MEMORY_COST,
    ARGON2_PARALLELISM as ARGON2_PARALLELISM,
    ARGON2_TIME_COST as ARGON2_TIME_COST,
    BCRYPT_ROUNDS as BCRYPT_ROUNDS,
    DEFAULT_SCHEME as DEFAULT_SCHEME,
    MAX_STORED_PASSWORD,
    SALT_SIZE as SALT_SIZE,
    SCRAM_ITERATIONS as SCRAM_ITERATIONS,
    SCRAM_MIN_ITERATIONS as SCRAM_MIN_ITERATIONS,
    SUPPORTED_SCHEMES as SUPPORTED_SCHEMES,
    UnsupportedScheme as UnsupportedScheme,
    _decode_data,
    _is_slow,
    _malformed,
    _parse,
    _scheme_key,
    _scheme_problem,
    hash_password as hash_password,
    scram_sha256_credentials as scram_sha256_credentials,
    verify_password as verify_password,
)

__all__ = [
    "ARGON2_MEMORY_COST",
    "ARGON2_PARALLELISM",
    "ARGON2_TIME_COST",
    "BCRYPT_ROUNDS",
    "DEFAULT_SCHEME",
    "HASH_THREADS",
    "LOGIN_CONTROL_FIELDS",
    "RELOAD_CHECK_INTERVAL",
    "SALT_SIZE",
    "SCRAM_ITERATIONS",
    "SCRAM_MIN_ITERATIONS",
    "SUPPORTED_SCHEMES",
    "PasswdEntry",
    "PasswdFile",
    "PasswdFileAuthenticator",
    "PasswdFileError",
    "ScramCredentials",
    "UnsupportedScheme",
    "default_hash_limiter",
    "hash_password",
    "scram_sha256_credentials",
    "verify_password",
]

_log = logging.getLogger(__name__)

#: Threads that may run slow hashes at once (the default
#: ``default_hash_limiter``).  Sized for a 2-core machine: bcrypt, Argon2 and
#: PBKDF2 release the GIL, so four threads keep both cores busy through a burst of
#: logins, while the rest queue instead of taking all of trio's 40 default worker
#: threads (and Argon2's memory) and the event loop stays free to serve mail.
HASH_THREADS: Final = 4

#: Seconds between two checks of a passwd-file's mtime, size and inode.  Dovecot
#: also re-reads a changed passwd-file; checking once a second keeps a busy server
#: from calling stat() on every login while edits still show up almost at once.
RELOAD_CHECK_INTERVAL: Final = 1.0

#: Extra fields with which Dovecot refuses, restricts or redirects a login, and which
#: this module does not implement: ``nologin`` and ``fail`` refuse it; ``allow_nets``
#: and ``allow_real_nets`` allow it only from some addresses; ``proxy``,
#: ``proxy_maybe`` and ``host`` send the client to another server; ``user`` and
#: ``login_user`` log in as another user; ``nopassword`` and ``noauthenticate``
#: change what the password check means.  An entry with any of them, as ``key`` or
#: ``key=value`` (compared without regard to case, the value not looked at), cannot
#: log in: refusing is the only safe reading of a rule the server cannot apply.
#: Other extra fields (``userdb_*``, ``nodelay``, the proxy options that need
#: ``proxy``, ``k5principals`` for the GSSAPI mechanism, which is not offered) change
#: nothing about who may log in, and are ignored.
LOGIN_CONTROL_FIELDS: Final = frozenset(
    {
        "nologin",
        "fail",
        "allow_nets",
        "allow_real_nets",
        "proxy",
        "proxy_maybe",
        "host",
        "user",
        "login_user",
        "nopassword",
        "noauthenticate",
    }
)


class PasswdFileError(ValueError):
    """A passwd-file cannot be read or has a malformed line.

    The message is one line naming the file and, for a bad line, its number, e.g.
    ``passwd-file /etc/pop3.passwd line 3: no ':' after the user name``.  It never
    contains a password.
    """


# --------------------------------------------------------------------------------------
# passwd-file


@final
@dataclass(frozen=True, slots=True)
class PasswdEntry:
    """One line of a passwd-file.

    Attributes:
        user: The user name (checked with ``is_safe_username``).
        password: The stored password, ``{SCHEME}data`` (hidden from ``repr()``).
        uid, gid, gecos, home, shell: The userdb fields, ``""`` when absent.
        extra_fields: The space-separated ``key=value`` items of the last field.
        line: The line number, counted from 1.
    """

    user: str
    password: str = field(repr=False)
    uid: str = ""
    gid: str = ""
    gecos: str = ""
    home: str = ""
    shell: str = ""
    extra_fields: tuple[str, ...] = ()
    line: int = 0

    @property
    def login_controls(self) -> tuple[str, ...]:
        """The keys of ``extra_fields`` in ``LOGIN_CONTROL_FIELDS``, lower case.

        Not empty means the entry cannot log in through
        :class:`PasswdFileAuthenticator`.  Only keys are given, never values (a
        proxy ``pass=`` value is a password).

        >>> PasswdFile.parse("a:{PLAIN}x::::::nologin Allow_Nets=192.0.2.0/24\\n").entry(
        ...     "a"
        ... ).login_controls
        ('nologin', 'allow_nets')
        """
        keys = (item.partition("=")[0].lower() for item in self.extra_fields)
        return tuple(key for key in keys if key in LOGIN_CONTROL_FIELDS)


#: Fields before ``extra_fields``: user, password, uid, gid, gecos, home, shell.
_FIXED_FIELDS: Final = 7


def _parse_line(text: str, number: int, where: str) -> PasswdEntry | None:
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if ":" not in text:
        raise PasswdFileError(f"{where} line {number}: no ':' after the user name")
    fields = text.split(":")
    user = fields[0]
    if not user:
        raise PasswdFileError(f"{where} line {number}: empty user name")
    if not is_safe_username(user):
        raise PasswdFileError(f"{where} line {number}: unsafe user name {user!r}")
    padded = [*fields[1:_FIXED_FIELDS], *[""] * _FIXED_FIELDS]
    password, uid, gid, gecos, home, shell = padded[: _FIXED_FIELDS - 1]
    # Dovecot joins the fields after the seventh back with ":" (extra fields such as
    # userdb_mail=maildir:~/Maildir contain colons), then splits them at spaces.
    extra = tuple(":".join(fields[_FIXED_FIELDS:]).split())
    return PasswdEntry(user, password, uid, gid, gecos, home, shell, extra, number)


@final
class PasswdFile(Mapping[str, str]):
    """A parsed Dovecot passwd-file: a read-only mapping from user to stored password.

    Example::

        passwd = PasswdFile.load("/etc/trio-pop3/passwd")
        stored = passwd.lookup("alice")  # "{SSHA512}..." or None
        home = passwd.entry("alice").home

    Build one with :meth:`load` or :meth:`parse`.
    """

    __slots__ = ("_entries", "_path", "_signature")

    def __init__(self, entries: Mapping[str, PasswdEntry], *, path: str = "<string>") -> None:
        """Wrap already parsed ``entries`` (keyed by user name); prefer :meth:`load`."""
        self._entries = dict(entries)
        self._path = path
        #: Identity of the file version read by :meth:`load` (device, inode, size, times).
        self._signature: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, text: str, *, path: str = "<string>") -> PasswdFile:
        """Parse the contents of a passwd-file.

        >>> PasswdFile.parse("# users\\nalice:{PLAIN}pw:1000:1000::/home/a\\n").lookup("alice")
        '{PLAIN}pw'

        Raises:
            PasswdFileError: a malformed line: no ``:``, an empty or unsafe user name,
                or a user named twice.  ``path`` names the file in the message.
        """
        entries: dict[str, PasswdEntry] = {}
        where = f"passwd-file {path}"
        for number, line in enumerate(text.split("\n"), start=1):
            entry = _parse_line(line.removesuffix("\r"), number, where)
            if entry is None:
                continue
            first = entries.get(entry.user)
            if first is not None:
                raise PasswdFileError(
                    f"{where} line {number}: user {entry.user!r} already on line {first.line}"
                )
            entries[entry.user] = entry
        return cls(entries, path=path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PasswdFile:
        """Read and parse the passwd-file at ``path`` (blocking I/O).

        A line that is not UTF-8 (a Latin-1 password in an old Dovecot file, say)
        is left out and logged as an error, with its number: its user could never
        log in, since commands and SASL data are UTF-8 (RFC 6856, RFC 4616), and
        the other users must not be locked out with it.

        Raises:
            PasswdFileError: the file cannot be read (``cannot read passwd-file /x:
                No such file or directory``), is not a regular file, or has a
                malformed line (see :meth:`parse`).

        Cancellation:
            Blocking and synchronous: no checkpoint.  From trio, call it through
            :func:`trio.to_thread.run_sync` (as the reloading authenticator does),
            which runs it to completion even when cancelled.
        """
        name = os.fspath(path)
        try:
            # O_NONBLOCK: a FIFO or device named by mistake must not hang the server.
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with open(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise PasswdFileError(f"cannot read passwd-file {name}: not a regular file")
                data = f.read()
        except OSError as exc:
            raise PasswdFileError(
                f"cannot read passwd-file {name}: {exc.strerror or exc}"
            ) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = _utf8_lines(data, name)
        parsed = cls.parse(text, path=name)
        parsed._signature = _signature(st)
        return parsed

    @property
    def path(self) -> str:
        """The file name given to :meth:`load` (``"<string>"`` after :meth:`parse`)."""
        return self._path

    def lookup(self, user: str) -> str | None:
        """Return the stored password of ``user``, or None for an unknown user."""
        entry = self._entries.get(user)
        return None if entry is None else entry.password

    def entry(self, user: str) -> PasswdEntry | None:
        """Return the whole line of ``user``, or None for an unknown user."""
        return self._entries.get(user)

    def entries(self) -> Iterator[PasswdEntry]:
        """Iterate over the entries in file order."""
        return iter(self._entries.values())

    def __getitem__(self, user: str) -> str:
        return self._entries[user].password

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<PasswdFile {self._path!r}: {len(self._entries)} users>"


def _utf8_lines(data: bytes, name: str) -> str:
    """Decode a passwd-file, each line that is not UTF-8 left empty (and logged)."""
    lines = data.split(b"\n")
    for index, line in enumerate(lines):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            _log.error(
                "passwd-file %s line %d: not valid UTF-8; left out, so its user cannot log in",
                name,
                index + 1,
            )
            lines[index] = b""
    return b"\n".join(lines).decode("utf-8")


def _signature(st: os.stat_result) -> tuple[int, ...]:
    # The inode catches an atomic rename; ctime a same-size rewrite within one mtime tick.
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# --------------------------------------------------------------------------------------
# The authenticator

_HASH_LIMITER: Final[trio.lowlevel.RunVar[trio.CapacityLimiter]] = trio.lowlevel.RunVar(
    "trio_pop3_hash_limiter"
)


def default_hash_limiter() -> trio.CapacityLimiter:
    """Return the limiter of slow password hashes shared within this :func:`trio.run`.

    It admits :data:`HASH_THREADS` threads.  Pass it to
    :func:`trio.to_thread.run_sync` for any other costly hashing (such as a SASL
    mechanism's), so all of it shares one budget.
    """
    try:
        return _HASH_LIMITER.get()
    except LookupError:
        limiter = trio.CapacityLimiter(HASH_THREADS)
        _HASH_LIMITER.set(limiter)
        return limiter


#: SCRAM verifiers remembered per process (PBKDF2 for a PLAIN entry takes about
#: 3 ms): about 300 octets each, so 10,000 users are 3 MB.
SCRAM_CACHE_ENTRIES = 10_000

#: Key for the SCRAM salts of PLAIN entries: random per process, like the key the SASL
#: layer derives unknown users' salts with.
_PLAIN_SCRAM_SALT_KEY: Final = secrets.token_bytes(32)


@functools.cache
def _empty_file_dummy() -> str:
    # Made once, lazily: a random password nobody knows.
    return hash_password(secrets.token_urlsafe(), DEFAULT_SCHEME)


@dataclass(frozen=True, slots=True)
class _Loaded:
    passwd: PasswdFile
    #: What an unknown user's password is checked against (the result is discarded).
    dummy: str
    #: Users whose entry has a login control field (see LOGIN_CONTROL_FIELDS).
    refused: frozenset[str] = frozenset()
    #: A made-up PLAIN entry whose SCRAM verifier an unknown user costs, when the
    #: file has PLAIN entries (whose verifiers are derived per user); else None.
    scram_dummy: str | None = None

    def stored(self, user: str) -> str | None:
        """The stored password of a user who may log in; None otherwise."""
        return None if user in self.refused else self.passwd.lookup(user)


@final
class PasswdFileAuthenticator(Authenticator):
    """An :class:`~trio_pop3.mailbox.Authenticator` backed by a Dovecot passwd-file.

    Example::

        auth = PasswdFileAuthenticator("/etc/trio-pop3/passwd")
        if await auth.check_password("alice", password): ...

    Slow schemes (BLF-CRYPT, ARGON2*, SCRAM-SHA-256) are verified in a worker thread
    under ``limiter`` (``default_hash_limiter`` unless given), so the event loop
    keeps serving other sessions; the fast ones run inline.

    An unknown user, or one with an empty password field, has the password checked
    anyway (the result is discarded) against an entry of the file's most common
    scheme, so the answer takes as long as for a real user with the usual scheme and
    cost: timing does not tell which users exist.  An empty file falls back to a
    random ``DEFAULT_SCHEME`` hash.

    An entry with an extra field of ``LOGIN_CONTROL_FIELDS`` (``nologin``,
    ``allow_nets``, ``proxy``, ...) is refused like an unknown user by every
    method, whatever the password; each load of the file logs one error per such
    user, naming the fields (not their values).

    Error handling:
        The constructor raises :class:`PasswdFileError` if the file cannot be loaded.
        A failed reload is logged and the previous contents stay in use until the
        file changes again.  Entries whose scheme is unknown or lacks its library,
        and entries with a login control field, are logged at load and never match.
        The lookups themselves never raise.

    Cancellation:
        The constructor reads the file with blocking I/O; build the authenticator
        before :func:`trio.run` or in a worker thread.  The lookups run the reload
        check (``stat``) and reload in worker threads, and slow hashes in a worker
        thread once ``limiter`` admits it: waiting for the limiter is cancelled at
        once, while a thread that has started runs to completion, and the
        cancellation takes effect at the next checkpoint after it.

    Args:
        path: The passwd-file.
        reload: Re-read the file when its size, mtime or inode change, checked at
            most every ``RELOAD_CHECK_INTERVAL`` seconds on a lookup.
        limiter: Bounds the threads used for slow hashes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        reload: bool = True,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self._path = os.fspath(path)
        self._reload = reload
        self._limiter = limiter
        self._next_check = -math.inf
        #: SCRAM verifiers derived from PLAIN entries, and the None of unknown users,
        #: by (user, stored password): see get_scram_credentials().
        self._scram_cache: OrderedDict[tuple[str, str | None], ScramCredentials | None] = (
            OrderedDict()
        )
        passwd = PasswdFile.load(self._path)
        #: Signature of the file version last read, even if it failed to parse.
        self._seen = passwd._signature
        self._loaded = self._install(passwd)

    @property
    def path(self) -> str:
        """The passwd-file's name."""
        return self._path

    @property
    def passwd(self) -> PasswdFile:
        """The contents as last loaded (without checking the file for changes)."""
        return self._loaded.passwd

    async def check_password(self, user: str, password: str) -> bool:
        """Return whether ``password`` is right for ``user``; see the class notes.

        Error handling:
            Never raises: an unknown user, an empty password field, an entry whose
            scheme is unsupported (logged) and an entry with a login control field
            (logged at load) all give False.

        Cancellation:
            A checkpoint; see the class notes.  A failed check of a user whose
            scheme is faster than the file's slowest may hash twice (the second
            time against the dummy, so that timing tells nothing).
        """
        loaded = await self._current()
        stored = loaded.stored(user)
        known = bool(stored)
        try:
            ok = await self._verify(stored if stored else loaded.dummy, password)
        except UnsupportedScheme as exc:
            if known:
                _log.error("passwd-file %s: user %r: %s", self._path, user, exc)
            ok = False
        if known and not ok and _scheme_key(stored or "") != _scheme_key(loaded.dummy):
            # A failure costs what an unknown user costs (the dummy, of the slowest
            # scheme in the file), so a user of a faster scheme is not told apart by
            # timing.  Successful logins never pay this.
            await self._verify(loaded.dummy, password)
        return known and ok

    async def get_secret(self, user: str) -> str | None:
        """Return the plaintext of a PLAIN/CLEARTEXT entry (for APOP, CRAM-MD5), else None.

        Error handling:
            Never raises: an unknown user, another scheme, undecodable data, or
            an entry with a login control field all give None.

        Cancellation:
            A checkpoint only when it checks the file for changes; see the class
            notes.
        """
        stored = (await self._current()).stored(user)
        if not stored or len(stored) > MAX_STORED_PASSWORD:
            return None
        try:
            parsed = _parse(stored)
        except UnsupportedScheme:
            return None
        data = _decode_data(parsed) if parsed.name in _PLAIN_NAMES else None
        if not data:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    async def get_scram_credentials(self, user: str) -> ScramCredentials | None:
        """Return ``user``'s SCRAM-SHA-256 verifier (see ``scram_sha256_credentials``).

        For a PLAIN entry the salt is derived from the user name with a per-process
        secret key, so repeated exchanges see the same salt, as for a stored
        verifier (a fresh salt each time would tell a real user from the made-up
        salt the SASL layer shows for an unknown one).  None for an unknown user, an
        entry with a login control field, or a scheme that cannot provide a verifier.

        Error handling:
            Never raises: malformed and unsupported entries give None.

        Cancellation:
            The verifier (PBKDF2 for a PLAIN entry) is computed in a worker thread
            under ``limiter``; see the class notes.
        """
        loaded = await self._current()
        stored = loaded.stored(user) or None
        key = (user, stored)
        cache = self._scram_cache
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        salt = hmac.digest(_PLAIN_SCRAM_SALT_KEY, user.encode("utf-8", "surrogatepass"), "sha256")
        # An unknown user costs what a PLAIN entry costs (one PBKDF2 on a made-up
        # password), if the file has any: deriving a verifier takes 3 ms, answering
        # "unknown" 0.3 ms, which told users apart (found by an audit).  Either is
        # done once per user and remembered, so repeated exchanges cost nothing.
        source = stored if stored is not None else loaded.scram_dummy
        credentials = None
        if source is not None:
            credentials = await trio.to_thread.run_sync(
                functools.partial(scram_sha256_credentials, source, salt=salt[:SALT_SIZE]),
                limiter=self._hash_limiter(),
            )
        if stored is None:
            credentials = None
        cache[key] = credentials
        if len(cache) > SCRAM_CACHE_ENTRIES:
            cache.popitem(last=False)
        return credentials

    async def scram_credentials(self, user: str) -> ScramCredentials | None:
        """Same as :meth:`get_scram_credentials`."""
        return await self.get_scram_credentials(user)

    def _hash_limiter(self) -> trio.CapacityLimiter:
        return self._limiter if self._limiter is not None else default_hash_limiter()

    async def _verify(self, stored: str, password: str) -> bool:
        if _is_slow(stored):
            return await trio.to_thread.run_sync(
                verify_password, stored, password, limiter=self._hash_limiter()
            )
        return verify_password(stored, password)

    async def _current(self) -> _Loaded:
        if not self._reload:
            return self._loaded
        now = trio.current_time()
        if now < self._next_check:
            return self._loaded
        # Set before awaiting, so concurrent logins do not all stat() the file.
        self._next_check = now + RELOAD_CHECK_INTERVAL
        try:
            st = await trio.to_thread.run_sync(os.stat, self._path)
        except OSError as exc:
            if self._seen is not None:  # log once, not every second
                _log.error(
                    "cannot read passwd-file %s: %s; still using the previous contents",
                    self._path,
                    exc.strerror or exc,
                )
                self._seen = None
            return self._loaded
        signature = _signature(st)
        if signature == self._seen:
            return self._loaded
        # Remember even a bad version, so it is not re-read (and re-logged) each second.
        self._seen = signature

        def load() -> tuple[PasswdFile, _Loaded]:
            # Checking every entry costs about as much as parsing it: both in the
            # thread, where the interpreter's switch interval lets sessions go on
            # (on the event loop, 100,000 users stalled every session for a second).
            passwd = PasswdFile.load(self._path)
            return passwd, self._install(passwd)

        try:
            passwd, loaded = await trio.to_thread.run_sync(load)
        except PasswdFileError as exc:
            _log.error("%s; still using the previous contents", exc)
            return self._loaded
        self._seen = passwd._signature
        self._loaded = loaded
        _log.info("passwd-file %s reloaded: %d users", self._path, len(passwd))
        return self._loaded

    def _install(self, passwd: PasswdFile) -> _Loaded:
        problems: dict[str, tuple[UnsupportedScheme, int, int]] = {}
        for entry in passwd.entries():
            problem = _scheme_problem(entry.password)
            if problem is not None:
                _, first, count = problems.get(problem.scheme.upper(), (problem, entry.line, 0))
                problems[problem.scheme.upper()] = (problem, first, count + 1)
        for problem, first, count in problems.values():
            _log.warning(
                "passwd-file %s line %d: %s (%d users); they cannot log in",
                self._path,
                first,
                problem,
                count,
            )
        damaged: dict[str, tuple[int, int]] = {}
        for entry in passwd.entries():
            if _malformed(entry.password):
                key = _scheme_key(entry.password)
                first, count = damaged.get(key, (entry.line, 0))
                damaged[key] = (first, count + 1)
        for key, (first, count) in damaged.items():
            # Else their logins would read as password guessing (fail2ban's line).
            _log.warning(
                "passwd-file %s line %d: damaged %s password data (%d users); they cannot log in",
                self._path,
                first,
                key,
                count,
            )
        refused = []
        for entry in passwd.entries():
            controls = entry.login_controls
            if controls:
                refused.append(entry.user)
                _log.error(
                    "passwd-file %s line %d: user %r has extra field %s, which trio_pop3 "
                    "does not implement; the user cannot log in",
                    self._path,
                    entry.line,
                    entry.user,
                    ", ".join(controls),
                )
        has_plain = any(_scheme_key(v) in _PLAIN_NAMES for v in passwd.values() if v)
        scram_dummy = "{PLAIN}" + secrets.token_urlsafe() if has_plain else None
        return _Loaded(passwd, self._pick_dummy(passwd), frozenset(refused), scram_dummy)

    @staticmethod
    def _pick_dummy(passwd: PasswdFile) -> str:
        usable = [
            v for v in passwd.values() if v and _scheme_problem(v) is None and not _malformed(v)
        ]
        if not usable:
            return _empty_file_dummy()
        # The slowest kind of entry present sets the cost of every failure (see
        # check_password); among equals, the most common.
        slow = [v for v in usable if _is_slow(v)] or usable
        common, _ = Counter(_scheme_key(v) for v in slow).most_common(1)[0]
        return next(v for v in slow if _scheme_key(v) == common)
