"""libFuzzer (atheris) harness for the trio_pop3 protocol core.

Run::

    pip install atheris
    python fuzz/fuzz_core.py -runs=100000            # or -max_total_time=60
    python fuzz/fuzz_core.py corpus_dir/ -runs=1000000

Each input is split by its first byte into a mode and a payload:

* mode 0: the payload is a client byte stream, cut into chunks at positions taken
  from the payload, fed to ``LineBuffer``; each complete line goes through
  ``parse_command`` and the error text through ``format_reply``.  Only
  ``BufferOverflow`` and ``CommandSyntaxError`` may be raised; the buffer never holds
  more than its limit between reads.
* mode 1: the payload is a stored message, chunked, fed to ``MessageWriter`` (RETR
  and TOP) and ``WireSizeCounter``; the wire form must end in ``.CRLF``, contain no bare
  LF, un-stuff to the CRLF-normalised message, and agree with the size counter.
* mode 2: the payload is reply text and a response code for ``format_reply``: only
  ``ValueError`` for a bad code; otherwise one CRLF line of at most 512 octets.

Any other exception, or a failed assertion, is a crash that libFuzzer reports with
the input that caused it.
"""

from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

with atheris.instrument_imports():
    from trio_pop3._proto._commands import (
        MAX_REPLY_LINE,
        CommandSyntaxError,
        format_reply,
        parse_command,
    )
    from trio_pop3._proto._receivebuffer import BufferOverflow, LineBuffer, LineTooLong
    from trio_pop3._proto._wire import MessageWriter, WireSizeCounter

LIMIT = 300
MAX_DISCARD = 4096
_BARE_LF = re.compile(rb"(?<!\r)\n")


def _chunks(data: bytes, seed: int) -> list[bytes]:
    """Cut ``data`` into pieces of 1..(seed % 64 + 1) octets, deterministically."""
    step = seed % 64 + 1
    out = []
    pos = 0
    i = 0
    while pos < len(data):
        size = (step * (i + 1)) % 97 + 1
        out.append(data[pos : pos + size])
        pos += size
        i += 1
    return out


def _wire_form(message: bytes) -> bytes:
    data = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def _lines(data: bytes, seed: int) -> None:
    buf = LineBuffer(limit=LIMIT, max_discard=MAX_DISCARD)
    try:
        for piece in _chunks(data, seed):
            buf.feed(piece)
            while (line := buf.next_line()) is not None:
                if isinstance(line, LineTooLong):
                    assert line.length > LIMIT
                    continue
                assert b"\n" not in line
                try:
                    command = parse_command(line)
                except CommandSyntaxError as exc:
                    reply = format_reply(False, str(exc))
                    assert reply.endswith(b"\r\n")
                    continue
                assert command.name == command.name.upper()
            assert len(buf) <= LIMIT
    except BufferOverflow:
        pass


def _message(data: bytes, seed: int) -> None:
    body_lines = None if seed % 3 == 0 else seed % 7
    writer = MessageWriter(body_lines)
    counter = WireSizeCounter()
    parts = []
    for chunk in _chunks(data, seed):
        counter.feed(chunk)
        if not writer.done:
            parts.append(writer.feed(chunk))
    parts.append(writer.finish())
    wire = b"".join(parts)
    assert wire.endswith(b".\r\n")
    assert _BARE_LF.search(wire) is None
    if body_lines is None:
        lines = wire[:-3].split(b"\r\n")[:-1]
        unstuffed = b"".join((x[1:] if x.startswith(b".") else x) + b"\r\n" for x in lines)
        assert unstuffed == _wire_form(data)
        assert counter.finish() == len(unstuffed)


def _reply(data: bytes, seed: int) -> None:
    text = data.decode("utf-8", "surrogateescape")
    code: str | None = None
    if seed & 1:
        code, _, text = text.partition("\x00")
    try:
        line = format_reply(bool(seed & 2), text, code)
    except ValueError:
        assert code is not None
        return
    assert line.endswith(b"\r\n")
    assert len(line) <= MAX_REPLY_LINE
    assert b"\r" not in line[:-2]
    assert b"\n" not in line[:-2]


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    mode, seed, payload = data[0] % 3, data[1], data[2:]
    (_lines, _message, _reply)[mode](payload, seed)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
