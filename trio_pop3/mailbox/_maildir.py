"""Maildir maildrops: one directory per user, one file per message.

Layout
------
::

    <root>/<user>/              the user's Maildir, created 0700 on first login
        cur/  new/  tmp/        the standard Maildir directories
        .trio-pop3.lock         the POP3 session lock (see below)

Mail delivery agents write a message into ``tmp/`` and rename it into ``new/``; mail
clients (and IMAP servers) move it to ``cur/`` and append flags after a ``:`` in the
file name (``<base>:2,S``).  The part before the ``:`` (the *base name*) never changes
for the life of a message, so it is what identifies a message here.

Guarantees
----------
* **Exclusive lock** (RFC 1939 section 4).  :meth:`MaildirStore.open` takes
  ``flock(LOCK_EX | LOCK_NB)`` on the lock file through a fresh ``open()``, so it
  excludes other sessions of the same process as well as other processes.  The kernel
  drops the lock when the process dies, so a crashed server never leaves a stale lock.
  ``MaildirStore(lock=False)`` leaves it out (see there for the trade-off).
  The lock is advisory: it excludes other trio_pop3 sessions, not MDAs or IMAP servers,
  and every operation below copes with their concurrent changes.
* **Snapshot** (RFC 1939 section 4).  :meth:`MaildirMailbox.list_messages` lists
  ``cur/`` and ``new/`` once; mail delivered later is seen by the next session.
  Messages are numbered in delivery order: the leading timestamp of the file name
  (seconds), the ``M<microseconds>`` field when present, then the base name.
* **Stable unique ids** (RFC 1939 section 7).  The UID is the base name if it is 1 to
  70 characters in 0x21 to 0x7E, otherwise the hex SHA-1 of its bytes.  It survives
  restarts, a move from ``new/`` to ``cur/`` and flag changes.  Of two different
  files with one base name (``new/X`` beside ``cur/X:2,S``, say, left by a copy or
  a restore), one is renamed to a fresh unique name, as Dovecot does, so both are
  listed and neither unique-id is ever reused for the other: the one clients may
  know under the name keeps it.  Two names of one file (a hard link, as another
  program's link-then-unlink rename leaves for a moment) are one message, listed
  once; the listing removes neither, and a DELE removes both.
  A message another program moved or renamed is found by its base name, inode,
  mtime and size, which a rename keeps.
* **Exact sizes** (RFC 1939 section 11).  A Dovecot ``,W=<n>`` tag in the base name is
  the CRLF size and is used as is when ``trust_size_tags`` is on; otherwise the file is
  read once through :class:`~trio_pop3.WireSizeCounter` and the result cached on the
  store, keyed by the file's identity (inode, size, mtime).
* **No escape from the Maildir.**  User names are checked with
  :func:`~trio_pop3.is_safe_username`; a user directory or ``cur``/``new``/``tmp``
  that resolves outside the root is refused; message files are opened with
  ``O_NOFOLLOW`` and must be regular files, so a symlink or FIFO dropped into the
  Maildir can neither leak other files nor hang the server.
* **Safe removal.**  :meth:`MaildirMailbox.remove` unlinks exactly the given files
  and their other names in ``cur/`` and ``new/`` (each unlink is atomic), then fsyncs
  the directories.  Apart from settling duplicates (above: one atomic ``rename``)
  and flagging retrieved messages seen at QUIT (below: one atomic
  ``rename`` that keeps the base name), nothing else is ever written, so a crash at
  any point cannot lose a message that was not deleted.
* **Seen flag.**  At QUIT, messages the client retrieved with RETR and kept get the
  ``S`` flag (``new/X`` becomes ``cur/X:2,S``), as Dovecot does, so an IMAP client
  of the same Maildir shows them as read.  A session that ends without QUIT changes
  nothing; ``MaildirStore(mark_seen=False)`` turns it off.

Blocking file-system calls run in :func:`trio.to_thread.run_sync`, except the few that
are cheaper than a thread round trip: taking the lock (a non-blocking ``flock``),
opening and reading a message of at most :data:`INLINE_READ_LIMIT` octets, and
re-listing a small maildrop whose sizes are already cached.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import fcntl
import hashlib
import itertools
import logging
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import trio

from .._errors import MailboxError, MailboxInUse, ResponseCode
from .._names import is_safe_username
from .._proto._wire import WireSizeCounter, wire_size
from ._base import Mailbox, MailStore, MessageInfo

__all__ = [
    "INLINE_READ_LIMIT",
    "LOCK_FILE_NAME",
    "LOCK_RETRY_INTERVAL",
    "READ_CHUNK_SIZE",
    "SIZE_CACHE_LIMIT",
    "MaildirMailbox",
    "MaildirStore",
    "deliver",
]

logger = logging.getLogger("trio_pop3.mailbox.maildir")

#: Size of the chunks :meth:`MaildirMailbox.read_message` yields.  Big enough that the
#: per-chunk cost (a thread round trip, a send) is small next to copying the data,
#: small enough that many concurrent RETRs of large messages stay cheap in memory.
READ_CHUNK_SIZE = 256 * 1024

#: Messages up to this many octets are read with one ``os.read`` in the event loop:
#: for a page-cached local file that is cheaper than a round trip to a worker thread,
#: and most mail is smaller than this.
INLINE_READ_LIMIT = 64 * 1024

#: Name of the lock file inside each Maildir.  The leading dot keeps it out of
#: Maildir listings and out of reach of user names (which may not start with a dot).
LOCK_FILE_NAME = ".trio-pop3.lock"

#: Default bound on the number of messages the store remembers over all maildrops
#: (parsed name and size, a few hundred bytes each); the maildrops used least
#: recently are forgotten first.
SIZE_CACHE_LIMIT = 200_000

#: Seconds between attempts to take a held lock when ``lock_wait`` is set: short
#: next to a session, long enough that waiting sessions cost next to nothing.
LOCK_RETRY_INTERVAL = 0.1

#: RFC 1939 section 7: a unique-id is 1 to 70 characters in the range 0x21 to 0x7E.
_MAX_UID_LENGTH = 70

#: Directory mode for created Maildirs: mail is private to its owner.
_DIR_MODE = 0o700
#: File mode for delivered messages.
_FILE_MODE = 0o600

#: A maildrop listed before with at most this many messages, all of known size, is
#: re-listed in the event loop: a few dozen ``lstat`` calls on cached inodes cost
#: less than the thread round trip.  Bigger or unknown maildrops go to a thread.
_INLINE_SCAN_LIMIT = 32

#: A listing is reused without reading ``cur/`` and ``new/`` again only when both
#: directories are unchanged (inode, size, mtime, ctime) *and* their last change is at
#: least this many nanoseconds old.  File-system timestamps tick coarsely (a jiffy,
#: up to 10 ms on Linux), so a change in the same tick as the listing could leave them
#: unchanged; one second is far past any tick (the "racy timestamp" rule of Git's
#: index and of Dovecot's Maildir sync).
_SETTLED_NS = 1_000_000_000

#: Longest ``W=`` value accepted (digits): 20 digits already exceed any file size.
_MAX_TAG_DIGITS = 20

#: Open message files read-only, never through a symlink (``ELOOP`` instead), without
#: blocking on a FIFO someone dropped into the Maildir, and not inherited by children.
_MESSAGE_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

#: ``open(O_NOFOLLOW)`` of a symlink fails with ELOOP on Linux, EMLINK on FreeBSD.
_SYMLINK_ERRNOS = frozenset({errno.ELOOP, errno.EMLINK})

#: Errors from fsync on a directory that mean "not supported here", not "failed".
_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF})

#: The message directories, in scan order: ``cur/`` first, so a message moved from
#: ``new/`` to ``cur/`` during the scan is missed (and seen next session) rather than
#: listed twice.
_SCAN_DIRS = ("cur", "new")

#: A usable unique-id: 1 to 70 characters in 0x21 to 0x7E (RFC 1939 section 7).
_UID_SAFE_RE = re.compile(rf"[\x21-\x7e]{{1,{_MAX_UID_LENGTH}}}")

#: Random octets in the name a duplicate is renamed to (``R<hex>``).  The pid and the
#: counter already make it unique within this host; 32 random bits guard against a
#: pid reused by another server process on a host sharing the Maildir (NFS), as
#: Dovecot's ``R`` field does.
_RENAME_RANDOM_BYTES = 4

#: The microseconds field of a standard unique name, ``<sec>.M<usec>P<pid>...``.
_USEC_RE = re.compile(r"M([0-9]{1,6})(?![0-9])")


# --------------------------------------------------------------------------------------
# File names


#: Numbers the unique names this process makes (the ``Q<n>`` field).
_delivery_counter = itertools.count(1)


def _host_part() -> str:
    """Return this host's name escaped for a Maildir unique name."""
    host = socket.gethostname() or "localhost"
    return host.replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")


