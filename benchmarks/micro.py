"""Micro-benchmarks of trio_pop3's sans-I/O core (no sockets, no trio).

Measures, with the standard library only (``time.perf_counter``):

* command input: ``LineBuffer`` splitting a pipelined burst fed in 64 KiB reads (as
  the session does), and ``parse_command`` on each line: commands/s, together and
  apart;
* ``format_reply`` on a mix of typical single-line replies (mostly hits in its cache of
  recent replies, as in a pipelined burst), and on replies that are all different:
  replies/s;
* ``MessageWriter`` (CRLF normalisation + byte-stuffing, as RETR sends a message) on
  a realistic 16 MiB message stored with LF line ends and some lines starting with
  ".", fed in 256 KiB chunks like the Maildir reader: MB/s of stored octets;
* ``wire_size`` (the RFC 1939 size LIST reports) of the same message: MB/s.

Each benchmark runs ``--repeat`` times; the table shows the best and the median
run.  Run from the repository root::

    python benchmarks/micro.py            # full run, ~20 s
    python benchmarks/micro.py --quick    # smaller inputs, fewer repeats, ~2 s
"""

from __future__ import annotations

import argparse
import base64
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Make "python benchmarks/micro.py" work from a checkout without installing.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from trio_pop3._config import Limits  # noqa: E402
from trio_pop3._proto._commands import format_reply, parse_command  # noqa: E402
from trio_pop3._proto._receivebuffer import LineBuffer, LineTooLong  # noqa: E402
from trio_pop3._proto._wire import MessageWriter, WireSizeCounter, wire_size  # noqa: E402

#: What the session asks of the socket per read (trio_pop3._session.RECEIVE_SIZE).
RECEIVE_SIZE = 65536
#: Chunk size of the Maildir reader (trio_pop3.mailbox._maildir.READ_CHUNK_SIZE).
READ_CHUNK_SIZE = 256 * 1024
#: LineBuffer limits as the session sets them.
LINE_LIMIT = Limits().max_auth_line
MAX_DISCARD = Limits().max_discard

#: A pipelined burst: what a client sends back to back (PIPELINING, RFC 2449).
BURST_COMMANDS = (
    b"STAT",
    b"LIST 1",
    b"NOOP",
    b"UIDL 7",
    b"RETR 12",
    b"TOP 3 10",
    b"DELE 4",
    b"list",
    b"USER user17",
    b"PASS pass",
)

#: Typical single-line replies: (ok, text, code).
REPLIES: tuple[tuple[bool, str, str | None], ...] = (
    (True, "20 84123", None),
    (True, "1 4168", None),
    (True, "", None),
    (True, "Logged in.", None),
    (False, "No such message.", None),
    (False, "Mailbox in use.", "IN-USE"),
    (True, "4168 octets", None),
    (False, "Unknown command.", None),
)


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    unit: str
    best: float
    median: float
    note: str


def _timed(func: Callable[[], object], repeat: int) -> list[float]:
    """Run ``func`` ``repeat`` times (after one warm-up run); return the durations."""
    func()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return times


def _result(name: str, unit: str, work: float, times: Sequence[float], note: str) -> Result:
    return Result(name, unit, work / min(times), work / statistics.median(times), note)


def make_burst(count: int) -> bytes:
    """Return ``count`` CRLF-terminated commands cycling through BURST_COMMANDS."""
    cycle = [c + b"\r\n" for c in BURST_COMMANDS]
    return b"".join(cycle[i % len(cycle)] for i in range(count))


