"""A bounded soak test on loopback: many concurrent clients of every temperament.

A real ``POP3Server`` + ``MailboxHandler`` + ``MaildirStore`` runs in-process on
127.0.0.1.  Clients, at most ``concurrency`` at a time:

* well-behaved sessions (70 %): log in (retrying on ``[IN-USE]``, LOCK-02), check
  STAT against LIST and UIDL, RETR/TOP, DELE a few, then QUIT (recording what was
  removed), RSET+QUIT, or just drop the connection;
* slowloris clients: a byte every 50-200 ms, never a whole command for a while;
* vanishers: RETR a 1 MB message, read a little, and close the socket mid-response;
* brute-forcers: wrong passwords until the server hangs up (``max_auth_failures``),
  with a small but real ``auth_failure_delay``.

Afterwards: no message lost (only those DELE'd and QUIT'd are gone, STATE-07), no
session or task leaked (``active_connections == 0``, the trio task tree is back to
its size), every lock free (every user logs in), memory back near its baseline, and
every well-behaved session finished within a bound.
"""

from __future__ import annotations

import functools
import gc
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from pop3_support import Client, walk_tasks
from robust_support import MaildirFixture

from trio_pop3 import Limits, POP3Server
from trio_pop3.mailbox import MailboxHandler, MaildirStore, MemoryAuthenticator

USERS = 12
BIG = b"Subject: big\n\n" + b"All work and no play makes Jack a dull boy.\n" * 24_000  # 1 MB
SESSION_BOUND = 20.0  # seconds a well-behaved session may take, IN-USE retries included


@dataclass
class Tally:
    removed: dict[str, set[str]] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    in_use_retries: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def task_count() -> int:
    root = trio.lowlevel.current_root_task()
    assert root is not None
    return len(list(walk_tasks(root)))


async def connect(port: int) -> Client:
    client = Client(await trio.open_tcp_stream("127.0.0.1", port))
    greeting = await client.reply()
    assert greeting.startswith("+OK"), greeting
    return client


async def good_session(port: int, rng: random.Random, tally: Tally) -> None:
    user = f"user{rng.randrange(USERS)}"
    start = time.monotonic()
    client = await connect(port)
    try:
        while True:
            await client.command(f"USER {user}")
            reply = await client.command("PASS pw")
            if reply.startswith("+OK"):
                break
            assert reply.startswith("-ERR [IN-USE]"), reply
            tally.in_use_retries += 1
            await trio.sleep(rng.uniform(0.01, 0.1))
        stat = await client.command("STAT")
        count = int(stat.split()[1])
        first, listing = await client.multi("LIST")
        assert len(listing) == count, (stat, listing)
        first, uidls = await client.multi("UIDL")
        uids = {int(n): uid for n, uid in (line.decode().split() for line in uidls)}
        assert len(uids) == count
        if count:
            n = rng.randrange(1, count + 1)
            first, _ = await client.multi(f"RETR {n}" if rng.random() < 0.5 else f"TOP {n} 2")
            assert first.startswith("+OK"), first
        doomed = rng.sample(sorted(uids), min(count, rng.randrange(3)))
        for n in doomed:
            assert (await client.command(f"DELE {n}")).startswith("+OK")
        ending = rng.random()
        if ending < 0.7:
            reply = await client.command("QUIT")
            assert reply == "+OK goodbye", reply
            tally.removed.setdefault(user, set()).update(uids[n] for n in doomed)
        elif ending < 0.85:
            assert (await client.command("RSET")).startswith("+OK")
            assert (await client.command("QUIT")).startswith("+OK")
        # else: drop the connection, marks and all (STATE-06)
    finally:
        await client.aclose()
    tally.durations.append(time.monotonic() - start)


async def slowloris(port: int, rng: random.Random, stop: trio.Event) -> None:
    client = await connect(port)
    try:
        with trio.move_on_after(rng.uniform(1, 3)):
            for byte in b"USER user0\r\nNOOP\r\n" * 50:
                if stop.is_set():
                    break
                await client.send(bytes([byte]))
                await trio.sleep(rng.uniform(0.05, 0.2))
    except trio.BrokenResourceError:
        pass
    finally:
        await client.aclose()


async def vanisher(port: int, rng: random.Random, tally: Tally) -> None:
    user = f"user{rng.randrange(3)}"  # users 0-2 have the big message as number 1
    client = await connect(port)
    try:
        await client.command(f"USER {user}")
        if not (await client.command("PASS pw")).startswith("+OK"):
            return  # in use: nothing to do
        await client.multi("LIST")
        await client.send_line("RETR 1")
        with trio.move_on_after(2):
            await client.stream.receive_some(rng.choice([1, 1000, 60000]))
    finally:
        await trio.aclose_forcefully(client.stream)  # gone mid-response