def _unique_name(seconds: int, usec: int, extra: str = "") -> str:
    """Return a standard unique name, ``<seconds>.M<usec>P<pid>Q<counter><extra>.<host>``."""
    return f"{seconds}.M{usec}P{os.getpid()}Q{next(_delivery_counter)}{extra}.{_host_part()}"


def _base_name(name: str) -> str:
    """Return the part of a Maildir file name before the ``:`` info part."""
    base = name.partition(":")[0]
    # A name starting with ":" has no base; fall back to the whole name.
    return base or name


def _is_uid_safe(text: str) -> bool:
    return _UID_SAFE_RE.fullmatch(text) is not None


def _name_bytes(name: str) -> bytes:
    """Return the bytes of a file name as the file system stores them."""
    try:
        return os.fsencode(name)
    except UnicodeEncodeError:  # not a name from the file system; still be stable
        return name.encode("utf-8", "surrogatepass")


def _uid_for_base(base: str) -> str:
    """Return the UIDL unique-id for a message with this base name (RFC 1939 section 7).

    The base name itself when it is 1 to 70 characters in 0x21 to 0x7E (what Dovecot's
    ``%g`` gives for Maildir), else the 40-digit hex SHA-1 of its bytes.
    """
    if _is_uid_safe(base):
        return base
    return hashlib.sha1(_name_bytes(base)).hexdigest()


def _size_tag(base: str, letter: str = "W") -> int | None:
    """Return the ``W=<n>`` (CRLF size) of a Dovecot base name, if there is one.

    With ``letter="S"``, the ``S=<n>`` (size of the file as stored) instead.
    """
    start = base.find(f",{letter}=")
    if start < 0:
        return None
    start += 3
    end = base.find(",", start)
    digits = base[start:] if end < 0 else base[start:end]
    if digits.isascii() and digits.isdigit() and len(digits) <= _MAX_TAG_DIGITS:
        return int(digits)
    return None


def _size_tags_fit(base: str, wire_size: int, stored_size: int) -> bool:
    """Whether the ``W=`` size ``wire_size`` can be right for a file of ``stored_size``.

    Line ends only grow on the wire (LF becomes CRLF, and a CRLF may be added at the
    end), so the wire size lies between the stored size and twice it plus 2; and an
    ``S=`` tag must be the stored size itself.  A wrong tag (a broken delivery agent,
    a hand-renamed file) would otherwise reach LIST and RETR (RFC 1939 section 11).
    """
    stored_tag = _size_tag(base, "S")
    if stored_tag is not None and stored_tag != stored_size:
        return False
    return stored_size <= wire_size <= 2 * stored_size + 2


def _order_key(base: str) -> tuple[int, int, int, str]:
    """Return the delivery-order sort key of a base name.

    Names with a leading ``<seconds>.`` come first, by seconds, then by the
    ``M<microseconds>`` field of the second part if present, then by base name.
    """
    head, dot, rest = base.partition(".")
    if not (dot and head.isascii() and head.isdigit()):
        return (1, 0, 0, base)
    match = _USEC_RE.search(rest.partition(".")[0])
    usec = int(match.group(1)) if match else 0
    return (0, int(head), usec, base)


# --------------------------------------------------------------------------------------
# Scanning (runs in a worker thread, or inline for small cached maildrops)

#: Identity of a file's contents for the size cache: (st_dev, st_ino, st_size,
#: st_mtime_ns).  Maildir messages are never rewritten in place, and a rename (new/ to
#: cur/, flag change) keeps all four.
_Stamp = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class _Location:
    """Where a listed message was: ``MessageInfo.key`` of a Maildir message.

    ``file_id`` (inode, mtime, size) tells the message apart from another file that
    takes its name or its base name later, even one that reuses its freed inode: a
    message that was moved or renamed is looked for by base name *and* ``file_id``,
    which a rename keeps.
    """

    subdir: str
    name: str
    base: str
    file_id: _FileId


#: What identifies a message file across renames: (st_ino, st_mtime_ns, st_size).
#: The inode alone is not enough: a file made right after an unlink often gets the
#: freed one; and a restore that keeps timestamps may also repeat the mtime.
_FileId = tuple[int, int, int]


def _file_id(st: os.stat_result) -> _FileId:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


#: A message of a listing with its delivery-order key (see :func:`_order_key`).
_Listed = tuple[tuple[int, int, int, str], MessageInfo]


#: ``cur/`` and ``new/`` as :func:`_dir_stamp` saw them: any entry added, removed or
#: renamed in either changes it.
_DirStamp = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Known:
    """What the store remembers about a maildrop between sessions."""

    listing: Mapping[tuple[str, str], _Listed]  # (subdir, file name) -> last listing
    sizes: Mapping[str, tuple[_Stamp, int]]  # base name -> (stamp, wire size)
    messages: tuple[MessageInfo, ...] = ()  # the listing, in order
    #: Whether every size came from a ``W=`` tag, so no file needs a look of its own.
    sized_by_name: bool = False
    #: The directories when they were listed, if the listing may be reused as long as
    #: they stay so (settled, and every size from a name); else None: list again.
    dirs: _DirStamp | None = None


