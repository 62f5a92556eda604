"""Parsing command lines and formatting single-line replies (pure functions).

A command line (RFC 1939 section 3) is a keyword, then optionally white space and
an argument.  The line is split at the first run of white space (the Perl original's
rule); the keyword is case-insensitive; the argument keeps its case and its inner
and trailing spaces (PASS takes the whole rest of the line, RFC 1939 section 7).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

__all__ = [
    "MAX_COMMAND_NAME",
    "MAX_GREETING_TEXT",
    "MAX_REPLY_LINE",
    "Command",
    "CommandSyntaxError",
    "fit_greeting",
    "format_reply",
    "greeting_text_problem",
    "parse_command",
]

#: Longest keyword accepted.  RFC 2449 section 3 says 3 or 4 characters; extensions
#: added with ``add_command`` may be longer, but never this long.
MAX_COMMAND_NAME = 40

#: RFC 2449 section 4: the first line of a response is at most 512 octets with CRLF.
MAX_REPLY_LINE = 512

#: Command lines remembered by :func:`parse_command`, so a repeated line (STAT, NOOP,
#: "LIST 1", "USER bob") is not parsed again.  A few hundred cover the commands
#: clients repeat; the cache is emptied when full, which bounds its memory.
_RECENT_LIMIT = 256
#: Longer lines are not remembered: repeats are short commands, and long lines
#: should not pin memory.
_RECENT_LINE_MAX = 64
#: Commands whose arguments are secrets: never remembered.
_SECRET_COMMANDS = frozenset({"PASS", "APOP", "AUTH"})

_SPLIT = re.compile(r"([^ \t]+)(?:[ \t]+(.*))?", re.DOTALL)
# Controls other than TAB, and DEL, are not allowed anywhere in a command line.
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CODE = re.compile(r"[\x21-\x2e\x30-\x5c\x5e-\x7e]+(?:/[\x21-\x2e\x30-\x5c\x5e-\x7e]+)*")


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed command line.

    Attributes:
        name: The keyword, upper case.
        arg: Everything after the first run of white space, or None.
    """

    name: str
    arg: str | None


class CommandSyntaxError(ValueError):
    """The client sent a line that is not a command; the text is safe to send."""


def parse_command(line: bytes) -> Command:
    """Parse one command line (without its line end).

    >>> parse_command(b"pass two  words ")
    Command(name='PASS', arg='two  words ')

    PASS takes everything after the one space that ends its name (RFC 1939 section 7:
    a password may hold spaces, even at its start); other arguments lose their
    leading spaces.

    >>> parse_command(b"PASS  secret")
    Command(name='PASS', arg=' secret')
    >>> parse_command(b"USER  alice")
    Command(name='USER', arg='alice')

    Raises:
        CommandSyntaxError: empty line, invalid UTF-8, control characters, or an
            impossible keyword.
    """
    command = _recent.get(line)
    if command is not None:
        return command
    command = _parse(line)
    if len(line) <= _RECENT_LINE_MAX and command.name not in _SECRET_COMMANDS:
        if len(_recent) >= _RECENT_LIMIT:
            _recent.clear()
        _recent[line] = command
    return command


#: Recently parsed lines (see :data:`_RECENT_LIMIT`).  Sharing is safe: Command is
#: immutable.
_recent: dict[bytes, Command] = {}


def _parse(line: bytes) -> Command:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandSyntaxError("Command is not valid UTF-8.") from None
    if not text.isprintable() and _CONTROLS.search(text):
        raise CommandSyntaxError("Command contains control characters.")
    if "\t" in text or text.startswith(" "):
        m = _SPLIT.match(text.lstrip(" \t"))
        if m is None:
            raise CommandSyntaxError("Empty command.")
        name, arg = m.group(1), m.group(2)
    else:  # the usual "NAME" or "NAME ARG": the same split, without the regex
        name, _, arg = text.partition(" ")
        if not name:
            raise CommandSyntaxError("Empty command.")
        if name.upper() != "PASS":  # WIRE-11: a password may start with a space
            arg = arg.lstrip(" ")
    if len(name) > MAX_COMMAND_NAME or not name.isascii() or not name.isprintable():
        raise CommandSyntaxError("Unknown command.")
    # Interned: the name outlives the command (as previous_command), and every session
    # idling after PASS would otherwise hold its own copy of "PASS".
    return Command(sys.intern(name.upper()), arg if arg else None)


def _clean(text: str) -> str:
    # Never let text inject a line end (SEC-06) or start with "[" when it is not a
    # response code (RFC 2449 section 3, RESP-06).
    text = _CONTROLS.sub(" ", text.replace("\t", " "))
    return text


