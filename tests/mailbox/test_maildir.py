"""Tests for the Maildir store: layout, lock, snapshot, UIDs, sizes, reading, removal."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings, strategies as st
from pop3_support import memory_session

from trio_pop3._errors import MailboxError, MailboxInUse, ResponseCode
from trio_pop3._proto._wire import wire_size
from trio_pop3.mailbox import MailboxHandler, MemoryAuthenticator, _maildir
from trio_pop3.mailbox._base import MessageInfo
from trio_pop3.mailbox._maildir import (
    INLINE_READ_LIMIT,
    LOCK_FILE_NAME,
    READ_CHUNK_SIZE,
    MaildirMailbox,
    MaildirStore,
    deliver,
)

#: The checkout holding ``trio_pop3``, for the subprocess's PYTHONPATH.
PROJECT_DIR = str(Path(_maildir.__file__).resolve().parents[2])

#: How long the lock-holding subprocess may take to start (imports trio).
SUBPROCESS_START_TIMEOUT = 20.0

UID_RE = re.compile(r"[\x21-\x7e]{1,70}")

MESSAGES = {
    "lf": b"Subject: lf\n\nline one\n.dotted\nline three\n",
    "crlf": b"Subject: crlf\r\n\r\nline one\r\nline two\r\n",
    "no-final-newline": b"Subject: tail\n\nno newline at the end",
    "mixed-and-lone-cr": b"A: b\r\n\nx\ry\n\r\nz\r",
    "empty": b"",
}


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "mail"
    path.mkdir()
    return path


@pytest.fixture
def store(root: Path) -> MaildirStore:
    return MaildirStore(root, fsync=False)


def make_maildir(root: Path, user: str = "alice") -> Path:
    maildir = root / user
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    return maildir


def put(maildir: Path, subdir: str, name: str, data: bytes = b"Subject: x\n\nbody\n") -> Path:
    path = maildir / subdir / name
    path.write_bytes(data)
    return path


def wait_for_newer_ctime(path: Path) -> None:
    """Return once a file made now gets a later ctime than ``path`` has.

    File-system timestamps tick coarsely (a jiffy), so two files made one after the
    other may share a ctime; this spins on a probe file for at most a second.
    """
    probe = path.with_name(".ctime-probe")
    deadline = time.monotonic() + 1.0
    try:
        while True:
            probe.touch()
            if probe.stat().st_ctime_ns > path.stat().st_ctime_ns:
                return
            assert time.monotonic() < deadline, "the file-system clock did not advance"
    finally:
        probe.unlink(missing_ok=True)


def write_raw_name(maildir: Path, name: bytes) -> None:
    """Create a message whose file name is not valid UTF-8."""
    with open(os.path.join(os.fsencode(maildir), b"new", name), "wb") as file:
        file.write(b"Subject: raw\n\nx\n")


async def read_all(mailbox: MaildirMailbox, message: MessageInfo) -> list[bytes]:
    chunks = []
    async for chunk in mailbox.read_message(message):
        chunks.append(chunk)
    return chunks


async def snapshot(store: MaildirStore, user: str = "alice") -> list[MessageInfo]:
    """List a maildrop in a session of its own."""
    mailbox = await store.open(user)
    try:
        return list(await mailbox.list_messages())
    finally:
        await mailbox.close()


class Counter:
    """Wrap a callable and count the calls."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.func(*args, **kwargs)