def make_message(size: int, seed: int = 1939) -> bytes:
    """Return a deterministic LF-stored MIME message of ``size`` octets.

    About 1/16 is a plain-text part wrapped at 72 columns in which every 40th line
    starts with "." (these need stuffing); the rest is a base64 attachment with
    76-column lines, as mail clients send them.
    """
    rng = random.Random(seed)
    words = [b"the", b"quick", b"brown", b"fox", b"jumps", b"over", b"a", b"lazy", b"mail"]
    head = (
        b"Return-Path: <alice@example.org>\n"
        b"Received: from mx.example.org by pop.example.net; Thu, 26 Nov 2026 09:00:00 +0000\n"
        b"Date: Thu, 26 Nov 2026 09:00:00 +0000\n"
        b"From: Alice <alice@example.org>\n"
        b"To: Bob <bob@example.net>\n"
        b"Subject: benchmark message\n"
        b"Message-ID: <bench.1@example.org>\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="=_b"\n'
        b"\n"
        b"--=_b\n"
        b"Content-Type: text/plain; charset=us-ascii\n"
        b"\n"
    )
    lines = []
    text_size = size // 16
    n = 0
    total = 0
    while total < text_size:
        if n % 40 == 39:
            line = b".quoted line that starts with a dot"
        else:
            parts = []
            width = 0
            while width < 60:
                w = rng.choice(words)
                parts.append(w)
                width += len(w) + 1
            line = b" ".join(parts)
        lines.append(line)
        total += len(line) + 1
        n += 1
    text = b"\n".join(lines) + b"\n"
    mid = b"\n--=_b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
    tail = b"--=_b--\n"
    room = max(0, size - len(head) - len(text) - len(mid) - len(tail))
    raw = rng.randbytes(room // 77 * 57)
    b64 = base64.encodebytes(raw)  # 76 columns + LF
    pad = size - len(head) - len(text) - len(mid) - len(b64) - len(tail)
    filler = b"=" * (pad - 1) + b"\n" if pad > 0 else b""
    return head + text + mid + b64 + filler + tail


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def bench_commands(count: int, repeat: int) -> list[Result]:
    burst = make_burst(count)
    reads = _chunks(burst, RECEIVE_SIZE)
    lines = burst.split(b"\r\n")[:-1]

    def split_and_parse() -> None:
        buf = LineBuffer(limit=LINE_LIMIT, max_discard=MAX_DISCARD)
        for data in reads:
            buf.feed(data)
            while True:
                line = buf.next_line()
                if line is None:
                    break
                assert not isinstance(line, LineTooLong)
                parse_command(line)

    def split_only() -> None:
        buf = LineBuffer(limit=LINE_LIMIT, max_discard=MAX_DISCARD)
        for data in reads:
            buf.feed(data)
            while buf.next_line() is not None:
                pass

    def parse_only() -> None:
        for line in lines:
            parse_command(line)

    note = f"{count} cmds, {len(burst)} B in {len(reads)} reads"
    return [
        _result(
            "LineBuffer + parse_command", "cmds/s", count, _timed(split_and_parse, repeat), note
        ),
        _result("LineBuffer.next_line only", "cmds/s", count, _timed(split_only, repeat), note),
        _result(
            "parse_command only", "cmds/s", count, _timed(parse_only, repeat), f"{count} lines"
        ),
    ]


def bench_replies(count: int, repeat: int) -> list[Result]:
    cases = [REPLIES[i % len(REPLIES)] for i in range(count)]

    def run() -> None:
        for ok, text, code in cases:
            format_reply(ok, text, code)

    # Every text new (a number in it), so the reply cache never hits: the cost of
    # formatting itself, as for replies that echo a client's argument.
    distinct = [(True, f"{i} {i * 37}", None) for i in range(count)]

    def run_distinct() -> None:
        for ok, text, code in distinct:
            format_reply(ok, text, code)

    note = f"{count} replies, {len(REPLIES)}-reply mix"
    return [
        _result("format_reply", "replies/s", count, _timed(run, repeat), f"{note} (cached)"),
        _result(
            "format_reply, distinct",
            "replies/s",
            count,
            _timed(run_distinct, repeat),
            f"{count} different texts",
        ),
    ]


def bench_message(size: int, repeat: int) -> list[Result]:
    message = make_message(size)
    chunks = _chunks(message, READ_CHUNK_SIZE)
    crlf_chunks = _chunks(message.replace(b"\n", b"\r\n"), READ_CHUNK_SIZE)
    dots = message.count(b"\n.")
    out_size = 0

    def write(parts: list[bytes]) -> None:
        nonlocal out_size
        writer = MessageWriter()
        n = 0
        for chunk in parts:
            n += len(writer.feed(chunk))
        out_size = n + len(writer.finish())

    def count_chunked() -> None:
        counter = WireSizeCounter()
        for chunk in chunks:
            counter.feed(chunk)
        counter.finish()

    mb = size / 1e6
    note = f"{size / 2**20:.0f} MiB LF, {dots} dot lines, {READ_CHUNK_SIZE // 1024} KiB chunks"
    times = _timed(lambda: write(chunks), repeat)
    results = [_result("MessageWriter (RETR body)", "MB/s", mb, times, note)]
    expected = wire_size(message) + dots + 3  # stuffing dots and ".\r\n"
    if out_size != expected:
        raise AssertionError(f"MessageWriter produced {out_size} octets, expected {expected}")
    crlf_mb = sum(map(len, crlf_chunks)) / 1e6
    results.append(
        _result(
            "MessageWriter, CRLF stored",
            "MB/s",
            crlf_mb,
            _timed(lambda: write(crlf_chunks), repeat),
            "same message stored with CRLF",
        )
    )
    results.append(
        _result(
            "wire_size (whole message)",
            "MB/s",
            mb,
            _timed(lambda: wire_size(message), repeat),
            "one bytes object",
        )
    )
    results.append(
        _result(
            "WireSizeCounter (chunked)",
            "MB/s",
            mb,
            _timed(count_chunked, repeat),
            f"{READ_CHUNK_SIZE // 1024} KiB chunks, as the Maildir scan",
        )
    )
    return results


def _fmt(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e4:
        return f"{value / 1e3:.0f} k"
    return f"{value:.0f}"


def print_table(results: Sequence[Result]) -> None:
    headers = ("benchmark", "unit", "best", "median", "input")
    rows = [(r.name, r.unit, _fmt(r.best), _fmt(r.median), r.note) for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        cells = [
            c.rjust(w) if i in (2, 3) else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("| " + " | ".join(cells) + " |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small inputs, 3 repeats")
    parser.add_argument("--repeat", type=int, help="runs per benchmark (default 7, quick 3)")
    parser.add_argument(
        "--message-mib", type=int, help="message size in MiB (default 16, quick 2)"
    )
    args = parser.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 7)
    commands = 20_000 if args.quick else 200_000
    replies = 20_000 if args.quick else 200_000
    mib = args.message_mib or (2 if args.quick else 16)

    print(
        f"# trio_pop3 micro-benchmarks: Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.machine()}, "
        f"repeat={repeat}{' (quick)' if args.quick else ''}"
    )
    results = bench_commands(commands, repeat)
    results += bench_replies(replies, repeat)
    results += bench_message(mib * 2**20, repeat)
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
