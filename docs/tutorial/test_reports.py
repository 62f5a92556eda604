"""Part 3 of the tutorial: tests of the report server, run with pytest-trio.

Run them with ``pytest test_reports.py`` (pytest-trio's ``trio_mode`` is on in this
project; elsewhere add ``-p trio`` or mark the tests ``@pytest.mark.trio``).
"""

from __future__ import annotations

import logging
import poplib

import pytest
import trio
import trio.testing
from reports import ReportHandler
from reports_mailbox import ReportStore, make_server

from trio_pop3.testing import TEST_LIMITS, check_handler, open_memory_session

pytestmark = pytest.mark.trio


async def test_poplib_deletes_only_after_quit() -> None:
    store = ReportStore()
    server = make_server(store, host="127.0.0.1", port=0)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve)
        port = listeners[0].socket.getsockname()[1]

        def client() -> tuple[int, int]:
            # poplib blocks, so it runs in a worker thread.
            pop = poplib.POP3("127.0.0.1", port, timeout=10)
            pop.user("alice")
            pop.pass_("wonderland")
            count, _ = pop.stat()
            pop.dele(1)
            pop.quit()
            return count, len(store.deleted["alice"])

        assert await trio.to_thread.run_sync(client) == (7, 1)
        nursery.cancel_scope.cancel()


async def test_idle_client_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    server = make_server(ReportStore(), timeout=600)
    client, server_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, server_end)
        greeting = await client.receive_some()
        assert greeting.startswith(b"+OK")
        start = trio.current_time()
        # Say nothing: after 600 (virtual) seconds the server hangs up.
        assert await client.receive_some() == b""
        assert trio.current_time() - start == pytest.approx(600)


async def test_with_the_testing_helpers() -> None:
    server = make_server(ReportStore(), limits=TEST_LIMITS)
    async with open_memory_session(server) as client:
        await client.login("alice", "wonderland")
        assert await client.stat() == (7, sum((await client.list_sizes()).values()))
        assert b"Subject: Report for" in await client.retr(1)
        reply = await client.command("DELE 99")
        assert not reply.ok
        await client.quit()


async def test_conformance() -> None:
    # ReportStore makes up its own messages: check their structure, not their bytes.
    server = make_server(ReportStore(), limits=TEST_LIMITS)
    await check_handler(server, user="alice", password="wonderland", messages=7)


async def test_part_one_refuses_bad_message_numbers(caplog: pytest.LogCaptureFixture) -> None:
    # RFC 1939 section 5: RETR needs the number of an existing message; else -ERR.
    caplog.set_level(logging.ERROR)
    async with open_memory_session(ReportHandler, limits=TEST_LIMITS) as client:
        await client.login("alice", "wonderland")
        for line in ["RETR", "RETR 0", "RETR 8", "RETR x", "RETR \u00b2"]:
            reply = await client.command(line)
            assert not reply.ok, (line, reply)
        assert b"Subject: Report for" in await client.retr(1)
        await client.quit()
    assert not caplog.records  # a client's mistake is no server failure