#: Longest reply text that needs no cutting: the line limit less "-ERR " and CRLF.
_SHORT_TEXT = MAX_REPLY_LINE - len("-ERR \r\n")

#: Formatted plain replies by text, one cache for +OK and one for -ERR: a pipelined
#: burst repeats the same few replies, and a dict lookup is a third of formatting.
#: Emptied when full, so client-chosen text (an echoed argument) cannot grow it.
_REPLY_CACHE_SIZE = 256
_OK_REPLIES: dict[str, bytes] = {}
_ERR_REPLIES: dict[str, bytes] = {}


def format_reply(ok: bool, text: str = "", code: str | None = None) -> bytes:
    """Format a single-line reply, at most :data:`MAX_REPLY_LINE` octets with CRLF.

    Control characters in ``text`` become spaces and overlong text is cut at a
    character boundary, so client input echoed in a reply can never break the
    protocol (RFC 2449 section 4; RESP-03, SEC-06).

    >>> format_reply(True, "2 320")
    b'+OK 2 320\\r\\n'
    >>> format_reply(False, "Mailbox in use.", "IN-USE")
    b'-ERR [IN-USE] Mailbox in use.\\r\\n'

    Raises:
        ValueError: ``code`` does not match RFC 2449's response code syntax.
    """
    if code is None:
        cache = _OK_REPLIES if ok else _ERR_REPLIES
        reply = cache.get(text)
        if reply is not None:  # the same reply again, e.g. STAT in a pipelined burst
            return reply
        if text.isascii() and text.isprintable() and len(text) <= _SHORT_TEXT:
            if not text:
                return b"+OK\r\n" if ok else b"-ERR\r\n"
            if not text.startswith("["):
                # The usual reply: nothing to clean, escape or cut.
                reply = (b"+OK " if ok else b"-ERR ") + text.encode("ascii") + b"\r\n"
                if len(cache) >= _REPLY_CACHE_SIZE:
                    cache.clear()
                cache[text] = reply
                return reply
    head = "+OK" if ok else "-ERR"
    if code is not None:
        code = str(code)
        if not _CODE.fullmatch(code):
            raise ValueError(f"invalid response code {code!r}")
        head = f"{head} [{code}]"
    text = _clean(text)
    if code is None and text.startswith("["):
        text = "(" + text[1:]
    raw = (f"{head} {text}" if text else head).encode("utf-8", "replace")
    if len(raw) > MAX_REPLY_LINE - 2:
        raw = raw[: MAX_REPLY_LINE - 2].decode("utf-8", "ignore").encode("utf-8")
    return raw + b"\r\n"


#: Longest greeting text: the reply line limit less ``+OK `` and CRLF (RFC 2449 §4).
MAX_GREETING_TEXT = MAX_REPLY_LINE - len("+OK \r\n")


def greeting_text_problem(text: str) -> str | None:
    """Say why ``text`` cannot be a greeting's text, or return None if it can.

    RFC 2449 section 3: ``greeting = "+OK" [resp-code] *gchar [timestamp] *gchar``,
    where a ``gchar`` is any ASCII character but NUL, CR, LF, ``<`` and ``>``: the
    only ``<...>`` in a greeting is the APOP timestamp, and it announces APOP.

    >>> greeting_text_problem("POP3 server ready.") is None
    True
    >>> greeting_text_problem("ready <soon>")
    "contains '<' or '>', which RFC 2449 section 3 keeps for the APOP timestamp"
    """
    if len(text) > MAX_GREETING_TEXT:
        return f"is longer than {MAX_GREETING_TEXT} characters (RFC 2449 section 4)"
    if "<" in text or ">" in text:
        return "contains '<' or '>', which RFC 2449 section 3 keeps for the APOP timestamp"
    if not text.isascii() or "\0" in text or "\r" in text or "\n" in text:
        return "must be ASCII without NUL, CR or LF (RFC 2449 section 3)"
    return None


def fit_greeting(text: str, timestamp: str) -> str:
    """Return ``text`` and the APOP ``timestamp``, cut to fit one reply line.

    The text is shortened, never the timestamp, which the client hashes whole
    (RFC 1939 section 7).

    >>> fit_greeting("ready.", "<1.2@host>")
    'ready. <1.2@host>'
    >>> len(fit_greeting("x" * 600, "<1.2@host>")) == MAX_GREETING_TEXT
    True
    """
    room = MAX_GREETING_TEXT - len(timestamp) - 1
    return f"{text[: max(room, 0)]} {timestamp}"
