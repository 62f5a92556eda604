"""A message header with UTF-8 in it, downgraded to ASCII for a client without UTF8.

RFC 6856 section 2.1: outside UTF-8 mode a server must send a message whose header
holds UTF-8 (RFC 6532) either as a surrogate that needs no extension, or not at all
(``-ERR [UTF8]``).  RFC 6857 describes the surrogate: each header field that holds
non-ASCII text is recoded so that the client can read it, or kept under a name that
says it was downgraded.  :func:`downgrade_header` does that, with the standard
library's :mod:`email` package for the recoding:

* an unstructured field (``Subject``, ``Comments``, ``X-...`` and any unknown one):
  its text as MIME encoded-words (RFC 2047);
* an address field (``From``, ``To``, ``Cc``, ...): a non-ASCII display name as
  encoded-words; a mailbox whose address itself is non-ASCII becomes an empty group
  whose name, in encoded-words, is the whole mailbox (``=?utf-8?b?...?=:;``), as in
  RFC 6857 section 3.1.2;
* ``Content-Type`` and ``Content-Disposition``: non-ASCII parameters in RFC 2231
  form (``filename*=utf-8''...``), so the MIME structure stays intact;
* a structured field the library cannot recode faithfully (``Received``,
  ``Message-ID``, ``References``, ...), and anything that still comes out
  non-ASCII: renamed ``Downgraded-<name>``, its text as encoded-words (RFC 6857
  section 3.3).

Fields that are ASCII already are sent byte for byte; the body is never changed.
The pure-ASCII result can be read back to the original text by any MIME reader.
"""

from __future__ import annotations

import email.policy
import re
from email import errors
from email.headerregistry import Address, AddressHeader, Group
from typing import Final

__all__ = ["downgrade_header", "split_header"]

#: Folding with encoded-words (``utf8=False``) and CRLF line ends; every field is
#: re-encoded, not only long ones.
_POLICY: Final = email.policy.SMTP.clone(refold_source="all")

#: Address fields (RFC 5322 section 3.6.2-3.6.6): mailboxes are recoded one by one.
_ADDRESS_FIELDS: Final = frozenset(
    {
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "resent-from",
        "resent-sender",
        "resent-to",
        "resent-cc",
        "resent-bcc",
    }
)

#: Structured fields whose syntax encoded-words would break: renamed instead.
_RENAMED_FIELDS: Final = frozenset(
    {
        "received",
        "return-path",
        "message-id",
        "resent-message-id",
        "in-reply-to",
        "references",
        "content-id",
        "content-transfer-encoding",
        "mime-version",
        "delivered-to",
    }
)


#: A line end inside a folded field.
_FOLD_RE: Final = re.compile(r"\r?\n(?=[ \t])")


def split_header(data: bytes) -> tuple[bytes, bytes] | None:
    """Split ``data`` into the header's fields and the rest (the empty line on), or None.

    None when ``data`` holds no complete header (no empty line after it).  A message
    that starts with the empty line has an empty header.
    """
    if data[:1] == b"\n" or data[:2] == b"\r\n":
        return b"", data
    ends = [pos for pos in (data.find(b"\n\n"), data.find(b"\n\r\n")) if pos >= 0]
    if not ends:
        return None
    end = min(ends) + 1  # just after the last field's LF
    return data[:end], data[end:]


def downgrade_header(header: bytes) -> bytes | None:
    """Return ``header`` (its fields, without the empty line) with only ASCII in it.

    None when the header is not UTF-8, so no faithful surrogate can be made (such a
    header never needs UTF8 mode, see ``header_needs_utf8``).

    >>> downgrade_header("Subject: Grüße\\nTo: a@b.example\\n".encode())
    b'Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\\r\\nTo: a@b.example\\n'
    """
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError:
        return None
    out: list[bytes] = []
    for field in _fields(text):
        if field.isascii():
            out.append(field.encode("ascii"))
        else:
            out.append(_downgrade_field(field).encode("ascii"))
    return b"".join(out)


def _fields(text: str) -> list[str]:
    """Split a header into its fields, each with its continuation lines and line end."""
    fields: list[str] = []
    # Lines end at LF only (str.splitlines would also split at NEL, U+2028 and others).
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])
    for line in lines:
        if fields and line[:1] in (" ", "\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _downgrade_field(field: str) -> str:
    name, colon, value = field.partition(":")
    name = name.strip()
    # Unfold (RFC 5322 section 2.2.3: a line end before white space goes); the policy
    # folds again.  (str.split() would also take NBSP, NEL and the like for spaces.)
    value = _FOLD_RE.sub("", value).strip(" \t\r\n")
    if not colon or not name or not name.isascii():
        return _renamed("Line", field.strip())
    key = name.lower()
    folded: str | None = None
    try:
        if key in _ADDRESS_FIELDS:
            folded = _fold_addresses(name, value)
        elif key not in _RENAMED_FIELDS:
            folded = str(_POLICY.fold(name, value))
    except Exception:  # the library could not parse it: keep it under another name
        folded = None
    if folded is None or not folded.isascii():
        return _renamed(name, value)
    return folded


def _fold_addresses(name: str, value: str) -> str | None:
    header = _POLICY.header_factory(name, value)
    # The header class the factory builds is a BaseHeader too, which has .defects.
    defects = getattr(header, "defects", ())
    if not isinstance(header, AddressHeader) or any(
        not isinstance(defect, errors.NonASCIILocalPartDefect) for defect in defects
    ):
        return None  # not parsed cleanly: renamed rather than guessed at
    parts: list[Address | Group] = []
    for group in header.groups:
        for address in group.addresses:
            if address.addr_spec.isascii():
                parts.append(address)
            else:
                # RFC 6857 section 3.1.2: an address no ASCII client can use, shown
                # in the name of an empty group.
                parts.append(Group(str(address), ()))
    return str(_POLICY.fold(name, _POLICY.header_factory(name, parts)))


def _renamed(name: str, value: str) -> str:
    # An unknown field name is unstructured: its text becomes encoded-words.
    return str(_POLICY.fold(f"Downgraded-{name}", value))