async def brute_force(port: int) -> None:
    client = await connect(port)
    try:
        for i in range(20):
            await client.command("USER user0")
            reply = await client.command(f"PASS guess{i}")
            assert reply.startswith("-ERR [AUTH]"), reply
    except (EOFError, trio.BrokenResourceError):
        pass  # the server hung up after max_auth_failures (STATE-04)
    finally:
        await client.aclose()


async def soak(tmp_path: Path, total: int, concurrency: int, seed: int) -> dict[str, float]:
    root = str(tmp_path)
    fixtures = {f"user{i}": MaildirFixture(root, f"user{i}") for i in range(USERS)}
    for i, fixture in enumerate(fixtures.values()):
        if i < 3:
            fixture.add(BIG)
        for j in range(6):
            fixture.add(b"Subject: m%d\n\n%sbody\n" % (j, b".line\n" * j))
    before = {u: f.contents() for u, f in fixtures.items()}
    store = MaildirStore(root)
    server = POP3Server(
        functools.partial(
            MailboxHandler, store, MemoryAuthenticator(dict.fromkeys(fixtures, "pw"))
        ),
        host="127.0.0.1",
        port=0,
        timeout=600,
        login_timeout=30,
        send_timeout=5,
        limits=Limits(
            auth_failure_delay=0.02,
            auth_failure_delay_max=0.2,
            max_connections=1000,
            max_connections_per_address=None,
        ),
    )
    rng = random.Random(seed)
    tally = Tally()
    async with trio.open_nursery() as outer:
        listeners = await outer.start(server.serve)
        port = listeners[0].socket.getsockname()[1]
        gc.collect()
        tasks_before = task_count()
        rss_before = rss_mb()
        limiter = trio.CapacityLimiter(concurrency)
        stop = trio.Event()
        started = time.monotonic()

        async def one(kind: str, client_seed: int) -> None:
            async with limiter:
                crng = random.Random(client_seed)
                try:
                    if kind == "good":
                        with trio.fail_after(SESSION_BOUND):
                            await good_session(port, crng, tally)
                    elif kind == "slowloris":
                        await slowloris(port, crng, stop)
                    elif kind == "vanisher":
                        await vanisher(port, crng, tally)
                    else:
                        await brute_force(port)
                except Exception as exc:
                    tally.errors.append(f"{kind}: {exc!r}")

        async with trio.open_nursery() as clients:
            for _ in range(total):
                kind = rng.choices(
                    ["good", "slowloris", "vanisher", "brute"], weights=[70, 10, 12, 8]
                )[0]
                tally.kinds[kind] = tally.kinds.get(kind, 0) + 1
                clients.start_soon(one, kind, rng.randrange(2**32))
        elapsed = time.monotonic() - started
        stop.set()
        # Every client is gone: the server must have let go of every session.
        with trio.fail_after(10):
            while server.active_connections:  # noqa: ASYNC110 - polling a plain counter
                await trio.sleep(0.01)
        await trio.sleep(0.1)
        gc.collect()
        tasks_after = task_count()
        rss_after = rss_mb()
        outer.cancel_scope.cancel()
    assert not tally.errors, tally.errors[:5]
    assert tasks_after == tasks_before, (tasks_before, tasks_after)
    # No message lost: exactly the DELE'd-and-QUIT'd ones are gone.
    for user, fixture in fixtures.items():
        gone = tally.removed.get(user, set())
        assert fixture.contents() == [(u, d) for u, d in before[user] if u not in gone], user
        assert not fixture.locked(), user
    # Every lock is free: every user can log in.
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve)
        port = listeners[0].socket.getsockname()[1]
        for user in fixtures:
            client = await connect(port)
            await client.login(user, "pw")
            await client.command("QUIT")
            await client.aclose()
        nursery.cancel_scope.cancel()
    assert max(tally.durations) < SESSION_BOUND
    figures = {
        "clients": total,
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "good_sessions": len(tally.durations),
        "max_good_session_s": round(max(tally.durations), 3),
        "median_good_session_s": round(sorted(tally.durations)[len(tally.durations) // 2], 3),
        "in_use_retries": tally.in_use_retries,
        "messages_removed_by_quit": sum(len(v) for v in tally.removed.values()),
        "rss_before_mb": round(rss_before, 1),
        "rss_after_mb": round(rss_after, 1),
        **{f"kind_{k}": v for k, v in tally.kinds.items()},
    }
    print(figures)
    assert rss_after - rss_before < 64, figures
    return figures


async def test_soak_short(tmp_path: Path) -> None:
    await soak(
        tmp_path, total=int(os.environ.get("ROBUST_SOAK_CLIENTS", "60")), concurrency=30, seed=1
    )


@pytest.mark.slow
async def test_soak_long(tmp_path: Path) -> None:
    with trio.fail_after(120):
        await soak(tmp_path, total=400, concurrency=100, seed=2)