@pytest.fixture
def thread_calls(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Count trio.to_thread.run_sync calls."""
    counter = Counter(trio.to_thread.run_sync)
    monkeypatch.setattr(trio.to_thread, "run_sync", counter)
    return counter


# -- opening ---------------------------------------------------------------------------


async def test_open_creates_private_maildir(root: Path, store: MaildirStore) -> None:
    mailbox = await store.open("alice")
    try:
        for sub in ("", "cur", "new", "tmp"):
            mode = (root / "alice" / sub).stat().st_mode
            assert stat.S_ISDIR(mode)
            assert stat.S_IMODE(mode) == 0o700
        assert (root / "alice" / LOCK_FILE_NAME).is_file()
        assert mailbox.path == str(root / "alice")  # tmp_path is already real
        assert await mailbox.list_messages() == ()
    finally:
        await mailbox.close()


async def test_open_without_create_refuses_missing_maildir(root: Path) -> None:
    store = MaildirStore(root, create=False)
    with pytest.raises(MailboxError) as info:
        await store.open("alice")
    assert info.value.code == ResponseCode.SYS_PERM
    assert not (root / "alice").exists()


async def test_open_without_create_uses_existing_maildir(root: Path) -> None:
    put(make_maildir(root), "new", "1.a.h")
    mailbox = await MaildirStore(root, create=False).open("alice")
    try:
        assert [m.uid for m in await mailbox.list_messages()] == ["1.a.h"]
    finally:
        await mailbox.close()


@pytest.mark.parametrize("user", ["", ".", "..", "../etc", "a/b", ".hidden", "a\x00b", "a\nb"])
async def test_unsafe_user_names_rejected(root: Path, store: MaildirStore, user: str) -> None:
    with pytest.raises(MailboxError) as info:
        await store.open(user)
    assert info.value.code == ResponseCode.SYS_PERM
    assert os.listdir(root) == []
    assert os.listdir(root.parent) == ["mail"]


async def test_user_dir_symlink_outside_root_refused(
    tmp_path: Path, root: Path, store: MaildirStore
) -> None:
    outside = make_maildir(tmp_path, "elsewhere")
    put(outside, "new", "1.secret.h")
    (root / "alice").symlink_to(outside)
    with pytest.raises(MailboxError) as info:
        await store.open("alice")
    assert info.value.code == ResponseCode.SYS_PERM
    assert not (outside / LOCK_FILE_NAME).exists()


async def test_user_dir_symlink_to_root_refused(root: Path, store: MaildirStore) -> None:
    (root / "alice").symlink_to(root)
    with pytest.raises(MailboxError):
        await store.open("alice")


async def test_cur_symlink_outside_root_refused(
    tmp_path: Path, root: Path, store: MaildirStore
) -> None:
    maildir = make_maildir(root)
    (maildir / "cur").rmdir()
    (maildir / "cur").symlink_to(make_maildir(tmp_path, "elsewhere") / "cur")
    with pytest.raises(MailboxError) as info:
        await store.open("alice")
    assert info.value.code == ResponseCode.SYS_PERM


async def test_user_dir_symlink_inside_root_allowed(root: Path, store: MaildirStore) -> None:
    put(make_maildir(root, "alice"), "new", "1.a.h")
    (root / "alias").symlink_to(root / "alice")
    messages = await snapshot(store, "alias")
    assert [m.uid for m in messages] == ["1.a.h"]
    # The alias and the real name share one lock.
    mailbox = await store.open("alice")
    try:
        with pytest.raises(MailboxInUse):
            await store.open("alias")
    finally:
        await mailbox.close()


async def test_second_login_takes_only_the_lock(
    tmp_path: Path, root: Path, store: MaildirStore, thread_calls: Counter
) -> None:
    await snapshot(store)
    thread_calls.calls = 0
    await snapshot(store)
    assert thread_calls.calls == 0
    # Removed meanwhile: checked and created again.
    shutil.rmtree(root / "alice")
    await snapshot(store)
    assert (root / "alice" / "cur").is_dir()
    # Replaced by a symlink to a Maildir outside the root: refused.
    shutil.rmtree(root / "alice")
    outside = make_maildir(tmp_path, "elsewhere")
    (outside / LOCK_FILE_NAME).touch()
    (root / "alice").symlink_to(outside)
    with pytest.raises(MailboxError) as info:
        await store.open("alice")
    assert info.value.code == ResponseCode.SYS_PERM


async def test_missing_cur_is_recreated_next_login(root: Path, store: MaildirStore) -> None:
    await snapshot(store)
    (root / "alice" / "cur").rmdir()
    assert await snapshot(store) == []
    assert (root / "alice" / "cur").is_dir()
    # Removed during a session: that listing fails, the next login repairs it.
    mailbox = await store.open("alice")
    try:
        (root / "alice" / "cur").rmdir()
        with pytest.raises(MailboxError) as info:
            await mailbox.list_messages()
        assert info.value.code == ResponseCode.SYS_TEMP
    finally:
        await mailbox.close()
    assert await snapshot(store) == []


async def test_lock_file_symlink_refused(tmp_path: Path, root: Path, store: MaildirStore) -> None:
    maildir = make_maildir(root)
    (maildir / LOCK_FILE_NAME).symlink_to(tmp_path / "victim")
    with pytest.raises(MailboxError):
        await store.open("alice")
    assert not (tmp_path / "victim").exists()


# -- lock ------------------------------------------------------------------------------


async def test_lock_is_exclusive_within_a_process(root: Path, store: MaildirStore) -> None:
    first = await store.open("alice")
    with pytest.raises(MailboxInUse) as info:
        await store.open("alice")
    assert info.value.code == ResponseCode.IN_USE
    # A second store on the same root (another server object) is excluded too.
    with pytest.raises(MailboxInUse):
        await MaildirStore(root).open("alice")
    # Another user is not affected.
    bob = await store.open("bob")
    await bob.close()
    await first.close()
    assert first.closed
    await first.close()  # idempotent
    second = await store.open("alice")
    await second.close()


async def test_lock_wait_gets_lock_released_meanwhile(root: Path, store: MaildirStore) -> None:
    holder = await store.open("alice")
    waiting = MaildirStore(root, lock_wait=5.0)
    got: list[MaildirMailbox] = []

    async def wait_for_lock() -> None:
        got.append(await waiting.open("alice"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_lock)
        await trio.sleep(0.15)
        assert got == []
        await holder.close()
    await got[0].close()


async def test_lock_wait_gives_up(root: Path, store: MaildirStore) -> None:
    holder = await store.open("alice")
    try:
        start = trio.current_time()
        with pytest.raises(MailboxInUse):
            await MaildirStore(root, lock_wait=0.25).open("alice")
        assert 0.25 <= trio.current_time() - start < 2
    finally:
        await holder.close()


LOCK_HOLDER = """
import sys
import trio
from trio_pop3.mailbox._maildir import MaildirStore

async def main() -> None:
    mailbox = await MaildirStore(sys.argv[1]).open(sys.argv[2])
    print("locked", flush=True)
    await trio.sleep_forever()

trio.run(main)
"""


async def test_lock_across_processes_and_recovery_after_kill(
    root: Path, store: MaildirStore
) -> None:
    env = dict(os.environ)
    project = PROJECT_DIR
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project, env.get("PYTHONPATH")]))
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", LOCK_HOLDER, str(root), "alice"],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    try:
        output = b""
        with trio.fail_after(SUBPROCESS_START_TIMEOUT):
            while b"\n" not in output:
                data = await process.stdout.receive_some()
                assert data, "lock holder exited early"
                output += data
        assert output == b"locked\n"
        with pytest.raises(MailboxInUse):
            await store.open("alice")
        # A crash: the process cannot release anything itself.
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL
        mailbox = await store.open("alice")
        await mailbox.close()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stdout.aclose()


async def test_closed_mailbox_refuses_use(root: Path, store: MaildirStore) -> None:
    put(make_maildir(root), "new", "1.a.h")
    mailbox = await store.open("alice")
    [message] = await mailbox.list_messages()
    await mailbox.close()
    with pytest.raises(MailboxError):
        await mailbox.list_messages()
    with pytest.raises(MailboxError):
        await read_all(mailbox, message)
    with pytest.raises(MailboxError):
        await mailbox.remove([message])
    assert (root / "alice" / "new" / "1.a.h").exists()


# -- listing, order, UIDs --------------------------------------------------------------


async def test_listing_order_and_what_is_skipped(
    tmp_path: Path, root: Path, store: MaildirStore
) -> None:
    maildir = make_maildir(root)
    put(maildir, "new", "1700000002.M12P1Q1.h")
    put(maildir, "cur", "1700000002.M5P1Q1.h:2,S")
    put(maildir, "cur", "1700000001.M900000P1.h:2,")
    put(maildir, "new", "1700000010.x")
    put(maildir, "new", "999.old")
    put(maildir, "new", "no-timestamp")
    put(maildir, "new", "123abc.not-a-timestamp")
    # Skipped: dot files, directories, symlinks, files in tmp/ and in the Maildir root.
    put(maildir, "new", ".hidden")
    (maildir / "new" / "1600000000.dir").mkdir()
    (tmp_path / "outside").write_bytes(b"secret\n")
    (maildir / "cur" / "1500000000.link").symlink_to(tmp_path / "outside")
    put(maildir, "tmp", "1400000000.partial")
    (maildir / "1300000000.top").write_bytes(b"x")
    messages = await snapshot(store)
    assert [m.uid for m in messages] == [
        "999.old",
        "1700000001.M900000P1.h",
        "1700000002.M5P1Q1.h",
        "1700000002.M12P1Q1.h",
        "1700000010.x",
        "123abc.not-a-timestamp",
        "no-timestamp",
    ]


def test_order_key_uses_seconds_then_microseconds() -> None:
    names = ["10.M20P1.h", "9.M999999P1.h", "10.M3P1.h", "10.M3P1.a", "x", "10.plain"]
    assert sorted(names, key=_maildir._order_key) == [
        "9.M999999P1.h",
        "10.plain",
        "10.M3P1.a",
        "10.M3P1.h",
        "10.M20P1.h",
        "x",
    ]


async def test_uids_stable_across_sessions_stores_moves_and_flags(
    root: Path, store: MaildirStore
) -> None:
    maildir = root / "alice"
    names = [deliver(maildir, data, fsync=False) for data in MESSAGES.values()]
    first = await snapshot(store)
    assert [m.uid for m in first] == names
    # Another program moves one message to cur/ and changes flags on another.
    os.rename(maildir / "new" / names[0], maildir / "cur" / f"{names[0]}:2,")
    os.rename(maildir / "new" / names[1], maildir / "cur" / f"{names[1]}:2,S")
    os.rename(maildir / "cur" / f"{names[1]}:2,S", maildir / "cur" / f"{names[1]}:2,RS")
    assert [(m.uid, m.size) for m in await snapshot(store)] == [(m.uid, m.size) for m in first]
    # A fresh store (a restarted server) agrees, sizes included.
    fresh = await snapshot(MaildirStore(root, trust_size_tags=False))
    assert [(m.uid, m.size) for m in fresh] == [(m.uid, m.size) for m in first]


async def test_uid_hashed_for_names_outside_the_rfc_alphabet(
    root: Path, store: MaildirStore
) -> None:
    maildir = make_maildir(root)
    long_base = "1700000000." + "x" * 80
    weird = ["1700000001.with space", "1700000002.caf\u00e9", long_base]
    for name in weird:
        put(maildir, "new", name)
    put(maildir, "cur", "1700000003." + "y" * 59 + ":2,S")  # base is exactly 70 chars
    write_raw_name(maildir, b"1700000004.not-utf8-\xff\xfe")
    messages = await snapshot(store)
    assert len(messages) == 5
    assert messages[4].uid == hashlib.sha1(b"1700000004.not-utf8-\xff\xfe").hexdigest()
    for message in messages[:3]:
        assert re.fullmatch(r"[0-9a-f]{40}", message.uid)
    assert messages[3].uid == "1700000003." + "y" * 59
    assert len({m.uid for m in messages}) == 5
    # Stable after a flag change.
    os.rename(maildir / "new" / long_base, maildir / "cur" / f"{long_base}:2,S")
    assert [m.uid for m in await snapshot(store)] == [m.uid for m in messages]


async def test_duplicate_base_name_renamed_and_never_reused(
    root: Path, store: MaildirStore
) -> None:
    """RFC 1939 section 7 (UIDL-04): two files with one base name are two messages.

    The first one stays under the base name's unique-id; the other is renamed to a
    fresh unique name, so once the first is deleted the second does not turn up
    under the unique-id the client has already seen.
    """
    maildir = make_maildir(root)
    older = put(maildir, "cur", "1700000008.dup.h:2,S", b"Subject: H\n\nH2\n")
    wait_for_newer_ctime(older)
    put(maildir, "new", "1700000008.dup.h", b"Subject: h\n\nH\n")
    put(maildir, "new", "1700000009.other.h")
    mailbox = await store.open("alice")
    try:
        messages = list(await mailbox.list_messages())
        assert len(messages) == 3
        by_uid = {m.uid: m for m in messages}
        first = by_uid.pop("1700000008.dup.h")
        other = by_uid.pop("1700000009.other.h")
        (renamed,) = by_uid.values()
        assert messages[2] is other  # the renamed copy keeps its delivery time
        assert b"".join(await read_all(mailbox, first)) == b"Subject: H\n\nH2\n"
        assert renamed.uid not in {first.uid, other.uid}
        assert UID_RE.fullmatch(renamed.uid)
        assert renamed.uid.startswith("1700000008.")
        assert b"".join(await read_all(mailbox, renamed)) == b"Subject: h\n\nH\n"
        assert other.uid == "1700000009.other.h"
        await mailbox.remove([first])
    finally:
        await mailbox.close()
    assert sorted(os.listdir(maildir / "new")) == sorted(["1700000009.other.h", renamed.uid])
    assert os.listdir(maildir / "cur") == []
    # The next session: the survivor keeps the unique-id it was listed under.
    assert [m.uid for m in await snapshot(store)] == [renamed.uid, other.uid]


@pytest.mark.parametrize("restarted", [False, True])
async def test_restored_copy_never_takes_a_known_unique_id(
    root: Path, store: MaildirStore, restarted: bool
) -> None:
    """RFC 1939 section 7 (UIDL-04): a file that arrives under a base name already
    listed is the one renamed, whichever directory it is in."""
    maildir = make_maildir(root)
    older = put(maildir, "new", "1700000001.M1P1.h", b"Subject: A\n\nA\n")
    assert [m.uid for m in await snapshot(store)] == ["1700000001.M1P1.h"]
    wait_for_newer_ctime(older)  # for the restarted store
    # A restore drops a different message under the same base name, in cur/.
    put(maildir, "cur", "1700000001.M1P1.h:2,S", b"Subject: B\n\nB\n")
    if restarted:  # no memory of the last listing: the older file keeps the name
        store = MaildirStore(root)
    mailbox = await store.open("alice")
    try:
        messages = list(await mailbox.list_messages())
        contents = {m.uid: b"".join(await read_all(mailbox, m)) for m in messages}
    finally:
        await mailbox.close()
    assert len(contents) == 2
    assert contents.pop("1700000001.M1P1.h") == b"Subject: A\n\nA\n"
    assert list(contents.values()) == [b"Subject: B\n\nB\n"]
    assert os.listdir(maildir / "new") == ["1700000001.M1P1.h"]


async def test_duplicate_keeps_flags_and_size_tags(root: Path) -> None:
    store = MaildirStore(root, trust_size_tags=True)
    maildir = make_maildir(root)
    data = b"Subject: t\n\nbody\n"
    base = f"1700000005.M42P7.h,S={len(data)},W={wire_size(data)}"
    put(maildir, "cur", f"{base}:2,S", data)
    put(maildir, "cur", f"{base}:2,RS", data + b"more\n")
    messages = await snapshot(store)
    assert len({m.uid for m in messages}) == 2
    kept, fresh = sorted(os.listdir(maildir / "cur"), key=lambda name: name.startswith(base) ^ 1)
    assert kept in {f"{base}:2,S", f"{base}:2,RS"}
    flags = ":2,RS" if kept.endswith(":2,S") else ":2,S"
    assert re.fullmatch(
        rf"1700000005\.M42P[0-9]+Q[0-9]+R[0-9a-f]{{8}}\.[^,:]+,S={len(data)},W={wire_size(data)}"
        + re.escape(flags),
        fresh,
    )
    assert {m.uid for m in messages} == {base, _maildir._base_name(fresh)}


async def test_hard_linked_names_are_one_message(root: Path, store: MaildirStore) -> None:
    """Two names of one file (a hard link) are one message: listed once, both names
    left alone by the listing, and a DELE removes every name of it in the Maildir
    (but not a hard link elsewhere, such as a backup's)."""
    maildir = make_maildir(root)
    path = put(maildir, "cur", "1.dup.h:2,S")
    os.link(path, maildir / "new" / "1.dup.h")
    os.link(path, maildir / "cur" / "1.dup.h:2,RS")
    backup = root / "backup-1.dup.h"
    os.link(path, backup)
    put(maildir, "new", "2.other.h")
    mailbox = await store.open("alice")
    try:
        messages = list(await mailbox.list_messages())
        assert [m.uid for m in messages] == ["1.dup.h", "2.other.h"]
        assert sorted(os.listdir(maildir / "new")) == ["1.dup.h", "2.other.h"]
        await mailbox.remove(messages[:1])
    finally:
        await mailbox.close()
    assert [m.uid for m in await snapshot(store)] == ["2.other.h"]
    assert os.listdir(maildir / "cur") == []
    assert os.listdir(maildir / "new") == ["2.other.h"]
    assert backup.exists()


async def test_listing_during_a_rename_by_link_and_unlink_loses_nothing(
    root: Path, store: MaildirStore
) -> None:
    """Another program renames a message the safe way, link(old, new) then unlink(old).

    A listing between the two calls sees two names of one file; if it removed
    either, the program's unlink() would remove the last one and lose the message
    (found by an audit: 40 of 40 messages lost to logins during such renames).
    """
    maildir = make_maildir(root)
    data = b"Subject: keep me\n\nbody\n"
    old = put(maildir, "cur", "1.mail.h:2,S", data)
    new = maildir / "cur" / "1.mail.h:2,RS"
    os.link(old, new)  # the program's first step
    messages = await snapshot(store)  # a login lists the Maildir now
    assert [m.uid for m in messages] == ["1.mail.h"]
    assert old.exists()
    assert new.exists()
    os.unlink(old)  # the program's second step
    assert new.read_bytes() == data
    assert [m.uid for m in await snapshot(store)] == ["1.mail.h"]


async def test_duplicate_left_out_when_it_cannot_be_renamed(
    root: Path, store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    maildir = make_maildir(root)
    put(maildir, "new", "1.dup.h", b"Subject: a\n\nA\n")
    put(maildir, "cur", "1.dup.h:2,S", b"Subject: b\n\nB\n")

    def refuse(src: str, dst: str) -> None:
        raise PermissionError(13, "Permission denied", src)

    monkeypatch.setattr(os, "rename", refuse)
    messages = await snapshot(store)
    assert [m.uid for m in messages] == ["1.dup.h"]
    assert sorted(os.listdir(maildir / "new")) == ["1.dup.h"]


@given(st.text(max_size=120))
def test_uid_rule_property(base: str) -> None:
    uid = _maildir._uid_for_base(base)
    assert UID_RE.fullmatch(uid)
    assert uid == _maildir._uid_for_base(base)
    allowed = 1 <= len(base) <= 70 and all(0x21 <= ord(ch) <= 0x7E for ch in base)
    assert (uid == base) == allowed
    if not allowed:
        assert len(uid) == 40


def _valid_file_name(name: str) -> bool:
    return (
        not name.startswith(".")
        and ":" not in name
        and 0 < len(os.fsencode(name)) <= 240  # room for ":2,S"
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.text(
            st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=90
        ).filter(_valid_file_name),
        min_size=1,
        max_size=5,
        unique=True,
    )
)
async def test_uid_rule_property_on_disk(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        maildir = make_maildir(root)
        for name in names:
            put(maildir, "new", name)
        store = MaildirStore(root, fsync=False)
        before = await snapshot(store)
        assert len(before) == len(names)
        for message in before:
            assert UID_RE.fullmatch(message.uid)
        assert len({m.uid for m in before}) == len(names)
        for name in names:
            os.rename(maildir / "new" / name, maildir / "cur" / f"{name}:2,S")
        after = await snapshot(MaildirStore(root, fsync=False))
        assert sorted(m.uid for m in after) == sorted(m.uid for m in before)


# -- sizes -----------------------------------------------------------------------------


@pytest.mark.parametrize("trust", [True, False])
@pytest.mark.parametrize("size_tags", [True, False])
@pytest.mark.parametrize("kind", list(MESSAGES))
async def test_sizes_are_wire_sizes(root: Path, kind: str, size_tags: bool, trust: bool) -> None:
    data = MESSAGES[kind]
    name = deliver(root / "alice", data, size_tags=size_tags, fsync=False)
    assert (",W=" in name) == size_tags
    [message] = await snapshot(MaildirStore(root, trust_size_tags=trust))
    assert message.size == wire_size(data)
    assert message.uid == name


async def test_size_tag_trusted_only_when_asked(root: Path) -> None:
    maildir = make_maildir(root)
    data = b"a\nb\n"
    # W=19 is wrong (the file's 17 octets are 20 on the wire) but possible, so it is
    # trusted: the file is not read.
    put(maildir, "new", "1.a.h,S=17,W=19")
    put(maildir, "new", "2.b.h,W=bogus", data)
    [tagged, untagged] = await snapshot(MaildirStore(root))
    assert tagged.size == 19
    assert untagged.size == wire_size(data)
    [tagged, _] = await snapshot(MaildirStore(root, trust_size_tags=False))
    assert tagged.size == wire_size(b"Subject: x\n\nbody\n") == 20


@pytest.mark.rfc("1939", "11")
@pytest.mark.parametrize(
    "name",
    [
        "1.a.h,S=999,W=5",  # the conformance audit's file: S= is not the file's size
        "1.a.h,W=5",  # fewer octets than the file has
        "1.a.h,W=999",  # more than every LF doubled
        "1.a.h,S=999,W=20",  # a right W= with a wrong S=
    ],
)
async def test_size_tags_that_cannot_fit_the_file_are_not_trusted(
    root: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # SIZE-01: LIST and RETR's +OK must give the octets RETR sends.
    put(make_maildir(root), "new", name)
    [message] = await snapshot(MaildirStore(root))
    assert message.size == wire_size(b"Subject: x\n\nbody\n")
    assert "do not fit its 17 octets" in caplog.text


async def test_size_cache(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    maildir = root / "alice"
    names = [deliver(maildir, b"m%d\n" % i, fsync=False) for i in range(3)]
    measure = Counter(_maildir._measure)
    monkeypatch.setattr(_maildir, "_measure", measure)
    store = MaildirStore(root, trust_size_tags=False)
    first = await snapshot(store)
    assert measure.calls == 3
    assert await snapshot(store) == first
    assert measure.calls == 3  # cached
    # A move to cur/ with flags keeps inode, size and mtime: still cached.
    os.rename(maildir / "new" / names[0], maildir / "cur" / f"{names[0]}:2,S")
    assert [(m.uid, m.size) for m in await snapshot(store)] == [(m.uid, m.size) for m in first]
    assert measure.calls == 3
    # Rewritten content is measured again.
    (maildir / "new" / names[1]).write_bytes(b"longer\nmessage\n")
    after = await snapshot(store)
    assert measure.calls == 4
    assert after[1].size == wire_size(b"longer\nmessage\n")
    # The cache belongs to the store: a new store reads again.
    await snapshot(MaildirStore(root, trust_size_tags=False))
    assert measure.calls == 7


async def test_size_cache_limit_evicts_other_maildrops(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for user in ("alice", "bob"):
        deliver(root / user, b"x\n", fsync=False)
    measure = Counter(_maildir._measure)
    monkeypatch.setattr(_maildir, "_measure", measure)
    store = MaildirStore(root, size_cache_limit=1)
    await snapshot(store, "alice")
    await snapshot(store, "bob")  # evicts alice
    await snapshot(store, "bob")
    assert measure.calls == 2
    await snapshot(store, "alice")
    assert measure.calls == 3


async def test_uncached_scan_is_one_thread_call_cached_small_is_inline(
    root: Path, store: MaildirStore, thread_calls: Counter
) -> None:
    for i in range(40):
        deliver(root / "alice", b"message %d\n" % i, fsync=False)
    mailbox = await store.open("alice")
    try:
        thread_calls.calls = 0
        assert len(await mailbox.list_messages()) == 40
        assert thread_calls.calls == 1
    finally:
        await mailbox.close()
    # Small maildrop seen before: listed in the event loop.
    for i in range(2):
        deliver(root / "bob", b"message %d\n" % i, fsync=False)
    await snapshot(store, "bob")
    mailbox = await store.open("bob")
    try:
        thread_calls.calls = 0
        assert len(await mailbox.list_messages()) == 2
        assert thread_calls.calls == 0
    finally:
        await mailbox.close()


# -- snapshot --------------------------------------------------------------------------


async def test_new_mail_appears_only_in_next_session(root: Path, store: MaildirStore) -> None:
    first_name = deliver(root / "alice", b"first\n", fsync=False)
    mailbox = await store.open("alice")
    try:
        listing = await mailbox.list_messages()
        later_name = deliver(root / "alice", b"later\n", fsync=False)
        assert [m.uid for m in listing] == [first_name]
        assert await mailbox.list_messages() == listing
    finally:
        await mailbox.close()
    assert [m.uid for m in await snapshot(store)] == [first_name, later_name]


# -- reading ---------------------------------------------------------------------------


async def test_read_large_message_in_chunks(
    root: Path, store: MaildirStore, thread_calls: Counter
) -> None:
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\n"
    data = b"Subject: big\n\n" + line * (3 * 1024 * 1024 // len(line)) + b"tail"
    deliver(root / "alice", data, fsync=False)
    mailbox = await store.open("alice")
    try:
        [message] = await mailbox.list_messages()
        assert message.size == wire_size(data)
        thread_calls.calls = 0
        chunks = await read_all(mailbox, message)
        assert b"".join(chunks) == data
        assert all(len(chunk) <= READ_CHUNK_SIZE for chunk in chunks)
        assert len(chunks) == -(-len(data) // READ_CHUNK_SIZE)
        assert thread_calls.calls == len(chunks)
    finally:
        await mailbox.close()


@pytest.mark.parametrize("size", [0, 1, INLINE_READ_LIMIT])
async def test_read_small_message_inline(
    root: Path, store: MaildirStore, thread_calls: Counter, size: int
) -> None:
    data = (b"x" * 99 + b"\n") * (size // 100) + b"y" * (size % 100)
    deliver(root / "alice", data, fsync=False)
    mailbox = await store.open("alice")
    try:
        [message] = await mailbox.list_messages()
        thread_calls.calls = 0
        chunks = await read_all(mailbox, message)
        assert chunks == ([data] if data else [])
        assert thread_calls.calls == 0
    finally:
        await mailbox.close()


async def test_read_stops_early_and_closes_file(root: Path, store: MaildirStore) -> None:
    deliver(root / "alice", b"x\n" * (READ_CHUNK_SIZE * 2), fsync=False)
    mailbox = await store.open("alice")
    try:
        [message] = await mailbox.list_messages()
        fds_before = len(os.listdir("/proc/self/fd"))
        reader = mailbox.read_message(message)
        assert len(await reader.__anext__()) == READ_CHUNK_SIZE
        assert len(os.listdir("/proc/self/fd")) == fds_before + 1
        await reader.aclose()  # type: ignore[attr-defined]
        assert len(os.listdir("/proc/self/fd")) == fds_before
    finally:
        await mailbox.close()


@pytest.mark.rfc("1939", "11")
async def test_message_truncated_while_read_is_never_sent_as_whole(
    root: Path, store: MaildirStore, caplog: pytest.LogCaptureFixture
) -> None:
    # SIZE-01: another program cut the file short mid-RETR.  Ending the chunks as if
    # the message were whole would let the terminator follow a short message.
    name = deliver(root / "alice", b"x\n" * (READ_CHUNK_SIZE * 2), fsync=False)
    mailbox = await store.open("alice")
    try:
        [message] = await mailbox.list_messages()
        reader = mailbox.read_message(message)
        assert len(await reader.__anext__()) == READ_CHUNK_SIZE
        os.truncate(root / "alice" / "new" / name, READ_CHUNK_SIZE + 100)
        assert len(await reader.__anext__()) == 100
        with pytest.raises(MailboxError, match="changed while it was read"):
            await reader.__anext__()
    finally:
        await mailbox.close()
    assert "truncated while it was read" in caplog.text


async def test_read_finds_message_moved_or_reflagged(root: Path, store: MaildirStore) -> None:
    maildir = root / "alice"
    a = deliver(maildir, b"moved\n", fsync=False)
    b = deliver(maildir, b"flagged\n", fsync=False)
    os.rename(maildir / "new" / b, maildir / "cur" / f"{b}:2,")
    mailbox = await store.open("alice")
    try:
        first, second = await mailbox.list_messages()
        os.rename(maildir / "new" / a, maildir / "cur" / f"{a}:2,S")
        os.rename(maildir / "cur" / f"{b}:2,", maildir / "cur" / f"{b}:2,RS")
        assert await read_all(mailbox, first) == [b"moved\n"]
        assert await read_all(mailbox, second) == [b"flagged\n"]
        assert await read_all(mailbox, first) == [b"moved\n"]
    finally:
        await mailbox.close()


async def test_read_vanished_message(root: Path, store: MaildirStore) -> None:
    name = deliver(root / "alice", b"gone\n", fsync=False)
    mailbox = await store.open("alice")
    try:
        [message] = await mailbox.list_messages()
        (root / "alice" / "new" / name).unlink()
        with pytest.raises(MailboxError) as info:
            await read_all(mailbox, message)
        # Gone for good, and not the system's fault: no [SYS/TEMP] (Dovecot answers
        # "-ERR Message 1 expunged." without a code).
        assert (info.value.text, info.value.code) == ("Message no longer exists.", None)
    finally:
        await mailbox.close()


async def test_symlinked_message_refused(tmp_path: Path, root: Path, store: MaildirStore) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"root:x:0:0\n")
    name = deliver(root / "alice", b"innocent\n", fsync=False)
    mailbox = await store.open("alice")
    try:
        [message] = await mailbox.list_messages()
        # Swapped for a symlink after the listing.
        path = root / "alice" / "new" / name
        path.unlink()
        path.symlink_to(secret)
        with pytest.raises(MailboxError):
            await read_all(mailbox, message)
    finally:
        await mailbox.close()
    # And a symlink is never listed.
    assert await snapshot(store) == []


async def test_fifo_message_refused_without_hanging(root: Path, store: MaildirStore) -> None:
    name = deliver(root / "alice", b"innocent\n", fsync=False)
    mailbox = await store.open("alice")
    try:
        [message] = await mailbox.list_messages()
        path = root / "alice" / "new" / name
        path.unlink()
        os.mkfifo(path)
        with trio.fail_after(5), pytest.raises(MailboxError):
            await read_all(mailbox, message)
    finally:
        await mailbox.close()


async def test_foreign_message_rejected(root: Path, store: MaildirStore) -> None:
    deliver(root / "alice", b"x\n", fsync=False)
    mailbox = await store.open("alice")
    try:
        await mailbox.list_messages()
        where = _maildir._Location("new", "../../etc/passwd", "1.x.h", (1, 0, 0))
        forged = MessageInfo("1.x.h", 3, where)
        with pytest.raises(ValueError, match="not from this maildrop"):
            await read_all(mailbox, forged)
        with pytest.raises(ValueError, match="not from this maildrop"):
            await mailbox.remove([forged])
    finally:
        await mailbox.close()


# -- removal ---------------------------------------------------------------------------


def files_in(maildir: Path) -> set[str]:
    return {str(path.relative_to(maildir)) for path in maildir.rglob("*") if not path.is_dir()}


async def test_remove_only_the_given_messages(root: Path, store: MaildirStore) -> None:
    maildir = root / "alice"
    for i in range(5):
        deliver(maildir, b"message %d\n" % i, fsync=False)
    put(maildir, "tmp", "1.in-flight.h")
    put(maildir, "new", ".dotfile")
    mailbox = await store.open("alice")
    try:
        messages = await mailbox.list_messages()
        before = files_in(maildir)
        await mailbox.remove([messages[1], messages[3]])
        removed = {f"new/{messages[1].uid}", f"new/{messages[3].uid}"}
        assert files_in(maildir) == before - removed
        await mailbox.remove([])
    finally:
        await mailbox.close()
    assert [m.uid for m in await snapshot(store)] == [messages[i].uid for i in (0, 2, 4)]


async def test_remove_vanished_and_moved_messages(root: Path, store: MaildirStore) -> None:
    maildir = root / "alice"
    names = [deliver(maildir, b"m%d\n" % i, fsync=False) for i in range(3)]
    mailbox = await store.open("alice")
    try:
        messages = await mailbox.list_messages()
        (maildir / "new" / names[0]).unlink()
        os.rename(maildir / "new" / names[1], maildir / "cur" / f"{names[1]}:2,S")
        await mailbox.remove(messages[:2])
        assert files_in(maildir) - {LOCK_FILE_NAME} == {f"new/{names[2]}"}
    finally:
        await mailbox.close()


@pytest.mark.parametrize("gone", ["new", "both"])
async def test_remove_after_the_maildir_vanished(
    root: Path, store: MaildirStore, gone: str
) -> None:
    # RFC 1939 section 6: a message another program removed counts as removed, also
    # when the whole of new/ (or cur/ and new/) went with it: QUIT says +OK.
    maildir = root / "alice"
    deliver(maildir, b"m\n", fsync=False)
    mailbox = await store.open("alice")
    try:
        messages = await mailbox.list_messages()
        shutil.rmtree(maildir / "new")
        if gone == "both":
            shutil.rmtree(maildir / "cur")
        await mailbox.remove(messages)
    finally:
        await mailbox.close()


async def test_remove_failure_reports_and_removes_the_others(
    root: Path, store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    maildir = root / "alice"
    names = [deliver(maildir, b"m%d\n" % i, fsync=False) for i in range(4)]
    real_unlink = os.unlink

    def failing_unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if os.fspath(path).endswith(names[1]):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", failing_unlink)
    mailbox = await store.open("alice")
    try:
        messages = await mailbox.list_messages()
        with pytest.raises(MailboxError) as info:
            await mailbox.remove(messages)
        assert info.value.code == ResponseCode.SYS_TEMP
        assert info.value.text == "Some deleted messages were not removed."
    finally:
        await mailbox.close()
    assert files_in(maildir) - {LOCK_FILE_NAME} == {f"new/{names[1]}"}


@pytest.mark.parametrize("fsync", [True, False])
async def test_remove_fsyncs_directories(
    root: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool
) -> None:
    maildir = root / "alice"
    deliver(maildir, b"a\n", fsync=False)
    name = deliver(maildir, b"b\n", fsync=False)
    os.rename(maildir / "new" / name, maildir / "cur" / f"{name}:2,S")
    synced: list[str] = []
    monkeypatch.setattr(_maildir, "_fsync_dir", synced.append)
    mailbox = await MaildirStore(root, fsync=fsync).open("alice")
    try:
        await mailbox.remove(await mailbox.list_messages())
    finally:
        await mailbox.close()
    expected = [os.path.join(mailbox.path, sub) for sub in ("cur", "new")] if fsync else []
    assert synced == expected


# -- delivery --------------------------------------------------------------------------


TWO_LINES = b"a\nb"


def test_deliver_writes_new_message(root: Path) -> None:
    maildir = root / "alice"
    name = deliver(maildir, b"Subject: hi\n\nhello\n")
    assert re.fullmatch(r"\d+\.M\d{1,6}P\d+Q\d+\.[^/:]+", name)
    path = maildir / "new" / name
    assert path.read_bytes() == b"Subject: hi\n\nhello\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list((maildir / "tmp").iterdir()) == []
    assert (maildir / "cur").is_dir()
    other = deliver(maildir, b"x")
    assert other != name
    tagged = deliver(maildir, TWO_LINES, size_tags=True)
    assert tagged.endswith(f",S=3,W={wire_size(TWO_LINES)}")


@pytest.fixture(autouse=True)
def _no_leaked_fds() -> Iterator[None]:
    before = set(os.listdir("/proc/self/fd"))
    yield
    leaked = set(os.listdir("/proc/self/fd")) - before
    # Entries may vanish (the listdir fd itself); only new open ones matter.
    assert not {fd for fd in leaked if os.path.exists(f"/proc/self/fd/{fd}")}


# -- listing reuse ---------------------------------------------------------------------


def age_dirs(maildir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the Maildir's last change look two seconds old to the settled check."""
    newest = max(
        max(st.st_mtime_ns, st.st_ctime_ns)
        for st in (os.stat(maildir / "cur"), os.stat(maildir / "new"))
    )
    monkeypatch.setattr(time, "time_ns", lambda: newest + 2_000_000_000)


async def test_settled_tagged_listing_is_reused_until_a_directory_changes(
    root: Path, store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    maildir = make_maildir(root)
    put(maildir, "cur", "1700000001.M1P1.h,S=10,W=11:2,S", b"0123456789")
    put(maildir, "new", "1700000002.M2P1.h,S=3,W=4", b"abc")
    age_dirs(maildir, monkeypatch)
    first = await snapshot(store)
    scans = Counter(_maildir._scan)
    monkeypatch.setattr(_maildir, "_scan", scans)
    assert await snapshot(store) == first
    assert scans.calls == 0  # reused: neither directory changed
    # A flag change is a rename inside cur/: listed again, same messages.
    os.rename(
        maildir / "cur" / "1700000001.M1P1.h,S=10,W=11:2,S",
        maildir / "cur" / "1700000001.M1P1.h,S=10,W=11:2,RS",
    )
    age_dirs(maildir, monkeypatch)
    assert [(m.uid, m.size) for m in await snapshot(store)] == [(m.uid, m.size) for m in first]
    assert scans.calls == 1
    # A delivery adds an entry to new/: listed again, and the new message is there.
    put(maildir, "new", "1700000003.M3P1.h,S=1,W=2", b"z")
    age_dirs(maildir, monkeypatch)
    assert [m.size for m in await snapshot(store)] == [11, 4, 2]
    assert scans.calls == 2
    # A removal too.
    os.unlink(maildir / "new" / "1700000002.M2P1.h,S=3,W=4")
    age_dirs(maildir, monkeypatch)
    assert [m.size for m in await snapshot(store)] == [11, 2]
    assert scans.calls == 3


async def test_recently_changed_maildir_is_always_listed_again(
    root: Path, store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change in the same timestamp tick as a listing must not be missed."""
    maildir = make_maildir(root)
    put(maildir, "new", "1700000001.M1P1.h,S=1,W=2", b"a")
    real_dir_stamp = _maildir._dir_stamp

    def coarse_dir_stamp(path: str) -> tuple[tuple[int, ...], bool]:
        # Timestamps that do not tick between two changes: the stamp never moves.
        _, settled = real_dir_stamp(path)
        return (1, 2, 3), settled

    monkeypatch.setattr(_maildir, "_dir_stamp", coarse_dir_stamp)
    assert len(await snapshot(store)) == 1
    put(maildir, "new", "1700000002.M2P1.h,S=1,W=2", b"b")
    # The directories had just changed when listed, so that listing is not reused.
    assert len(await snapshot(store)) == 2


async def test_listing_with_untagged_files_is_never_reused(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files sized by reading them are looked at at every listing (rewrites show)."""
    maildir = make_maildir(root)
    put(maildir, "new", "1700000001.M1P1.h", b"abc\n")
    store = MaildirStore(root, fsync=False)
    age_dirs(maildir, monkeypatch)
    assert [m.size for m in await snapshot(store)] == [5]
    (maildir / "new" / "1700000001.M1P1.h").write_bytes(b"longer\nmessage\n")
    age_dirs(maildir, monkeypatch)
    assert [m.size for m in await snapshot(store)] == [wire_size(b"longer\nmessage\n")]


async def test_fsync_failure_after_every_unlink_says_so(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 1939 §6: -ERR when UPDATE fails; the text must not claim files remain."""
    maildir = make_maildir(root)
    put(maildir, "new", "1.a.h")
    put(maildir, "new", "2.b.h")

    def failing_fsync(path: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(_maildir, "_fsync_dir", failing_fsync)
    mailbox = await MaildirStore(root, fsync=True).open("alice")
    try:
        first = (await mailbox.list_messages())[0]
        with pytest.raises(MailboxError) as info:
            await mailbox.remove([first])
    finally:
        await mailbox.close()
    assert info.value.code == ResponseCode.SYS_TEMP
    assert "were removed" in info.value.text
    assert "not removed" not in info.value.text
    assert os.listdir(maildir / "new") == ["2.b.h"]


# -- the seen flag ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1.a.h", "1.a.h:2,S"),
        ("1.a.h:2,", "1.a.h:2,S"),
        ("1.a.h:2,F", "1.a.h:2,FS"),
        ("1.a.h:2,RT", "1.a.h:2,RST"),
        ("1.a.h:2,S", None),
        ("1.a.h:2,FRS", None),
        ("1.a.h:1,S", None),  # the experimental info semantics: not ours to change
        (":2,", None),
    ],
)
def test_seen_name(name: str, expected: str | None) -> None:
    assert _maildir._seen_name(name) == expected


async def test_seen_reads_the_listed_s_flag(root: Path, store: MaildirStore) -> None:
    # Mailbox.seen, for LAST: only the "2," info part's S flag counts.
    maildir = make_maildir(root)
    put(maildir, "new", "1.fresh.h")
    put(maildir, "cur", "2.flagged.h:2,FS")
    put(maildir, "cur", "3.replied.h:2,R")
    put(maildir, "cur", "4.other.h:1,S")
    put(maildir, "cur", "5.bare.h")
    mailbox = await store.open("alice")
    try:
        messages = list(await mailbox.list_messages())
        assert [mailbox.seen(m) for m in messages] == [False, True, False, False, False]
        with pytest.raises(ValueError, match="not from this maildrop"):
            mailbox.seen(MessageInfo("x", 1, None))
    finally:
        await mailbox.close()


async def test_mark_seen_flags_and_keeps_unique_ids(root: Path, store: MaildirStore) -> None:
    maildir = make_maildir(root)
    put(maildir, "new", "1.fresh.h")
    put(maildir, "cur", "2.flagged.h:2,F")
    put(maildir, "cur", "3.seen.h:2,S")
    put(maildir, "new", "4.moved.h")
    put(maildir, "new", "5.untouched.h")
    mailbox = await store.open("alice")
    try:
        messages = list(await mailbox.list_messages())
        # Another program moves message 4 after the listing: found by its base name.
        os.rename(maildir / "new" / "4.moved.h", maildir / "cur" / "4.moved.h:2,R")
        await mailbox.mark_seen(messages[:4])
    finally:
        await mailbox.close()
    assert sorted(os.listdir(maildir / "cur")) == [
        "1.fresh.h:2,S",
        "2.flagged.h:2,FS",
        "3.seen.h:2,S",
        "4.moved.h:2,RS",
    ]
    assert os.listdir(maildir / "new") == ["5.untouched.h"]
    assert [m.uid for m in await snapshot(store)] == [m.uid for m in messages]


async def test_mark_seen_never_replaces_a_file(root: Path, store: MaildirStore) -> None:
    maildir = make_maildir(root)
    put(maildir, "new", "1.a.h", b"Subject: one\n\n1\n")
    mailbox = await store.open("alice")
    try:
        messages = list(await mailbox.list_messages())
        put(maildir, "cur", "1.a.h:2,S", b"Subject: other\n\n2\n")  # taken meanwhile
        await mailbox.mark_seen(messages)
    finally:
        await mailbox.close()
    assert (maildir / "new" / "1.a.h").read_bytes() == b"Subject: one\n\n1\n"
    assert (maildir / "cur" / "1.a.h:2,S").read_bytes() == b"Subject: other\n\n2\n"


async def test_mark_seen_off_changes_nothing(root: Path) -> None:
    store = MaildirStore(root, mark_seen=False)
    maildir = make_maildir(root)
    put(maildir, "new", "1.a.h")
    mailbox = await store.open("alice")
    try:
        await mailbox.mark_seen(list(await mailbox.list_messages()))
    finally:
        await mailbox.close()
    assert os.listdir(maildir / "new") == ["1.a.h"]
    assert os.listdir(maildir / "cur") == []


async def maildir_session(
    store: MaildirStore, *commands: str, send_quit: bool = True
) -> list[str]:
    """Log alice in over a memory stream, send ``commands``; return the replies."""
    factory = functools.partial(MailboxHandler, store, MemoryAuthenticator({"alice": "pw"}))
    replies = []
    async with memory_session(factory) as s:
        await s.client.login("alice", "pw")
        for command in commands:
            if command.startswith(("RETR", "TOP")):
                reply, _ = await s.client.multi(command)
            else:
                reply = await s.client.command(command)
            replies.append(reply)
        if send_quit:
            replies.append(await s.client.command("QUIT"))
    return replies


@pytest.mark.rfc("1939", "6")
async def test_quit_flags_retrieved_messages_seen(root: Path, store: MaildirStore) -> None:
    # As Dovecot does (RFC-CHECKLIST appendix A): RETR'd messages kept at QUIT get
    # the S flag.  TOP does not count, and a deleted message is removed, not flagged.
    maildir = make_maildir(root)
    for name in ("1.a.h", "2.b.h", "3.c.h", "4.d.h", "5.e.h"):
        put(maildir, "new", name)
    replies = await maildir_session(
        store, "RETR 1", "TOP 2 0", "RETR 3", "DELE 3", "RETR 4", "DELE 4", "RSET", "STAT"
    )
    assert all(reply.startswith("+OK") for reply in replies), replies
    assert sorted(os.listdir(maildir / "cur")) == ["1.a.h:2,S", "3.c.h:2,S", "4.d.h:2,S"]
    assert sorted(os.listdir(maildir / "new")) == ["2.b.h", "5.e.h"]
    replies = await maildir_session(store, "RETR 5", "DELE 5", "RETR 2")
    assert all(reply.startswith("+OK") for reply in replies), replies
    assert sorted(os.listdir(maildir / "cur")) == [
        "1.a.h:2,S",
        "2.b.h:2,S",
        "3.c.h:2,S",
        "4.d.h:2,S",
    ]
    assert os.listdir(maildir / "new") == []


@pytest.mark.rfc("1939", "6")
async def test_no_quit_no_seen_flag(root: Path, store: MaildirStore) -> None:
    # Without QUIT there is no UPDATE state: the maildrop stays exactly as it was.
    maildir = make_maildir(root)
    put(maildir, "new", "1.a.h")
    put(maildir, "cur", "2.b.h:2,F")
    replies = await maildir_session(store, "RETR 1", "RETR 2", send_quit=False)
    assert all(reply.startswith("+OK") for reply in replies), replies
    assert os.listdir(maildir / "new") == ["1.a.h"]
    assert os.listdir(maildir / "cur") == ["2.b.h:2,F"]


async def test_seen_flag_failure_does_not_fail_quit(
    root: Path,
    store: MaildirStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    maildir = make_maildir(root)
    put(maildir, "new", "1.a.h")
    put(maildir, "new", "2.b.h")

    def refuse(src: str, dst: str) -> None:
        raise PermissionError(13, "Permission denied", src)

    monkeypatch.setattr(os, "rename", refuse)
    replies = await maildir_session(store, "RETR 1", "DELE 2")
    assert replies[-1].startswith("+OK"), replies
    assert os.listdir(maildir / "new") == ["1.a.h"]  # removed 2, could not flag 1
    assert "cannot flag" in caplog.text


@pytest.mark.rfc("1939", "11")
async def test_another_file_with_the_base_name_is_never_taken_for_the_message(
    root: Path,
) -> None:
    # Without the lock, another session may rename the listed file (a duplicate it
    # settled) while a restore puts a different message under its base name.  That
    # message is not the one listed: it must not be sent under the listed size,
    # removed by DELE or flagged seen.
    store = MaildirStore(root, lock=False)
    maildir = make_maildir(root)
    put(maildir, "new", "1700000001.M1P1.h", b"Subject: A\n\nA\n")
    mailbox = await store.open("alice")
    try:
        messages = list(await mailbox.list_messages())
        os.rename(maildir / "new" / "1700000001.M1P1.h", maildir / "new" / "1700000001.M9.h")
        put(maildir, "cur", "1700000001.M1P1.h:2,F", b"Subject: B restored\n\nB\n")
        with pytest.raises(MailboxError, match="no longer exists"):
            await read_all(mailbox, messages[0])
        await mailbox.mark_seen(messages)
        await mailbox.remove(messages)  # gone already: counts as removed
    finally:
        await mailbox.close()
    assert os.listdir(maildir / "cur") == ["1700000001.M1P1.h:2,F"]
    assert os.listdir(maildir / "new") == ["1700000001.M9.h"]


async def test_a_moved_message_is_followed_by_inode(root: Path, store: MaildirStore) -> None:
    # Moved to cur/ and flagged by an IMAP server after the listing: same file.
    maildir = make_maildir(root)
    put(maildir, "new", "1.a.h", b"Subject: A\n\nA\n")
    put(maildir, "new", "2.b.h", b"Subject: B\n\nB\n")
    mailbox = await store.open("alice")
    try:
        first, second = await mailbox.list_messages()
        os.rename(maildir / "new" / "1.a.h", maildir / "cur" / "1.a.h:2,R")
        os.rename(maildir / "new" / "2.b.h", maildir / "cur" / "2.b.h:2,T")
        assert b"".join(await read_all(mailbox, first)) == b"Subject: A\n\nA\n"
        await mailbox.mark_seen([first])
        await mailbox.remove([second])
    finally:
        await mailbox.close()
    assert os.listdir(maildir / "cur") == ["1.a.h:2,RS"]


@pytest.mark.parametrize("order", ["restore-then-move", "move-then-restore"])
async def test_known_message_keeps_its_unique_id_when_moved(
    root: Path, store: MaildirStore, order: str
) -> None:
    """RFC 1939 section 7 (UIDL-04): the message listed under a unique-id keeps it,
    even when an IMAP client moved it (a new name and ctime) beside a restored copy."""
    maildir = make_maildir(root)
    original = put(maildir, "new", "1700000001.M1P1.h", b"Subject: A\n\nA\n")
    assert [m.uid for m in await snapshot(store)] == ["1700000001.M1P1.h"]
    moved = maildir / "cur" / "1700000001.M1P1.h:2,"
    wait_for_newer_ctime(original)
    if order == "restore-then-move":
        put(maildir, "cur", "1700000001.M1P1.h:2,S", b"Subject: B\n\nB\n")
        wait_for_newer_ctime(maildir / "cur" / "1700000001.M1P1.h:2,S")
        os.rename(original, moved)  # the move gives A the newest ctime
    else:
        os.rename(original, moved)
        put(maildir, "new", "1700000001.M1P1.h", b"Subject: B\n\nB\n")
    mailbox = await store.open("alice")
    try:
        messages = list(await mailbox.list_messages())
        contents = {m.uid: b"".join(await read_all(mailbox, m)) for m in messages}
    finally:
        await mailbox.close()
    assert contents.pop("1700000001.M1P1.h") == b"Subject: A\n\nA\n"
    assert list(contents.values()) == [b"Subject: B\n\nB\n"]
    assert moved.exists()


@pytest.mark.rfc("1939", "11")
async def test_a_file_that_took_the_listed_name_is_not_the_message(root: Path) -> None:
    # Without the lock: another session's QUIT flags the listed new/X seen (now
    # cur/X:2,S), then a restore writes a different message at new/X.  The listed
    # message is the one in cur/; the file at its old name is someone else's.
    store = MaildirStore(root, lock=False)
    maildir = make_maildir(root)
    put(maildir, "new", "1700000001.M1P1.h", b"Subject: A\n\nA\n")
    mailbox = await store.open("alice")
    try:
        (message,) = await mailbox.list_messages()
        os.rename(maildir / "new" / "1700000001.M1P1.h", maildir / "cur" / "1700000001.M1P1.h:2,S")
        put(maildir, "new", "1700000001.M1P1.h", b"Subject: B restored\n\nB, longer\n")
        assert b"".join(await read_all(mailbox, message)) == b"Subject: A\n\nA\n"
        await mailbox.mark_seen([message])
        await mailbox.remove([message])
    finally:
        await mailbox.close()
    assert os.listdir(maildir / "cur") == []
    assert os.listdir(maildir / "new") == ["1700000001.M1P1.h"]
    assert (maildir / "new" / "1700000001.M1P1.h").read_bytes().startswith(b"Subject: B")


@pytest.mark.rfc("1939", "11")
@pytest.mark.parametrize("same_mtime", [False, True])
async def test_a_new_file_on_a_reused_inode_is_not_the_message(
    root: Path, store: MaildirStore, same_mtime: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # A file made right after an unlink often gets the freed inode: here a restore
    # rewrites the listed name in place (same inode).  A restore that keeps
    # timestamps (tar, cp -p, rsync -a) may repeat the mtime too; the size still
    # tells the files apart.  It is not the listed message: not sent under its size
    # (so RETR never sends a body that disagrees with its "+OK n octets"), not
    # flagged seen, not removed.
    maildir = make_maildir(root)
    path = put(maildir, "new", "1700000001.M1P1.h", b"Subject: A\n\nA\n")
    if same_mtime:
        os.utime(path, (1_700_000_001, 1_700_000_001))
    mailbox = await store.open("alice")
    try:
        (message,) = await mailbox.list_messages()
        inode, mtime = path.stat().st_ino, path.stat().st_mtime_ns
        path.write_bytes(b"Subject: B restored\n\nB, longer\n")
        later = mtime if same_mtime else mtime + 5 * 10**9
        os.utime(path, ns=(later, later))
        assert path.stat().st_ino == inode
        with pytest.raises(MailboxError, match="changed since the listing"):
            await read_all(mailbox, message)
        await mailbox.mark_seen([message])
        # Kept, and said so: RFC 1939 section 6, "-ERR some deleted messages not removed".
        with pytest.raises(MailboxError, match="Some deleted messages were not removed"):
            await mailbox.remove([message])
    finally:
        await mailbox.close()
    assert "changed since it was listed; not removed" in caplog.text
    assert os.listdir(maildir / "new") == ["1700000001.M1P1.h"]
    assert path.read_bytes() == b"Subject: B restored\n\nB, longer\n"


class _DenyOpen:
    """The ``os`` module, except that opening ``denied`` is refused, as for mode 000."""

    def __init__(self, denied: str) -> None:
        self.denied = denied

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: str, flags: int, *args: Any) -> int:
        if path.endswith(self.denied):
            raise PermissionError(13, "Permission denied", path)
        return os.open(path, flags, *args)


async def test_unreadable_message_is_left_out_not_the_maildrop(
    root: Path,
    store: MaildirStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One message file the server may not read (mode 000 for its user) locked the
    # user out of all their mail ("Cannot list mailbox"); it is now left out, kept,
    # and logged, and the others are served.
    maildir = make_maildir(root)
    names = [deliver(maildir, f"Subject: {n}\n\nhi\n".encode(), fsync=False) for n in (1, 2, 3)]
    monkeypatch.setattr(_maildir, "os", _DenyOpen(names[1]))
    replies = await maildir_session(store, "STAT", "RETR 2", "DELE 1")
    size = len(b"Subject: 1\r\n\r\nhi\r\n")
    assert replies[0] == f"+OK 2 {2 * size}"
    assert [reply[:3] for reply in replies[1:]] == ["+OK", "+OK", "+OK"]
    assert "Permission denied" in caplog.text
    assert "left out" in caplog.text
    monkeypatch.undo()
    left = {name.partition(":")[0] for d in ("new", "cur") for name in os.listdir(maildir / d)}
    assert left == set(names[1:])  # the unreadable one kept; only DELE'd message 1 gone
