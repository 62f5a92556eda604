"""The engine of the conformance check: ``_Checker`` and its rule groups.

Each ``check_*`` coroutine of ``_Checker`` is one part of the check (a group of
rules checked over one or more sessions); :mod:`trio_pop3._conformance` runs them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Final

import trio

from ._conformance_rules import CONFORMANCE_RULES, ConformanceReport, RuleFailure
from ._mailbox import MailStore
from ._server import POP3Server
from ._testing_client import (
    _NUMBER_PAIR_RE,
    _UIDL_LINE_RE,
    CRLF,
    POP3TestClient,
    ProtocolViolation,
    UnexpectedReply,
    _unstuff,
)
from ._testing_servers import open_memory_session

#: A unique-id: 1 to 70 characters in 0x21 to 0x7E (RFC 1939 section 7, UIDL-02).
_UID_RE: Final = re.compile(r"[\x21-\x7e]{1,70}")
_MARKER_RE: Final = re.compile(rb"^X-Conformance-Id: ([0-9]+)\r?$", re.MULTILINE)


class _Abort(Exception):
    """Ends one part of the check after a failure that leaves the session unusable."""


def _wire_form(message: bytes) -> bytes:
    data = message.replace(CRLF, b"\n").replace(b"\n", CRLF)
    if data and not data.endswith(CRLF):
        data += CRLF
    return data


def _split_lines(data: bytes) -> list[bytes]:
    """Split CRLF-ended wire data into lines without line ends."""
    return data.split(CRLF)[:-1] if data else []


def _top_form(lines: list[bytes], body_lines: int) -> list[bytes]:
    """The lines TOP sends: the header, the blank line, ``body_lines`` body lines."""
    if b"" not in lines:
        return lines
    blank = lines.index(b"")
    return lines[: blank + 1 + body_lines]


def _is_multiline(line: str) -> bool:
    """Whether ``line`` is a command whose +OK reply has data lines."""
    words = line.split()
    verb = words[0].upper() if words else ""
    return verb in ("RETR", "TOP", "CAPA") or (verb in ("LIST", "UIDL") and len(words) == 1)


def _not_stuffed(raw: Iterable[bytes]) -> list[bytes]:
    """Data lines as sent that start with one "." only: a line that was not stuffed."""
    return [line for line in raw if line.startswith(b".") and line[1:2] != b"."]


def _cap_tags(lines: Iterable[bytes]) -> set[str]:
    return {line.split(b" ", 1)[0].decode("ascii", "replace").upper() for line in lines}


class _Checker:
    """Runs the conformance rules over one server and collects what breaks."""

    def __init__(
        self,
        server: POP3Server,
        user: str,
        password: str,
        messages: Sequence[bytes] | None,
        count: int,
        skip: Iterable[str],
    ) -> None:
        self.server = server
        self.user = user
        self.password = password
        self.expected = [_wire_form(m) for m in messages] if messages is not None else None
        self.count = count
        if count < 3:
            raise ValueError("the conformance check needs a maildrop of at least 3 messages")
        self.skip = frozenset(skip)
        unknown = self.skip - CONFORMANCE_RULES.keys()
        if unknown:
            raise ValueError(f"unknown rules in skip: {sorted(unknown)}")
        self.passed: set[str] = set()
        self.failed: dict[str, list[str]] = {}
        self.not_checked: dict[str, str] = dict.fromkeys(self.skip, "skipped by the caller")
        self.current = "STATE-02"
        self.capa_auth: set[str] | None = None
        self.has_uidl = True
        self.has_top = True

    # -- bookkeeping ---------------------------------------------------------------
    def check(self, rule: str, ok: bool, detail: str) -> bool:
        if rule in self.skip:
            return ok
        if ok:
            self.passed.add(rule)
        else:
            self.failed.setdefault(rule, []).append(detail)
        return ok

    def at(self, rule: str) -> None:
        """Name the rule the next steps check, for errors nobody expected."""
        self.current = rule

    def not_reached(self, rules: Iterable[str], why: str) -> None:
        for rule in rules:
            if rule not in self.passed and rule not in self.failed:
                self.not_checked.setdefault(rule, why)

    async def part(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        try:
            await body()
        except _Abort:
            pass
        except ProtocolViolation as exc:
            self.check(exc.rule, False, f"{name}: {exc}")
        except UnexpectedReply as exc:
            self.check(self.current, False, f"{name}: {exc}")
        except (EOFError, trio.BrokenResourceError) as exc:
            self.check(self.current, False, f"{name}: connection lost: {exc}")

    def report(self, rules: Iterable[str]) -> ConformanceReport:
        failed = tuple(
            RuleFailure(rule, CONFORMANCE_RULES[rule], tuple(details))
            for rule, details in sorted(self.failed.items())
        )
        for rule in ("RESP-01", "RESP-02", "RESP-03"):
            # Every reply went through the strict client, which raises on a violation.
            self.check(rule, True, "")
        self.not_reached(rules, "not reached: an earlier failure ended that part")
        passed = tuple(sorted(self.passed - self.failed.keys()))
        not_checked = {r: w for r, w in sorted(self.not_checked.items()) if r not in self.failed}
        return ConformanceReport(passed, failed, MappingProxyType(not_checked))

    # -- sessions --------------------------------------------------------------------
    @asynccontextmanager
    async def session(self) -> AsyncIterator[POP3TestClient]:
        async with open_memory_session(self.server, read_greeting=False) as client:
            self.at("GREET-01")
            greeting = await client.read_greeting()
            if not self.check("GREET-01", greeting.ok, f"greeting {str(greeting)!r}"):
                raise _Abort
            yield client

    async def login(self, client: POP3TestClient, user: str | None = None) -> None:
        self.at("STATE-02")
        user = self.user if user is None else user
        reply = await client.command(f"USER {user}")
        if reply.ok:
            reply = await client.command(f"PASS {self.password}")
        if not self.check("STATE-02", reply.ok, f"login as {user!r}: {str(reply)!r}"):
            raise _Abort

    async def expect_err(self, client: POP3TestClient, rule: str, line: str, why: str) -> None:
        self.at(rule)
        reply = await client.command(line)
        if reply.ok and _is_multiline(line):
            await client.read_data_lines()  # stay in step with the server
        self.check(rule, not reply.ok, f"{line!r} {why}: answered {str(reply)!r}")

    async def stat(self, client: POP3TestClient, when: str) -> tuple[int, int]:
        self.at("STAT-01")
        reply = await client.command("STAT")
        match = _NUMBER_PAIR_RE.fullmatch(reply.text) if reply.ok else None
        if not self.check("STAT-01", match is not None, f"STAT {when}: {str(reply)!r}"):
            raise _Abort
        assert match is not None
        return int(match[1]), int(match[2])

    async def listing(self, client: POP3TestClient, when: str) -> dict[int, int]:
        self.at("LIST-01")
        reply = await client.multiline("LIST")
        if not self.check("LIST-01", reply.ok, f"LIST {when}: {str(reply)!r}"):
            raise _Abort
        sizes: dict[int, int] = {}
        for line in reply.lines:
            match = _NUMBER_PAIR_RE.fullmatch(line.decode("ascii", "replace"))
            if not self.check("LIST-01", match is not None, f"LIST {when}: line {line!r}"):
                raise _Abort
            assert match is not None
            sizes[int(match[1])] = int(match[2])
        return sizes

    async def unique_ids(self, client: POP3TestClient, when: str) -> dict[int, str] | None:
        if not self.has_uidl:
            self.not_reached(("UIDL-01", "UIDL-02", "UIDL-03", "UIDL-04"), "UIDL not announced")
            return None
        self.at("UIDL-01")
        reply = await client.multiline("UIDL")
        if not self.check("UIDL-01", reply.ok, f"UIDL {when}: {str(reply)!r}"):
            raise _Abort
        uids: dict[int, str] = {}
        for line in reply.lines:
            match = _UIDL_LINE_RE.fullmatch(line.decode("utf-8", "surrogateescape"))
            if not self.check("UIDL-01", match is not None, f"UIDL {when}: line {line!r}"):
                raise _Abort
            assert match is not None
            uid = match[2]
            self.check(
                "UIDL-02",
                _UID_RE.fullmatch(uid) is not None,
                f"UIDL {when}: unique-id {uid!r} of message {match[1]}",
            )
            uids[int(match[1])] = uid
        return uids

    @staticmethod
    def identify(body: bytes) -> int | None:
        match = _MARKER_RE.search(body)
        return int(match[1]) if match else None

    # -- the parts -------------------------------------------------------------------
    async def check_authorization(self) -> None:
        async with self.session() as client:
            self.at("CAPA-01")
            capa = await client.multiline("CAPA")
            if self.check("CAPA-01", capa.ok, f"CAPA before login: {str(capa)!r}"):
                self.capa_auth = _cap_tags(capa.lines)
                self.has_top = "TOP" in self.capa_auth
                self.has_uidl = "UIDL" in self.capa_auth
                if not self.has_top:
                    self.not_reached(("TOP-01", "TOP-02"), "TOP not announced")
            for line in ("STAT", "LIST", "RETR 1", "DELE 1", "RSET", "NOOP", "UIDL", "TOP 1 0"):
                await self.expect_err(client, "WIRE-08", line, "before login")
            await self.expect_err(client, "WIRE-07", "XYZZY", "(unknown command)")
            await self.expect_err(client, "WIRE-07", "", "(empty line)")
            self.at("USER-04")
            reply = await client.command(f"USER {self.user}")
            if reply.ok:
                reply = await client.command(f"PASS {self.password}-wrong")
                self.check("USER-04", not reply.ok, f"PASS with a wrong password: {reply}")
                if reply.ok:
                    raise _Abort
                if self.capa_auth is not None and "AUTH-RESP-CODE" in self.capa_auth:
                    self.check(
                        "CODE-07",
                        (reply.code or "").upper() == "AUTH",
                        f"wrong password answered {str(reply)!r}",
                    )
                else:
                    self.not_reached(["CODE-07"], "AUTH-RESP-CODE not announced")
            await self.login(client)
            for line in (f"USER {self.user}", f"PASS {self.password}"):
                await self.expect_err(client, "WIRE-08", line, "after login")
            self.at("CAPA-01")
            capa = await client.multiline("CAPA")
            after_ok = self.check("CAPA-01", capa.ok, f"CAPA after login: {str(capa)!r}")
            if after_ok and self.capa_auth is not None:
                lost = self.capa_auth - _cap_tags(capa.lines) - {"STLS"}
                self.check("CAPA-03", not lost, f"gone after login: {sorted(lost)}")
            self.at("NOOP-01")
            reply = await client.command("NOOP")
            self.check("NOOP-01", reply.ok, f"NOOP after login: {str(reply)!r}")
            await client.quit()
        async with self.session() as client:
            self.at("STATE-05")
            await client.command(f"USER {self.user}")
            reply = await client.quit()
            self.check("STATE-05", reply.ok, f"QUIT before login: {str(reply)!r}")
            rest = await client.read_until_closed()
            self.check("STATE-05", rest == b"", f"after QUIT before login: {rest[:80]!r}")

    async def check_listing(self) -> None:
        n = self.count
        async with self.session() as client:
            await self.login(client)
            count, octets = await self.stat(client, "after login")
            self.check("STATE-02", count == n, f"STAT after login: {count} messages, not {n}")
            sizes = await self.listing(client, "after login")
            self.check(
                "LIST-01",
                sorted(sizes) == list(range(1, n + 1)),
                f"LIST numbers {sorted(sizes)}, expected 1 to {n}",
            )
            self.check(
                "STAT-01",
                sum(sizes.values()) == octets,
                f"STAT says {octets} octets, LIST sizes add up to {sum(sizes.values())}",
            )
            if self.expected is not None:
                want = sorted(len(m) for m in self.expected)
                self.check(
                    "SIZE-01",
                    sorted(sizes.values()) == want,
                    f"LIST sizes {sorted(sizes.values())}, the messages have {want}",
                )
            for number, size in sizes.items():
                self.at("LIST-02")
                reply = await client.command(f"LIST {number}")
                self.check(
                    "LIST-02",
                    reply.ok and reply.text.split()[:2] == [str(number), str(size)],
                    f"LIST {number}: {str(reply)!r}, the listing said {size}",
                )
            uids = await self.unique_ids(client, "after login")
            if uids is not None:
                self.check(
                    "UIDL-01",
                    sorted(uids) == list(range(1, n + 1)),
                    f"UIDL numbers {sorted(uids)}, expected 1 to {n}",
                )
                if self.expected is not None:
                    self.check(
                        "UIDL-04",
                        len(set(uids.values())) == len(uids),
                        f"one unique-id for different messages: {sorted(uids.values())}",
                    )
                for number, uid in uids.items():
                    self.at("UIDL-01")
                    reply = await client.command(f"UIDL {number}")
                    self.check(
                        "UIDL-01",
                        reply.ok and reply.text == f"{number} {uid}",
                        f"UIDL {number}: {str(reply)!r}, the listing said {uid!r}",
                    )
            for line in ("LIST 0", f"LIST {n + 1}", "RETR abc", "RETR -1", "DELE 0", "LIST 1x"):
                await self.expect_err(client, "TRANS-03", line, "(no such message)")
            await self.expect_err(client, "WIRE-07", "TOP 1", "(no line count)")
            await client.quit()

    async def check_retrieval(self) -> None:
        async with self.session() as client:
            await self.login(client)
            sizes = await self.listing(client, "after login")
            seen: set[int] = set()
            for number, size in sorted(sizes.items()):
                self.at("RETR-01")
                reply = await client.command(f"RETR {number}")
                if not self.check("RETR-01", reply.ok, f"RETR {number}: {str(reply)!r}"):
                    continue
                raw = await client.read_data_lines(unstuff=False)
                bad = _not_stuffed(raw)
                if not self.check("DOT-02", not bad, f"RETR {number}: {bad[:1]!r} not stuffed"):
                    raise _Abort
                lines = [_unstuff(line) for line in raw]
                body = b"".join(line + CRLF for line in lines)
                self.check(
                    "SIZE-01",
                    len(body) == size,
                    f"message {number}: LIST size {size}, RETR sent {len(body)} octets",
                )
                expected = self.expected_for(number, body, seen)
                if expected is not None:
                    self.compare(number, lines, _split_lines(expected))
                if self.has_top:
                    await self.check_top(client, number, _split_lines(expected or body))
            await client.quit()

    def expected_for(self, number: int, body: bytes, seen: set[int]) -> bytes | None:
        if self.expected is None:
            return None
        index = self.identify(body)
        ok = index is not None and 0 <= index < len(self.expected) and index not in seen
        if not self.check("RETR-01", ok, f"RETR {number}: not one of the stored messages"):
            return None
        assert index is not None
        seen.add(index)
        return self.expected[index]

    def compare(self, number: int, got: list[bytes], want: list[bytes]) -> None:
        if got == want:
            self.check("RETR-01", True, "")
            self.check("DOT-02", True, "")
            return
        pairs = zip(got, want, strict=False)
        index = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(got), len(want)))
        line_got = got[index] if index < len(got) else None
        line_want = want[index] if index < len(want) else None
        # A lone "." sent unstuffed ends the reply early: the stored line starts with ".".
        unstuffed_dot = line_want is not None and line_want.startswith(b".")
        self.check(
            "DOT-02" if unstuffed_dot else "RETR-01",
            False,
            f"RETR {number} line {index + 1}: got {line_got!r}, stored {line_want!r}",
        )
        if unstuffed_dot:
            raise _Abort

    async def check_top(self, client: POP3TestClient, number: int, lines: list[bytes]) -> None:
        for body_lines, rule in ((0, "TOP-02"), (1, "TOP-01"), (10**6, "TOP-02")):
            self.at(rule)
            reply = await client.command(f"TOP {number} {body_lines}")
            if not self.check(rule, reply.ok, f"TOP {number} {body_lines}: {str(reply)!r}"):
                continue
            raw = await client.read_data_lines(unstuff=False)
            bad = _not_stuffed(raw)
            if not self.check("DOT-02", not bad, f"TOP {number}: {bad[:1]!r} not stuffed"):
                raise _Abort
            got = [_unstuff(line) for line in raw]
            want = _top_form(lines, body_lines)
            first = next(
                (f"{a!r} != {b!r}" for a, b in zip(got, want, strict=False) if a != b), "none"
            )
            self.check(
                rule,
                got == want,
                f"TOP {number} {body_lines}: {len(got)} lines, expected {len(want)}"
                f" (first difference: {first})",
            )

    async def check_locking(self) -> None:
        async with self.session() as first:
            await self.login(first)
            async with self.session() as second:
                self.at("LOCK-02")
                reply = await second.command(f"USER {self.user}")
                if reply.ok:
                    reply = await second.command(f"PASS {self.password}")
                self.check(
                    "LOCK-02",
                    not reply.ok and (reply.code or "").upper() == "IN-USE",
                    f"second login while the first session is open: {str(reply)!r}",
                )
                if reply.ok:
                    await second.quit()
            self.at("LOCK-03")
            reply = await first.quit()
            self.check("LOCK-03", reply.ok, f"QUIT: {str(reply)!r}")
            await first.read_until_closed()
        for after in ("a QUIT", "a dropped session"):
            async with self.session() as client:
                self.at("LOCK-03")
                reply = await client.command(f"USER {self.user}")
                reply = await client.command(f"PASS {self.password}")
                self.check("LOCK-03", reply.ok, f"login after {after}: {str(reply)!r}")
                # The first round leaves without QUIT: a dropped connection.
                if reply.ok and after != "a QUIT":
                    await client.quit()

    async def check_deletion(self) -> None:
        async with self.session() as client:
            await self.login(client)
            count0, octets0 = await self.stat(client, "after login")
            sizes0 = await self.listing(client, "after login")
            uids0 = await self.unique_ids(client, "after login")
            if not self.check("LIST-01", {1, 2} <= sizes0.keys(), f"LIST: {sizes0}"):
                raise _Abort
            self.at("DELE-01")
            reply = await client.command("DELE 1")
            if not self.check("DELE-01", reply.ok, f"DELE 1: {str(reply)!r}"):
                raise _Abort
            for line in ("DELE 1", "RETR 1", "LIST 1", "TOP 1 0", "UIDL 1"):
                if (line.startswith("TOP") and not self.has_top) or (
                    line.startswith("UIDL") and uids0 is None
                ):
                    continue
                await self.expect_err(client, "TRANS-02", line, "after DELE 1")
            count, octets = await self.stat(client, "after DELE 1")
            want = (count0 - 1, octets0 - sizes0[1])
            self.check(
                "STAT-01",
                (count, octets) == want,
                f"STAT after DELE 1: {count} {octets}, expected {want[0]} {want[1]}",
            )
            sizes = await self.listing(client, "after DELE 1")
            self.check(
                "TRANS-01",
                sizes == {k: v for k, v in sizes0.items() if k != 1},
                f"LIST after DELE 1: {sizes}, before: {sizes0}",
            )
            uids = await self.unique_ids(client, "after DELE 1")
            if uids is not None and uids0 is not None:
                self.check(
                    "TRANS-01",
                    uids == {k: v for k, v in uids0.items() if k != 1},
                    f"UIDL after DELE 1: {uids}, before: {uids0}",
                )
            self.at("TRANS-01")
            reply = await client.command("LIST 2")
            self.check("TRANS-01", reply.ok, f"LIST 2 after DELE 1: {str(reply)!r}")
            self.at("RSET-01")
            reply = await client.command("RSET")
            self.check("RSET-01", reply.ok, f"RSET: {str(reply)!r}")
            count, octets = await self.stat(client, "after RSET")
            self.check(
                "RSET-01",
                (count, octets) == (count0, octets0),
                f"STAT after RSET: {count} {octets}, expected {count0} {octets0}",
            )
            reply = await client.command("LIST 1")
            self.check("RSET-01", reply.ok, f"LIST 1 after RSET: {str(reply)!r}")
            self.at("DELE-01")
            for number in (1, 2):
                reply = await client.command(f"DELE {number}")
                self.check("DELE-01", reply.ok, f"DELE {number}: {str(reply)!r}")
            # Leave without QUIT: the connection drops.
        async with self.session() as client:
            await self.login(client)
            count, octets = await self.stat(client, "after a dropped session")
            self.check(
                "STATE-06",
                (count, octets) == (count0, octets0),
                f"DELE 1, DELE 2, connection dropped: now {count} messages ({octets} octets),"
                f" was {count0} ({octets0})",
            )
            uids = await self.unique_ids(client, "in a new session")
            if uids is not None and uids0 is not None:
                self.check("UIDL-03", uids == uids0, f"UIDL changed: {uids0} -> {uids}")
            self.at("RSET-01")
            await client.command("DELE 1")
            await client.command("RSET")
            reply = await client.quit()
            self.check("RSET-01", reply.ok, f"QUIT after DELE 1, RSET: {str(reply)!r}")
        async with self.session() as client:
            await self.login(client)
            count, octets = await self.stat(client, "after DELE, RSET, QUIT")
            self.check(
                "RSET-01",
                (count, octets) == (count0, octets0),
                f"DELE 1, RSET, QUIT removed something: {count} messages, was {count0}",
            )
            self.at("STATE-07")
            # RETR is safe only if the server byte-stuffs (else the session desyncs).
            readable = self.expected is not None and "DOT-02" not in self.failed
            victim = self.identify(await client.retr(2)) if readable else None
            await client.command("DELE 2")
            reply = await client.quit()
            self.check("STATE-07", reply.ok, f"QUIT after DELE 2: {str(reply)!r}")
            rest = await client.read_until_closed()
            self.check("STATE-07", rest == b"", f"data after the QUIT reply: {rest[:80]!r}")
        async with self.session() as client:
            await self.login(client)
            count, octets = await self.stat(client, "after DELE 2, QUIT")
            want = (count0 - 1, octets0 - sizes0[2])
            self.check(
                "STATE-07",
                (count, octets) == want,
                f"DELE 2, QUIT: {count} messages ({octets} octets) left, "
                f"expected {want[0]} ({want[1]})",
            )
            sizes = await self.listing(client, "after DELE 2, QUIT")
            self.check(
                "STATE-07",
                sorted(sizes) == list(range(1, count0)),
                f"messages are numbered {sorted(sizes)} in the next session",
            )
            uids = await self.unique_ids(client, "after DELE 2, QUIT")
            if uids is not None and uids0 is not None:
                left = set(uids0.values()) - {uids0[2]}
                self.check(
                    "STATE-07",
                    set(uids.values()) == left,
                    f"unique-ids left {sorted(uids.values())}, expected {sorted(left)}",
                )
                self.check(
                    "UIDL-03",
                    set(uids.values()) <= set(uids0.values()),
                    f"new unique-ids after a QUIT: {sorted(set(uids.values()) - left)}",
                )
            if self.expected is not None and readable:
                remaining = [self.identify(await client.retr(n)) for n in sorted(sizes)]
                kept = sorted(i for i in range(len(self.expected)) if i != victim)
                self.check(
                    "STATE-07",
                    sorted(i for i in remaining if i is not None) == kept,
                    f"messages left: {remaining}, expected {kept}",
                )
            await client.quit()

    async def check_empty(self, user: str) -> None:
        async with self.session() as client:
            await self.login(client, user)
            self.at("DOT-07")
            reply = await client.command("STAT")
            self.check("DOT-07", reply.text == "0 0", f"STAT of an empty maildrop: {reply}")
            for line in ("LIST", "UIDL") if self.has_uidl else ("LIST",):
                reply = await client.multiline(line)
                self.check(
                    "DOT-07",
                    reply.ok and not reply.lines,
                    f"{line} of an empty maildrop: {reply} {list(reply.lines)[:3]}",
                )
            await client.quit()

    async def check_backend_uids(self, store: MailStore, user: str) -> None:
        """UIDL-02 and UIDL-04 on the backend's own unique-ids.

        MailboxHandler sends an id RFC 1939 forbids as a digest, so the wire alone
        would not show that the backend breaks its contract.
        """
        self.at("UIDL-02")
        mailbox = await store.open(user)
        try:
            uids = [message.uid for message in await mailbox.list_messages()]
        finally:
            await mailbox.close()
        for uid in uids:
            self.check("UIDL-02", _UID_RE.fullmatch(uid) is not None, f"backend unique-id {uid!r}")
        repeated = sorted({uid for uid in uids if uids.count(uid) > 1})
        self.check("UIDL-04", not repeated, f"backend unique-ids given twice: {repeated}")

    async def check_other_user(self, user: str) -> None:
        async with self.session() as first:
            await self.login(first)
            async with self.session() as second:
                self.at("LOCK-01")
                reply = await second.command(f"USER {user}")
                reply = await second.command(f"PASS {self.password}")
                self.check(
                    "LOCK-01", reply.ok, f"{user!r} logging in while {self.user!r} is: {reply}"
                )
                if reply.ok:
                    await second.quit()
            await first.quit()