def _dir_stamp(maildir: str) -> tuple[_DirStamp, bool]:
    """Stat ``cur/`` and ``new/``; return their stamp and whether it is settled.

    Settled means the last change is at least :data:`_SETTLED_NS` old, so a change
    after now cannot leave the stamp as it is.
    """
    stamp: list[int] = []
    newest = 0
    for subdir in _SCAN_DIRS:
        st = os.stat(os.path.join(maildir, subdir))
        stamp += (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    return tuple(stamp), time.time_ns() - newest >= _SETTLED_NS


class _InlineScanAborted(Exception):
    """An inline scan found work too big for the event loop."""


def _plain_maildir(path: str) -> bool:
    """Return whether ``path``, ``path/cur`` and ``path/new`` are directories, not symlinks.

    Three ``lstat`` calls: cheap enough for the event loop.
    """
    try:
        return all(
            stat.S_ISDIR(os.lstat(directory).st_mode)
            for directory in (path, os.path.join(path, "cur"), os.path.join(path, "new"))
        )
    except OSError:
        return False


def _stamp(st: os.stat_result) -> _Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _measure(path: str) -> tuple[_Stamp, int] | None:
    """Read a message file and return its stamp and wire size (None: not a message)."""
    try:
        fd = os.open(path, _MESSAGE_OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in _SYMLINK_ERRNOS:
            return None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        counter = WireSizeCounter()
        remaining = st.st_size
        while remaining > 0:
            chunk = os.read(fd, min(READ_CHUNK_SIZE, remaining))
            if not chunk:
                break
            counter.feed(chunk)
            remaining -= len(chunk)
        return _stamp(st), counter.finish()
    finally:
        os.close(fd)


def _scan(
    maildir: str,
    known: _Known | None,
    trust_size_tags: bool,
    inline: bool,
    rename_duplicates: bool = True,
) -> tuple[tuple[MessageInfo, ...], _Known]:
    """List ``cur/`` and ``new/`` and size every message.

    Args:
        maildir: The Maildir path.
        known: The cache from the previous listing, or None.
        trust_size_tags: Use ``W=`` tags instead of reading files.
        inline: Running in the event loop: raise :class:`_InlineScanAborted` rather than
            list more than :data:`_INLINE_SCAN_LIMIT` files, read any file or rename a
            duplicate.
        rename_duplicates: Settle a second file with a listed base name (see
            :func:`_resolve_duplicate`) and list again; else leave it out.

    A message file the server is not allowed to read (``EACCES``, ``EPERM``) is left
    out with a warning: its size cannot be known, and one such file must not lock
    the user out of the others.  (A ``W=`` tag gives the size without reading; such
    a file is listed, and RETR of it is ``-ERR``.)

    Raises:
        OSError: a directory cannot be listed or a message cannot be read for any
            other reason (``EIO``, out of descriptors), which may be passing.
        _InlineScanAborted: see ``inline``.
    """
    old_sizes = known.sizes if known is not None else {}
    old_listing = known.listing if known is not None else {}
    sizes: dict[str, tuple[_Stamp, int]] = {}
    listing: dict[tuple[str, str], _Listed] = {}
    seen: dict[str, _Found] = {}  # uid -> the file listed under it
    duplicates: list[tuple[_Found, _Found]] = []  # (a file, its twin listed under its uid)
    sized_by_name = True  # every size came from a W= tag, none from the file
    for subdir in _SCAN_DIRS:
        directory = os.path.join(maildir, subdir)
        with os.scandir(directory) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                if inline and len(listing) >= _INLINE_SCAN_LIMIT:
                    raise _InlineScanAborted
                # Parsing names costs more than the system calls: reuse the last one.
                previous = old_listing.get((subdir, name))
                size: int | None
                if previous is not None:
                    order, info = previous
                    base, uid, size = order[3], info.uid, info.size
                    if not (trust_size_tags and _size_tag(base) is not None):
                        size = None
                else:
                    base = _base_name(name)
                    uid = _uid_for_base(base)
                    size = _size_tag(base) if trust_size_tags else None
                try:
                    # One lstat, even when the name gives the size: inode, mtime
                    # and size identify the message for the rest of the session.
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # gone since readdir
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                if size is not None and not _size_tags_fit(base, size, st.st_size):
                    logger.warning(
                        "Maildir %s: the size tags of %r do not fit its %d octets; "
                        "its size is measured instead",
                        maildir,
                        name,
                        st.st_size,
                    )
                    size = None
                found = _Found(subdir, name, entry.path)
                twin = seen.get(uid)
                if twin is not None:
                    if inline:
                        raise _InlineScanAborted
                    duplicates.append((found, twin))
                    continue
                if size is None:
                    sized_by_name = False
                    stamp = _stamp(st)
                    cached = old_sizes.get(base)
                    if cached is not None and cached[0] == stamp:
                        sizes[base] = cached
                        size = cached[1]
                    elif inline:
                        raise _InlineScanAborted
                    else:
                        try:
                            measured = _measure(entry.path)
                        except PermissionError as exc:
                            # One file the server may not read must not lock its
                            # user out of the rest; it stays, unlisted, until fixed.
                            logger.warning("Maildir %s: %s; left out", maildir, exc)
                            continue
                        if measured is None:  # vanished or replaced by a non-file
                            continue
                        sizes[base] = measured
                        size = measured[1]
                assert size is not None
                seen[uid] = found
                file_id = _file_id(st)
                if (
                    previous is not None
                    and previous[1].size == size
                    and isinstance(previous[1].key, _Location)
                    and previous[1].key.file_id == file_id
                ):
                    listing[subdir, name] = previous
                else:
                    info = MessageInfo(uid, size, _Location(subdir, name, base, file_id))
                    listing[subdir, name] = (_order_key(base), info)
    renamed = False
    known_ids = _listed_file_ids(known) if duplicates else {}
    for found, twin in duplicates:
        if _same_file(found.path, twin.path):
            # A hard link is one message: listed once, and both names left alone.
            # Another program renaming with link() then unlink() passes through
            # this state, and removing either name here could lose the message.
            # A DELE removes every name of it in cur/ and new/ (see remove()).
            logger.info("Maildir %s: %r is another name of %r", maildir, found.path, twin.path)
        elif rename_duplicates and _resolve_duplicate(found, twin, known_ids):
            renamed = True
        else:
            logger.warning("Maildir %s: duplicate file %r left out", maildir, found.path)
    if renamed:  # list the new names like any other
        return _scan(maildir, known, trust_size_tags, inline, rename_duplicates=False)
    ordered = sorted(listing.values(), key=_listed_order)
    messages = tuple(info for _, info in ordered)
    return messages, _Known(listing, sizes, messages, sized_by_name=sized_by_name)


@dataclass(frozen=True, slots=True)
class _Found:
    """A message file found by a scan."""

    subdir: str
    name: str
    path: str


def _listed_file_ids(known: _Known | None) -> dict[str, _FileId]:
    """Unique-id -> file id of each message of the previous listing."""
    if known is None:
        return {}
    return {
        info.uid: info.key.file_id for info in known.messages if isinstance(info.key, _Location)
    }


def _same_file(path: str, other: str) -> bool:
    """Whether two paths name one file (hard links); False if either is gone."""
    try:
        st, other_st = os.lstat(path), os.lstat(other)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (other_st.st_dev, other_st.st_ino)


def _resolve_duplicate(found: _Found, twin: _Found, listed_before: Mapping[str, _FileId]) -> bool:
    """Settle two files with one base name (``twin`` was listed under it); True if changed.

    Two different files (say ``new/X`` and ``cur/X:2,S``, left by a copy or a
    restore) would otherwise share a unique-id, so one of them could not be listed,
    and once the other was deleted it would appear under a unique-id the client has
    already seen: a client that leaves mail on the server would never fetch it (RFC
    1939 section 7: a unique-id is never reused for another message).  As Dovecot
    does, one of them is renamed in its directory to a fresh unique name (see
    :func:`_fresh_base`), so each has a stable unique-id of its own.  The one that
    keeps the name is the one clients may already know under it: the file the
    previous listing had under that unique-id (``listed_before``, unique-id -> file
    id), else the one that has been in the Maildir longer (the older ``ctime``,
    which a restore or copy cannot set), else ``twin``.

    Returns False, leaving both as they are, when either file is gone (another
    program renamed or removed it during the listing) or the rename fails.
    """
    try:
        st = os.lstat(found.path)
        twin_st = os.lstat(twin.path)
    except FileNotFoundError:
        return False
    if (st.st_dev, st.st_ino) == (twin_st.st_dev, twin_st.st_ino):
        return False  # linked since _same_file() looked: leave both
    known_id = listed_before.get(_uid_for_base(_base_name(found.name)))
    found_listed = _file_id(st) == known_id
    twin_listed = _file_id(twin_st) == known_id
    if found_listed != twin_listed:
        keep_found = found_listed
    else:
        keep_found = st.st_ctime_ns < twin_st.st_ctime_ns
    victim, keeper = (twin, found) if keep_found else (found, twin)
    return _rename_to_fresh(victim.path, keeper.path)


def _rename_to_fresh(path: str, keeper: str) -> bool:
    """Rename ``path`` to a fresh unique base name in its directory; True if done.

    The new name keeps the ``:2,...`` flags.  One atomic ``rename``: a crash leaves
    one name or the other, never both or neither.  The new name is unique (pid,
    counter, random), so nothing is replaced.
    """
    directory, name = os.path.split(path)
    base = _base_name(name)
    new_name = _fresh_base(base) + name[len(base) :]
    try:
        os.rename(path, os.path.join(directory, new_name))
    except OSError as exc:
        logger.error("Maildir: cannot rename duplicate %r: %s", path, exc)
        return False
    logger.warning(
        "Maildir: %r has the base name of %r; renamed to %r so both are listed",
        path,
        keeper,
        new_name,
    )
    return True


def _fresh_base(base: str) -> str:
    """Return a new unique base name for a message that had ``base``.

    The standard ``<seconds>.M<usec>P<pid>Q<counter>.<host>`` form, with the seconds
    and microseconds of ``base`` when it has them (so the delivery order holds) and
    its ``,S=``/``,W=`` tags.
    """
    kind, seconds, usec, _ = _order_key(base)
    if kind:  # not a standard name: take the time now
        seconds, usec = divmod(time.time_ns() // 1000, 1_000_000)
    last_part = base.rpartition(".")[2]
    comma = last_part.find(",")
    tags = last_part[comma:] if comma >= 0 else ""
    return _unique_name(seconds, usec, f"R{secrets.token_hex(_RENAME_RANDOM_BYTES)}") + tags


def _listed_order(listed: _Listed) -> tuple[tuple[int, int, int, str], str]:
    """Sort key of a listed message: delivery order, then the full file name."""
    order, info = listed
    assert isinstance(info.key, _Location)
    return order, info.key.name


def _locate(maildir: str, location: _Location) -> _Location | None:
    """Find where a listed message is now (after a move or rename), or None if gone.

    The file with its base name and its file id: another file that took the base
    name (a restored copy, say) is a different message.
    """
    for subdir in _SCAN_DIRS:
        with os.scandir(os.path.join(maildir, subdir)) as entries:
            for entry in entries:
                name = entry.name
                if (
                    not name.startswith(".")
                    and _base_name(name) == location.base
                    and entry.inode() == location.file_id[0]  # free: from readdir
                    and _entry_id(entry) == location.file_id
                ):
                    return _Location(subdir, name, location.base, location.file_id)
    return None


def _entry_id(entry: os.DirEntry[str]) -> _FileId | None:
    """The file id of a directory entry (one ``lstat``), or None if it is gone."""
    try:
        return _file_id(entry.stat(follow_symlinks=False))
    except FileNotFoundError:
        return None


def _is_file(path: str, file_id: _FileId) -> bool:
    """Whether ``path`` names the file ``file_id`` (not another that took its name)."""
    return _lstat_of(path, file_id) is not None


def _lstat_of(path: str, file_id: _FileId) -> os.stat_result | None:
    """``lstat(path)`` if ``path`` names the file ``file_id``, else None."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st if _file_id(st) == file_id else None


def _unlink_other_names(maildir: str, base: str, st: os.stat_result) -> set[str]:
    """Unlink the other names of the file ``st`` in ``cur/`` and ``new/`` with ``base``.

    For a DELE of a message that has a second name in the Maildir (a hard link):
    left alone, it would bring the message back.  Links elsewhere (a backup made
    with hard links) are not touched.  Returns the subdirectories changed.
    """
    touched: set[str] = set()
    for subdir in _SCAN_DIRS:
        with os.scandir(os.path.join(maildir, subdir)) as entries:
            for entry in entries:
                if entry.inode() != st.st_ino or _base_name(entry.name) != base:
                    continue
                try:
                    if entry.stat(follow_symlinks=False).st_dev == st.st_dev:
                        os.unlink(entry.path)
                        touched.add(subdir)
                        logger.info("Maildir %s: removed %r, another name", maildir, entry.path)
                except FileNotFoundError:
                    pass
    return touched


def _index_by_base(maildir: str) -> dict[tuple[str, _FileId], _Location]:
    """Map (base name, file id) of every file in ``cur/`` and ``new/`` to its location."""
    index: dict[tuple[str, _FileId], _Location] = {}
    for subdir in _SCAN_DIRS:
        try:
            entries = os.scandir(os.path.join(maildir, subdir))
        except FileNotFoundError:
            continue  # removed by another program, with all it held
        with entries:
            for entry in entries:
                file_id = None if entry.name.startswith(".") else _entry_id(entry)
                if file_id is not None:
                    base = _base_name(entry.name)
                    index[base, file_id] = _Location(subdir, entry.name, base, file_id)
    return index


def _has_seen_flag(name: str) -> bool:
    """Return whether a Maildir file name carries the ``S`` flag (``<base>:2,<flags>``)."""
    _, colon, info = name.partition(":")
    return bool(colon) and info.startswith("2,") and "S" in info[2:]


def _seen_name(name: str) -> str | None:
    """Return the file name in ``cur/`` with the ``S`` flag, or None if there is none.

    None when the name has the flag already, or an info part other than ``2,``
    (the experimental ``1,`` semantics, say), which is left as it is.
    """
    base, colon, info = name.partition(":")
    if not base:  # a name starting with ":" has no base (see _base_name)
        return None
    if not colon:
        return f"{base}:2,S"
    if not info.startswith("2,"):
        return None
    flags = info[2:]
    if "S" in flags:
        return None
    return f"{base}:2,{''.join(sorted(flags + 'S'))}"


def _fsync_dir(path: str) -> None:
    """Make the directory's entries (renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def _read_inline(fd: int, size: int) -> bytes:
    """Read ``size`` octets (fewer at EOF) from a small file, usually in one call."""
    data = os.read(fd, size)
    if len(data) == size or not data:
        return data
    parts = [data]
    remaining = size - len(data)
    while remaining > 0:
        chunk = os.read(fd, remaining)
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


# --------------------------------------------------------------------------------------
# The store


class MaildirStore(MailStore):
    """Maildrops kept as Maildirs under one root directory, ``<root>/<user>/``.

    Args:
        root: The directory holding one Maildir per user.  It must exist.
        create: Create a missing user Maildir (mode 0700, with ``cur``, ``new`` and
            ``tmp``) on first login; if False a missing Maildir is an error.
        trust_size_tags: Take a message's size from a Dovecot ``,W=<n>`` tag in its
            file name instead of reading the file.  Turn it off if mail is delivered
            by something that may write wrong tags: a wrong size breaks clients.
        fsync: fsync the Maildir directories after removing messages, so a crash
            right after QUIT cannot bring deleted messages back.
        size_cache_limit: Most messages (sizes, parsed names) to remember over all
            maildrops, and most users whose checked Maildir path is remembered.
        lock_wait: Seconds to keep trying when another session holds the lock
            before giving up with :class:`~trio_pop3.MailboxInUse` (Dovecot waits
            10 s); 0 gives up at once.
        lock: Take the exclusive maildrop lock for each session (RFC 1939 section
            4 asks for it).  With False, sessions of the same user run side by side,
            as with Dovecot's default ``pop3_lock_session = no``: the trade-off is
            that two sessions may both RETR and DELE the same message; the second
            QUIT finds it already removed, which counts as removed, so no message
            is lost or duplicated, but both clients may download it.  Use it only
            when clients really log in concurrently (several devices, load tests).
        mark_seen: At QUIT, give the messages the client retrieved with RETR and
            kept the ``S`` (seen) flag (:meth:`MaildirMailbox.mark_seen`), as
            Dovecot does, so IMAP clients of the same Maildir show them as read.
            Off leaves every file as it is, in ``new/`` if it was delivered there.

    Example::

        store = MaildirStore("/var/mail/pop3")
        mailbox = await store.open("alice")
        try:
            for message in await mailbox.list_messages():
                ...
        finally:
            await mailbox.close()
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        create: bool = True,
        trust_size_tags: bool = True,
        fsync: bool = True,
        size_cache_limit: int = SIZE_CACHE_LIMIT,
        lock_wait: float = 0.0,
        lock: bool = True,
        mark_seen: bool = True,
    ) -> None:
        self._root = os.path.abspath(os.fspath(root))
        self._create = create
        self._trust_size_tags = trust_size_tags
        self._fsync = fsync
        self._size_cache_limit = size_cache_limit
        self._lock_wait = lock_wait
        self._locking = lock
        self._mark_seen = mark_seen
        # Maildir path -> what the last listing learnt; least recently used first.
        self._known: collections.OrderedDict[str, _Known] = collections.OrderedDict()
        self._known_sizes = 0
        # User -> real Maildir path, for Maildirs checked and found free of symlinks:
        # later logins only lstat it and take the lock, without a thread.
        self._paths: dict[str, str] = {}

    @property
    def root(self) -> str:
        """The absolute path of the directory holding the users' Maildirs."""
        return self._root

    @property
    def mark_seen(self) -> bool:
        """Whether messages retrieved with RETR get the ``S`` flag at QUIT."""
        return self._mark_seen

    @property
    def fsync(self) -> bool:
        """Whether directories are fsynced after messages are removed."""
        return self._fsync

    async def open(self, user: str) -> MaildirMailbox:
        """Lock and open ``user``'s Maildir, creating it if allowed.

        Raises:
            MailboxInUse: another session (of any process) holds the lock.
            MailboxError: the user name is not usable as a directory name, the
                Maildir is missing (and ``create`` is off) or resolves outside the
                root (``[SYS/PERM]``), or a file-system error (``[SYS/TEMP]``).

        Cancellation:
            Checking (or creating) the Maildir, at the first login and whenever it
            changed, runs in :func:`trio.to_thread.run_sync`: a cancelled call waits
            for that thread to finish, and may even return the locked mailbox, in
            which case the cancellation takes effect at the caller's next
            checkpoint (and the caller must close it).  Waiting for a held lock
            (``lock_wait``) sleeps in steps of ``LOCK_RETRY_INTERVAL`` (0.1 s)
            and is cancelled at once.  When it raises, no lock is held.

        Error handling:
            File-system errors are logged (with the user name, never a password)
            and raised as :class:`~trio_pop3.MailboxError`; the ``OSError`` is its
            ``__cause__``.
        """
        if not is_safe_username(user):
            raise MailboxError("Invalid mailbox name.", ResponseCode.SYS_PERM)
        path = self._paths.get(user)
        checked_now = False
        if path is None or not _plain_maildir(path):
            path = await self._check_maildir(user)
            checked_now = True
        if not self._locking:
            return MaildirMailbox(self, path, None)
        deadline = trio.current_time() + self._lock_wait
        while True:
            # Opening the lock file and a non-blocking flock are quick: no thread.
            try:
                lock_fd = self._lock(path)
            except MailboxInUse:
                remaining = deadline - trio.current_time()
                if remaining <= 0:
                    raise
                await trio.sleep(min(LOCK_RETRY_INTERVAL, remaining))
                continue
            except OSError as exc:
                if not checked_now:
                    # Removed or replaced since it was checked: check it again.
                    path = await self._check_maildir(user)
                    checked_now = True
                    continue
                logger.error("Cannot lock the Maildir of %r: %s", user, exc)
                raise MailboxError("Cannot open mailbox.") from exc
            return MaildirMailbox(self, path, lock_fd)

    async def _check_maildir(self, user: str) -> str:
        """Check (or create) a user's Maildir in a thread; return its real path.

        A Maildir reached without any symlink is remembered: later logins only check
        with :func:`_plain_maildir` that it still has no symlink, and take the lock.
        """
        self._paths.pop(user, None)
        path, plain = await trio.to_thread.run_sync(self._open_sync, user)
        if plain:
            if len(self._paths) >= self._size_cache_limit:
                self._paths.clear()
            self._paths[user] = path
        return path

    def _forget_path(self, path: str) -> None:
        """Check the Maildir at ``path`` again at the next login (it changed)."""
        for user in [user for user, known in self._paths.items() if known == path]:
            del self._paths[user]

    # -- helpers used by MaildirMailbox -------------------------------------------------

    def _open_sync(self, user: str) -> tuple[str, bool]:
        """Check or create the Maildir.

        Returns:
            Its real path, and whether it was reached without following a symlink
            (the user directory, ``cur`` and ``new`` are plain directories).
        """
        try:
            real_root = os.path.realpath(self._root)
            user_dir = os.path.join(self._root, user)
            if not os.path.lexists(user_dir):
                if not self._create:
                    raise MailboxError("No such mailbox.", ResponseCode.SYS_PERM)
                try:
                    os.mkdir(user_dir, _DIR_MODE)
                except FileExistsError:  # a concurrent first login
                    pass
            maildir = self._checked_dir(user_dir, real_root, user)
            for subdir in ("cur", "new", "tmp"):
                sub_path = os.path.join(maildir, subdir)
                if not os.path.lexists(sub_path):
                    if not self._create:
                        raise MailboxError("Mailbox is damaged.", ResponseCode.SYS_PERM)
                    try:
                        os.mkdir(sub_path, _DIR_MODE)
                    except FileExistsError:
                        pass
                real_sub = self._checked_dir(sub_path, real_root, user)
                if real_sub != os.path.join(maildir, subdir):
                    # cur/, new/ and tmp/ must be the Maildir's own: a symlink to another
                    # user's cur/ would serve (and delete) that user's mail under this
                    # user's lock.
                    logger.error("Maildir of %r: %s is a symlink", user, sub_path)
                    raise MailboxError("Mailbox is not accessible.", ResponseCode.SYS_PERM)
            plain = maildir == os.path.join(real_root, user) and _plain_maildir(maildir)
            return maildir, plain
        except MailboxError:
            raise
        except OSError as exc:
            logger.error("Cannot open the Maildir of %r: %s", user, exc)
            raise MailboxError("Cannot open mailbox.") from exc

    @staticmethod
    def _checked_dir(path: str, real_root: str, user: str) -> str:
        """Return the real path of a Maildir directory, refusing one outside the root."""
        real = os.path.realpath(path)
        inside = real != real_root and os.path.commonpath([real_root, real]) == real_root
        if not inside:
            logger.error("Maildir of %r: %s resolves outside the root", user, path)
            raise MailboxError("Mailbox is not accessible.", ResponseCode.SYS_PERM)
        if not os.path.isdir(real):
            logger.error("Maildir of %r: %s is not a directory", user, path)
            raise MailboxError("Mailbox is damaged.", ResponseCode.SYS_PERM)
        return real

    @staticmethod
    def _lock(maildir: str) -> int:
        """Open the lock file and take the exclusive lock; return its descriptor."""
        fd = os.open(
            os.path.join(maildir, LOCK_FILE_NAME),
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            _FILE_MODE,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MailboxInUse() from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _get_known(self, maildir: str) -> _Known | None:
        known = self._known.get(maildir)
        if known is not None:
            self._known.move_to_end(maildir)
        return known

    def _set_known(self, maildir: str, known: _Known) -> None:
        old = self._known.pop(maildir, None)
        if old is not None:
            self._known_sizes -= len(old.listing)
        self._known[maildir] = known
        self._known_sizes += len(known.listing)
        while self._known_sizes > self._size_cache_limit and len(self._known) > 1:
            _, evicted = self._known.popitem(last=False)
            self._known_sizes -= len(evicted.listing)

    async def _snapshot(self, maildir: str) -> tuple[MessageInfo, ...]:
        known = self._get_known(maildir)
        trust = self._trust_size_tags
        try:
            dirs, settled = _dir_stamp(maildir)
            if known is not None and known.dirs == dirs:
                # Nothing was added, removed or renamed since the last listing.
                return known.messages
            try:
                if known is None or len(known.listing) > _INLINE_SCAN_LIMIT:
                    raise _InlineScanAborted
                messages, new_known = _scan(maildir, known, trust, inline=True)
            except _InlineScanAborted:
                messages, new_known = await trio.to_thread.run_sync(
                    _scan, maildir, known, trust, False
                )
        except OSError as exc:
            logger.error("Cannot list Maildir %s: %s", maildir, exc)
            self._forget_path(maildir)  # cur/ or new/ gone?  Check again next login.
            raise MailboxError("Cannot list mailbox.") from exc
        if settled and new_known.sized_by_name:
            # Taken before listing, so a change during the listing shows as a
            # different stamp next time.  Files sized by reading them are not
            # covered: they are looked at again at every listing, as before.
            new_known = dataclasses.replace(new_known, dirs=dirs)
        self._set_known(maildir, new_known)
        return messages


# --------------------------------------------------------------------------------------
# The open maildrop


def _message_gone() -> MailboxError:
    """A listed message that another program removed since the listing.

    No response code: the condition is permanent, and not the system's (Dovecot
    answers ``-ERR Message N expunged.``).
    """
    return MailboxError("Message no longer exists.", None)


class MaildirMailbox(Mailbox):
    """One session's locked view of a Maildir; made by :meth:`MaildirStore.open`.

    Resource handling:
        Holds the maildrop lock (an open file descriptor) until :meth:`close`,
        unless the store was made with ``lock=False`` (``lock_fd`` None).
    """

    __slots__ = ("_by_uid", "_closed", "_lock_fd", "_messages", "_moved", "_path", "_store")

    def __init__(self, store: MaildirStore, path: str, lock_fd: int | None) -> None:
        self._store = store
        self._path = path
        self._lock_fd = lock_fd
        self._closed = False
        self._messages: tuple[MessageInfo, ...] | None = None
        # Both made when first needed: an idle session holds neither.
        self._by_uid: dict[str, object] | None = None
        # Messages found moved or renamed since the listing: base name -> location.
        self._moved: dict[str, _Location] | None = None

    @property
    def path(self) -> str:
        """The real path of the Maildir."""
        return self._path

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the lock is released)."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise MailboxError("Mailbox is closed.")

    def _location(self, message: MessageInfo) -> _Location:
        key = message.key
        by_uid = self._by_uid
        if by_uid is None:
            # Built on the first read only: an idle session never pays for it.
            by_uid = {info.uid: info.key for info in self._messages or ()}
            if self._messages is not None:
                self._by_uid = by_uid
        if not isinstance(key, _Location) or by_uid.get(message.uid) != key:
            raise ValueError(f"message {message.uid!r} is not from this maildrop listing")
        return key if self._moved is None else self._moved.get(key.base, key)

    async def list_messages(self) -> Sequence[MessageInfo]:
        """Return the snapshot of ``cur/`` and ``new/``, in delivery order.

        The first call lists the Maildir; later calls return the same snapshot.
        Dot files and anything not a regular file (symlinks included) are skipped.

        The store reuses its last listing of this Maildir, after only a ``stat`` of
        ``cur/`` and ``new/``, when every message was sized by its ``W=`` tag and
        neither directory changed since (their last change was already a second
        old then, past the granularity of file-system timestamps).  Any delivery,
        removal or flag change renames or adds an entry and so forces a new listing.

        Raises:
            MailboxError: a directory cannot be listed or a message cannot be read
                (``[SYS/TEMP]``, logged; the Maildir is checked again at the next
                login), or the mailbox is closed.

        Cancellation:
            A small maildrop listed before, with all sizes known, is listed in the
            event loop without a checkpoint.  Otherwise the listing runs in
            :func:`trio.to_thread.run_sync`: a cancelled call waits for the thread
            to finish, returns its listing (kept, so a later call returns it
            without listing again), and the cancellation takes effect at the
            caller's next checkpoint.
        """
        self._check_open()
        if self._messages is None:
            messages = await self._store._snapshot(self._path)
            self._messages = messages
        return self._messages

    async def read_message(self, message: MessageInfo) -> AsyncIterator[bytes]:
        """Yield the stored bytes of ``message`` in chunks of 256 KiB.

        The file is found even if another program moved it to ``cur/`` or changed
        its flags since the listing.  A message of at most 64 KiB is read in the
        event loop with one ``os.read``; larger ones chunk by chunk in a worker
        thread, never whole in memory.

        Raises:
            MailboxError: the message vanished, is not a regular file (a symlink is
                refused), or cannot be read (``[SYS/TEMP]``, logged), or the mailbox
                is closed.
            ValueError: ``message`` is not from this mailbox's listing.

        Resource handling:
            The file is open only while the iterator runs; it is closed without
            awaiting when the iterator finishes, fails or is closed early.

        Cancellation:
            A read in a worker thread (messages over 64 KiB, and the search for a
            moved file) is not interrupted: a cancelled ``__anext__()`` waits for
            that chunk and yields it, and the cancellation takes effect at the
            caller's next checkpoint.
        """
        self._check_open()
        location = self._location(message)
        fd, size = await self._open_message(location)
        try:
            try:
                data = _read_inline(fd, size) if size <= INLINE_READ_LIMIT else None
            except OSError as exc:
                raise self._read_error(location, exc) from exc
            if data is not None:
                if len(data) < size:
                    raise self._truncated(location, size, len(data))
                if data:
                    yield data
                return
            remaining = size
            while remaining > 0:
                try:
                    chunk = await trio.to_thread.run_sync(
                        os.read, fd, min(READ_CHUNK_SIZE, remaining)
                    )
                except OSError as exc:
                    raise self._read_error(location, exc) from exc
                if not chunk:
                    raise self._truncated(location, size, size - remaining)
                remaining -= len(chunk)
                yield chunk
        finally:
            os.close(fd)

    def _read_error(self, location: _Location, exc: OSError) -> MailboxError:
        logger.error("Maildir %s: cannot read %s: %s", self._path, location.name, exc)
        return MailboxError("Cannot read message.")

    def _truncated(self, location: _Location, size: int, read: int) -> MailboxError:
        """Another program cut the file short while it was read: never send it as whole.

        Raised before ``+OK``, it is answered ``-ERR``; after part of the message
        went out, the connection is closed without the terminating ``.``, so the
        client cannot take the part for the message.
        """
        logger.error(
            "Maildir %s: %s was truncated while it was read (%d of %d octets)",
            self._path,
            location.name,
            read,
            size,
        )
        return MailboxError("Message changed while it was read.")

    async def _open_message(self, location: _Location) -> tuple[int, int]:
        """Open a listed message's file, following it if it was moved or renamed.

        Returns:
            The file descriptor and the file's size.
        """
        path = os.path.join(self._path, location.subdir, location.name)
        try:
            opened = self._open_regular(path, location.file_id)
        except FileNotFoundError:
            try:
                moved, name_taken = await trio.to_thread.run_sync(
                    lambda: (_locate(self._path, location), os.path.lexists(path))
                )
                if moved is None:
                    if name_taken:  # by another file, or this one rewritten
                        raise MailboxError("Message changed since the listing.", None)
                    raise _message_gone() from None
                if self._moved is None:
                    self._moved = {}
                self._moved[location.base] = moved
                moved_path = os.path.join(self._path, moved.subdir, moved.name)
                opened = self._open_regular(moved_path, location.file_id)
            except FileNotFoundError:
                raise _message_gone() from None
            except OSError as exc:
                raise self._read_error(location, exc) from exc
        except OSError as exc:
            raise self._read_error(location, exc) from exc
        return opened

    @staticmethod
    def _open_regular(path: str, file_id: _FileId) -> tuple[int, int]:
        """Open ``path`` for reading if it is the regular file ``file_id`` (no symlink).

        Returns:
            The file descriptor and the file's size.

        Raises:
            FileNotFoundError: no such file, or another file than ``file_id`` (the
                listed message was moved or removed, and another took its name).
            MailboxError: it is a symlink or not a regular file.
        """
        try:
            fd = os.open(path, _MESSAGE_OPEN_FLAGS)
        except OSError as exc:
            if exc.errno in _SYMLINK_ERRNOS:
                logger.error("Maildir message %s is a symlink: refused", path)
                raise MailboxError("Cannot read message.") from exc
            raise
        try:
            st = os.fstat(fd)
            if _file_id(st) != file_id:
                raise FileNotFoundError(errno.ENOENT, "another file took the name", path)
            if not stat.S_ISREG(st.st_mode):
                logger.error("Maildir message %s is not a regular file: refused", path)
                raise MailboxError("Cannot read message.")
        except BaseException:
            os.close(fd)
            raise
        return fd, st.st_size

    async def remove(self, messages: Sequence[MessageInfo]) -> None:
        """Unlink the files of ``messages``, then fsync the directories.

        A message another program already removed counts as removed; one it moved
        to ``cur/`` or renamed is found by its base name, inode, mtime and size.
        Other names of a removed file (hard links) in ``cur/`` and ``new/`` with its
        base name are removed too, so the message does not come back.  A file
        rewritten in place since the listing is not the message the client marked:
        it is kept, and counts as not removed.  Every message is tried even if
        some fail.  No other file is touched.

        Raises:
            MailboxError: some files could not be removed (``[SYS/TEMP]`` "Some
                deleted messages were not removed."; the others were), or all were
                removed but a directory could not be fsynced (``[SYS/TEMP]``, saying
                so).  Each failure is logged.  Also when the mailbox is closed
                (nothing is removed).
            ValueError: a message is not from this mailbox's listing (nothing is
                removed).

        Cancellation:
            The unlinks and fsyncs run in one call of
            :func:`trio.to_thread.run_sync`, which is not interrupted: a cancelled
            call (the cleanup deadline of QUIT passed) waits until every file was
            tried and the directories were fsynced, then returns or raises its
            :class:`~trio_pop3.MailboxError` as usual; the cancellation takes effect
            at the caller's next checkpoint.
        """
        self._check_open()
        locations = [self._location(message) for message in messages]
        if not locations:
            return
        failures, unsynced = await trio.to_thread.run_sync(self._remove_sync, locations)
        if failures:
            raise MailboxError("Some deleted messages were not removed.", ResponseCode.SYS_TEMP)
        if unsynced:
            # Every file is gone, but a crash could still bring some back.
            raise MailboxError(
                "Deleted messages were removed, but the removal may not survive a crash.",
                ResponseCode.SYS_TEMP,
            )

    def _remove_sync(self, locations: Sequence[_Location]) -> tuple[int, int]:
        """Unlink the files, then fsync their directories (errors are logged).

        Returns:
            How many files could not be removed, and how many directories could not
            be fsynced.
        """
        failures = 0
        touched: set[str] = set()
        index: dict[tuple[str, _FileId], _Location] | None = None  # built on demand
        for location in locations:
            try:
                path = os.path.join(self._path, location.subdir, location.name)
                st = _lstat_of(path, location.file_id)
                if st is not None:
                    try:
                        os.unlink(path)
                        touched.add(location.subdir)
                        if st.st_nlink > 1:
                            touched |= _unlink_other_names(self._path, location.base, st)
                        continue
                    except FileNotFoundError:
                        pass
                # Moved to cur/ or renamed by another program since?  If it cannot
                # be found, someone else removed it: that counts as removed.
                if index is None:
                    index = _index_by_base(self._path)
                current = index.get((location.base, location.file_id))
                if current is None:
                    if os.path.lexists(path):
                        # Rewritten in place or replaced since the listing: what the
                        # client marked is not what is there now, so it stays, and
                        # QUIT says so (RFC 1939 section 6).
                        failures += 1
                        logger.warning(
                            "Maildir %s: %s changed since it was listed; not removed",
                            self._path,
                            location.name,
                        )
                    continue
                try:
                    # (It was the file when the index was made, a moment ago.)
                    os.unlink(os.path.join(self._path, current.subdir, current.name))
                    touched.add(current.subdir)
                except FileNotFoundError:
                    pass
            except OSError as exc:
                failures += 1
                logger.error("Maildir %s: cannot remove %s: %s", self._path, location.name, exc)
        unsynced = 0
        if self._store.fsync:
            for subdir in sorted(touched):
                try:
                    _fsync_dir(os.path.join(self._path, subdir))
                except OSError as exc:
                    unsynced += 1
                    logger.error("Maildir %s: cannot fsync %s/: %s", self._path, subdir, exc)
        return failures, unsynced

    def seen(self, message: MessageInfo) -> bool:
        """Return whether the listed file name of ``message`` has the ``S`` flag.

        Raises:
            ValueError: ``message`` is not from this mailbox's listing.
        """
        return _has_seen_flag(self._location(message).name)

    async def mark_seen(self, messages: Sequence[MessageInfo]) -> None:
        """Give ``messages`` the Maildir ``S`` (seen) flag, as Dovecot does after RETR.

        ``new/<base>`` becomes ``cur/<base>:2,S``; ``cur/<base>:2,<flags>`` gains
        ``S`` among its flags, which stay in ASCII order.  The base name, and so the
        unique-id, does not change.  A message that already has the flag costs
        nothing; one another program moved is found by its base name and file id;
        one that is gone, or whose new name is taken already, is left alone.  A name
        with any other info part than ``2,`` is not touched.  Nothing happens when the store
        was made with ``mark_seen=False``.

        Error handling:
            Failures are logged, never raised: the flag is a courtesy to other mail
            clients.  ValueError: a message is not from this mailbox's listing.

        Cancellation:
            The renames run in one call of :func:`trio.to_thread.run_sync`, which
            is not interrupted; each rename is atomic.
        """
        self._check_open()
        if not self._store.mark_seen:
            return
        locations = [self._location(message) for message in messages]
        unseen = [location for location in locations if _seen_name(location.name)]
        if unseen:
            await trio.to_thread.run_sync(self._mark_seen_sync, unseen)

    def _mark_seen_sync(self, locations: Sequence[_Location]) -> None:
        for location in locations:
            current: _Location | None = location
            for _ in range(2):  # the listed name, then where it was moved to
                assert current is not None
                seen_name = _seen_name(current.name)
                if seen_name is None:  # flagged already, or not ours to change
                    break
                source = os.path.join(self._path, current.subdir, current.name)
                target = os.path.join(self._path, "cur", seen_name)
                try:
                    if _is_file(source, location.file_id):
                        # rename() would replace a file already under that name.
                        if not os.path.lexists(target):
                            os.rename(source, target)
                        break
                except FileNotFoundError:
                    pass  # moved meanwhile: look for it
                except OSError as exc:
                    logger.error("Maildir %s: cannot flag %s seen: %s", self._path, source, exc)
                    break
                current = _locate(self._path, location)
                if current is None:  # removed by another program
                    break

    async def close(self) -> None:
        """Release the maildrop lock.  Calling it again does nothing.

        Cancellation:
            Never awaits, so it releases the lock even when called in a cancelled
            scope; it is not a checkpoint.

        Error handling:
            Never raises: a failed ``flock(LOCK_UN)`` is ignored, as closing the
            descriptor releases the lock anyway.
        """
        self._closed = True
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:  # closing the descriptor below releases it anyway
            pass
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------
# Delivery


def deliver(
    maildir_path: str | os.PathLike[str],
    message_bytes: bytes,
    *,
    size_tags: bool = False,
    fsync: bool = True,
) -> str:
    """Deliver a message into a Maildir the standard way; return its file name.

    The message is written to ``tmp/<name>`` (mode 0600), then linked into
    ``new/<name>``, so a reader never sees a partial message.  ``<name>`` is the
    standard unique name ``<seconds>.M<usec>P<pid>Q<counter>.<host>``.  Missing
    ``cur``/``new``/``tmp`` directories are created.  This is a blocking function, for
    tests, the command line and examples; from trio, call it with
    :func:`trio.to_thread.run_sync`.

    Args:
        maildir_path: The Maildir (the directory holding ``new/``).
        message_bytes: The message, with LF or CRLF line ends.
        size_tags: Append Dovecot's ``,S=<octets>,W=<CRLF octets>`` to the name.
        fsync: Make the message durable before returning.

    Returns:
        The file name in ``new/``.

    Raises:
        OSError: a directory cannot be created, or the message cannot be written,
            fsynced or linked into ``new/`` (``FileExistsError`` should its unique
            name already exist): nothing is delivered, and a file written to
            ``tmp/`` is removed.  If only the final fsync of ``new/`` fails, the
            message has been delivered but may not survive a crash.

    Cancellation:
        Blocking and synchronous: no checkpoint.  Through
        :func:`trio.to_thread.run_sync` it runs to completion even when the call is
        cancelled.

    Example::

        deliver("/var/mail/pop3/alice", b"Subject: hi\\n\\nHello\\n")
    """
    path = os.fspath(maildir_path)
    for subdir in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, subdir), _DIR_MODE, exist_ok=True)
    usec_total = time.time_ns() // 1000
    seconds, usec = divmod(usec_total, 1_000_000)
    name = _unique_name(seconds, usec)
    if size_tags:
        name += f",S={len(message_bytes)},W={wire_size(message_bytes)}"
    tmp_path = os.path.join(path, "tmp", name)
    new_path = os.path.join(path, "new", name)
    fd = os.open(
        tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE
    )
    try:
        try:
            os.fchmod(fd, _FILE_MODE)  # whatever the umask
            view = memoryview(message_bytes)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        # link() rather than rename(): it never replaces an existing message.
        os.link(tmp_path, new_path)
    finally:
        os.unlink(tmp_path)
    if fsync:
        _fsync_dir(os.path.join(path, "new"))
    return name
