"""The rules, messages and results of the conformance check of :mod:`trio_pop3.testing`.

The check itself is :mod:`trio_pop3._conformance`; the names are public through
:mod:`trio_pop3.testing`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, final

__all__ = [
    "CONFORMANCE_MESSAGES",
    "CONFORMANCE_RULES",
    "ConformanceError",
    "ConformanceReport",
    "RuleFailure",
]

#: The rules :func:`check_handler` and :func:`check_mailbox_backend` check, by their
#: ``RFC-CHECKLIST.md`` ID.  Pass IDs in ``skip`` to leave rules out, for example
#: ``skip={"LOCK-02"}`` for a server that allows concurrent sessions on purpose.
CONFORMANCE_RULES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "GREET-01": "the greeting is a single +OK line",
        "RESP-01": "every reply starts with +OK or -ERR",
        "RESP-02": "every line the server sends ends in CRLF",
        "RESP-03": "the first line of a reply is at most 512 octets",
        "CAPA-01": "CAPA answers in AUTHORIZATION and in TRANSACTION",
        "CAPA-03": "capabilities announced before login are announced after it too",
        "WIRE-07": "an unknown or malformed command gets -ERR",
        "WIRE-08": "a command that is not valid in the current state gets -ERR",
        "USER-04": "a wrong password gets -ERR; the client may then log in",
        "CODE-07": "with AUTH-RESP-CODE, a wrong password gets -ERR [AUTH]",
        "STATE-05": "QUIT in AUTHORIZATION answers +OK and closes, without UPDATE",
        "STATE-02": "after login every message is there, none marked deleted",
        "STAT-01": "STAT is '+OK count octets' over the messages not marked deleted",
        "LIST-01": "LIST gives 'number size' for each message not marked deleted",
        "LIST-02": "LIST n answers '+OK n size'",
        "UIDL-01": "UIDL gives 'number unique-id' lines; UIDL n answers '+OK n unique-id'",
        "UIDL-02": "a unique-id is 1 to 70 characters in 0x21 to 0x7E",
        "UIDL-03": "unique-ids persist across sessions, with or without UPDATE",
        "UIDL-04": "different messages have different unique-ids",
        "RETR-01": "RETR n sends the message as stored, with CRLF line ends",
        "DOT-02": "a line starting with '.' is byte-stuffed, the first line included",
        "DOT-07": "an empty maildrop: STAT '+OK 0 0', LIST and UIDL '+OK' then '.'",
        "SIZE-01": "a message's LIST size is the octet count RETR sends (CRLF, unstuffed)",
        "TOP-01": "TOP n k sends the header, the blank line and k body lines",
        "TOP-02": "TOP n 0 sends the header and the blank line; a huge k the whole message",
        "TRANS-01": "message numbers do not change within a session (DELE renumbers nothing)",
        "TRANS-02": "any reference to a message marked deleted gets -ERR",
        "TRANS-03": "message number 0, past the end, or not a number gets -ERR",
        "DELE-01": "DELE n answers +OK and only marks the message",
        "NOOP-01": "NOOP answers +OK in TRANSACTION",
        "RSET-01": "RSET unmarks every message; DELE, RSET, QUIT removes nothing",
        "STATE-06": "a session that ends without QUIT removes nothing",
        "STATE-07": "QUIT removes exactly the messages marked deleted, answers, and closes",
        "LOCK-01": "the lock covers one maildrop: another user can log in meanwhile",
        "LOCK-02": "a second login to a maildrop in use gets -ERR [IN-USE]",
        "LOCK-03": "the lock is released after QUIT and after a dropped connection",
    }
)

#: Rules only :func:`check_mailbox_backend` checks (it knows a second, empty maildrop).
_MAILBOX_ONLY_RULES: Final = frozenset({"DOT-07", "LOCK-01"})


def _large_message() -> bytes:
    lines = [b"From: big@example.org", b"X-Conformance-Id: 5", b"Subject: large", b""]
    for n in range(4000):
        prefix = b"." if n % 7 == 0 else b""
        lines.append(prefix + b"line %05d " % n + b"x" * 40)
    return b"\n".join(lines) + b"\n"


#: The messages :func:`check_mailbox_backend` stores (and :func:`check_handler`'s
#: default): CRLF and LF line ends, lines that need byte-stuffing (``.x``, ``.``,
#: ``..``), a first line that starts with ``.``, no final line end, an 8-bit body,
#: and a message of about 200 KB that crosses every chunk boundary.  Each carries
#: an ``X-Conformance-Id`` header so the check finds it whatever the numbering.
CONFORMANCE_MESSAGES: Final[tuple[bytes, ...]] = (
    b"From: a@example.org\r\nX-Conformance-Id: 0\r\nSubject: CRLF\r\n\r\nline 1\r\nline 2\r\n",
    b"From: b@example.org\nX-Conformance-Id: 1\nSubject: dots\n\n.dotted\n.\n..two\nend\n",
    b".First-Line: starts with a dot\nX-Conformance-Id: 2\nSubject: dot first\n\nbody\n",
    b"From: c@example.org\nX-Conformance-Id: 3\nSubject: no final newline\n\nlast line",
    b"From: d@example.org\nX-Conformance-Id: 4\nSubject: 8-bit\nMIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
    b"Gr\xc3\xbc\xc3\x9fe\n\n\nafter two blank lines\n",
    _large_message(),
)


@final
@dataclass(frozen=True, slots=True)
class RuleFailure:
    """One broken rule, with what was seen.

    Attributes:
        rule: The ``RFC-CHECKLIST.md`` ID, e.g. ``"SIZE-01"``.
        title: What the rule says (:data:`CONFORMANCE_RULES`).
        details: One entry per failed observation.

    Example::

        failure = RuleFailure("SIZE-01", CONFORMANCE_RULES["SIZE-01"], ("...",))
    """

    rule: str
    title: str
    details: tuple[str, ...]

    def __str__(self) -> str:
        lines = [f"{self.rule} ({self.title}):"]
        lines += [f"    {detail}" for detail in self.details]
        return "\n".join(lines)


@final
@dataclass(frozen=True, slots=True)
class ConformanceReport:
    """What a conformance check checked.

    Attributes:
        passed: IDs of the rules checked and found kept.
        failed: The rules broken (empty in a report returned normally).
        not_checked: Rule ID -> why it was not checked (skipped by the caller, the
            command is not implemented, or an earlier failure ended that part).

    Example::

        report = await check_mailbox_backend(make_store)
        assert "UIDL-03" in report.passed
    """

    passed: tuple[str, ...]
    failed: tuple[RuleFailure, ...] = ()
    not_checked: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [f"{len(self.passed)} rules kept: {', '.join(self.passed)}"]
        parts += [str(failure) for failure in self.failed]
        parts += [f"not checked: {rule} ({why})" for rule, why in self.not_checked.items()]
        return "\n".join(parts)


class ConformanceError(AssertionError):
    """The server broke one or more rules; the message lists every one.

    Attributes:
        report: The full :class:`ConformanceReport`.

    Example::

        with pytest.raises(ConformanceError) as info:
            await check_mailbox_backend(make_broken_store)
        assert "SIZE-01" in info.value.rules
    """

    def __init__(self, report: ConformanceReport) -> None:
        lines = [f"{len(report.failed)} POP3 conformance rules broken:"]
        lines += [str(failure) for failure in report.failed]
        if report.not_checked:
            lines.append("not checked: " + ", ".join(report.not_checked))
        super().__init__("\n".join(lines))
        self.report = report

    @property
    def failures(self) -> tuple[RuleFailure, ...]:
        """The broken rules."""
        return self.report.failed

    @property
    def rules(self) -> frozenset[str]:
        """The IDs of the broken rules."""
        return frozenset(failure.rule for failure in self.report.failed)
