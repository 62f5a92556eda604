"""The PROXY protocol header that load balancers put before a connection's bytes.

HAProxy's PROXY protocol (versions 1 and 2, as specified in HAProxy's
``proxy-protocol.txt``) lets a load balancer or TLS terminator in front of the server
pass on the address of the client it accepted.  The header comes first on the
connection, before the greeting is sent and before any TLS handshake::

    PROXY TCP4 192.0.2.7 198.51.100.1 40000 110\\r\\n           (version 1, text)
    \\r\\n\\r\\n\\x00\\r\\nQUIT\\n <ver/cmd> <fam> <len> <addresses> <TLVs>   (version 2)

:func:`parse_proxy_header` is pure: give it the bytes received so far and it says
whether they hold a whole header, could still become one, or cannot.  It never asks
for more than the header itself, so the bytes after it (a TLS ClientHello, say) are
never taken from the connection: an incomplete answer means every byte given belongs
to the header.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = [
    "PROXY_V1_MAX",
    "PROXY_V2_MAX",
    "PROXY_V2_SIGNATURE",
    "ProxyHeader",
    "ProxyHeaderError",
    "parse_proxy_header",
]

#: proxy-protocol.txt section 2.1: a version 1 header is at most 107 octets with its
#: CRLF (the longest TCP6 line).
PROXY_V1_MAX = 107

#: proxy-protocol.txt section 2.2: the twelve octets that open a version 2 header.
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

#: A version 2 header's 16 fixed octets, then its length field's worth of addresses
#: and TLVs.  The field allows 64 KiB; addresses need at most 216 octets (AF_UNIX)
#: and the TLVs a proxy adds (ALPN, authority, TLS details, a unique id) a few
#: hundred more.  A header past 4 KiB is refused, which bounds what a connection
#: holds before the greeting.
PROXY_V2_MAX = 4096

_V1_PREFIX = b"PROXY "
_V2_FIXED = 16
# Version 1 fields (section 2.1): the port of a TCP line is 0-65535 in decimal
# without leading zeros; addresses are checked by the ipaddress module.
_V1_TCP = re.compile(
    rb"PROXY (TCP4|TCP6) ([0-9A-Fa-f.:]+) ([0-9A-Fa-f.:]+) (0|[1-9][0-9]{0,4}) (0|[1-9][0-9]{0,4})"
)
_V2_VERSION = 0x2
_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_V2_INET, _V2_INET6 = 0x1, 0x2
_V2_STREAM = 0x1
# Section 2.2.5: the PP2_TYPE_SSL TLV, whose first octet has PP2_CLIENT_SSL set when
# the client spoke TLS to the proxy.
_PP2_TYPE_SSL = 0x20
_PP2_CLIENT_SSL = 0x01


class ProxyHeaderError(ValueError):
    """The bytes received cannot start a valid PROXY protocol header."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete PROXY protocol header.

    Attributes:
        length: Its length in octets: the connection's own bytes start after it.
        version: 1 (text) or 2 (binary).
        source: The client's ``(address, port)`` as the proxy saw it, or None when
            the header carries none (a health check: ``PROXY UNKNOWN``, version 2's
            LOCAL command, or an address family other than TCP over IPv4 or IPv6),
            in which case the connection's own peer address stands.
        destination: The address and port the client connected to, or None.
        tls: Whether the client's connection to the proxy was TLS (version 2's
            PP2_TYPE_SSL TLV with PP2_CLIENT_SSL): a proxy that terminates TLS
            says so this way.
    """

    length: int
    version: int
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None
    tls: bool = False


def parse_proxy_header(data: bytes | bytearray) -> ProxyHeader | None:
    """Return the header at the start of ``data``, or None if more bytes are needed.

    ``data`` is what the connection has received so far; bytes after the header are
    ignored.  None means ``data`` is a proper beginning of a header, so all of it
    can be consumed before waiting for more.

    >>> header = parse_proxy_header(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 110\\r\\nUSER")
    >>> header.length, header.source
    (45, ('192.0.2.7', 40000))
    >>> parse_proxy_header(b"PROXY TCP4 192.0.2.7") is None
    True

    Raises:
        ProxyHeaderError: ``data`` cannot begin a valid header (not one at all,
            a malformed one, or one past :data:`PROXY_V1_MAX` or
            :data:`PROXY_V2_MAX` octets).
    """
    if not data:
        return None
    # The two versions differ in their first octet: "\r" or "P".
    prefix = PROXY_V2_SIGNATURE if data[0] == PROXY_V2_SIGNATURE[0] else _V1_PREFIX
    seen = min(len(data), len(prefix))
    if data[:seen] != prefix[:seen]:
        raise ProxyHeaderError("not a PROXY protocol header")
    if seen < len(prefix):
        return None
    return _parse_v2(data) if prefix is PROXY_V2_SIGNATURE else _parse_v1(data)


def _parse_v1(data: bytes | bytearray) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, PROXY_V1_MAX)
    if end < 0:
        if len(data) >= PROXY_V1_MAX:
            raise ProxyHeaderError("PROXY v1 line longer than 107 octets")
        if b"\n" in data or b"\x00" in data or b"\r" in data[:-1]:
            raise ProxyHeaderError("PROXY v1 line with a stray control character")
        return None
    line = bytes(data[:end])
    if line.startswith(b"PROXY UNKNOWN"):
        # Section 2.1: the rest of an UNKNOWN line is ignored.
        if line[13:14] not in (b"", b" "):
            raise ProxyHeaderError("malformed PROXY v1 line")
        return ProxyHeader(end + 2, 1)
    match = _V1_TCP.fullmatch(line)
    if match is None:
        raise ProxyHeaderError("malformed PROXY v1 line")
    family, src, dst, sport, dport = match.groups()
    version = 4 if family == b"TCP4" else 6
    return ProxyHeader(
        end + 2,
        1,
        (_v1_address(src, version), _port(sport)),
        (_v1_address(dst, version), _port(dport)),
    )


def _v1_address(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except ValueError:
        raise ProxyHeaderError("malformed PROXY v1 address") from None
    if address.version != version:
        raise ProxyHeaderError("PROXY v1 address of the wrong family")
    return str(address)


def _port(text: bytes) -> int:
    port = int(text)
    if port > 0xFFFF:
        raise ProxyHeaderError("PROXY port out of range")
    return port


def _parse_v2(data: bytes | bytearray) -> ProxyHeader | None:
    if len(data) > 12 and data[12] >> 4 != _V2_VERSION:
        raise ProxyHeaderError("unsupported PROXY protocol version")
    if len(data) > 12 and data[12] & 0xF not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError("unknown PROXY v2 command")
    if len(data) < _V2_FIXED:
        return None
    length = _V2_FIXED + int.from_bytes(data[14:16], "big")
    if length > PROXY_V2_MAX:
        raise ProxyHeaderError(f"PROXY v2 header longer than {PROXY_V2_MAX} octets")
    if len(data) < length:
        return None
    if data[12] & 0xF == _V2_LOCAL:
        return ProxyHeader(length, 2)  # section 2.2: the proxy's own connection
    family, protocol = data[13] >> 4, data[13] & 0xF
    body = bytes(data[_V2_FIXED:length])
    if protocol != _V2_STREAM or family not in (_V2_INET, _V2_INET6):
        return ProxyHeader(length, 2)  # not TCP: keep the connection's own address
    size = 4 if family == _V2_INET else 16
    if len(body) < 2 * size + 4:
        raise ProxyHeaderError("PROXY v2 address block too short")
    make = ipaddress.IPv4Address if family == _V2_INET else ipaddress.IPv6Address
    src, dst = make(body[:size]), make(body[size : 2 * size])
    ports = body[2 * size : 2 * size + 4]
    return ProxyHeader(
        length,
        2,
        (str(src), int.from_bytes(ports[:2], "big")),
        (str(dst), int.from_bytes(ports[2:], "big")),
        _client_used_tls(body[2 * size + 4 :]),
    )


def _client_used_tls(tlvs: bytes) -> bool:
    """Read the TLVs after the addresses (section 2.2): is PP2_CLIENT_SSL set?"""
    tls = False
    at = 0
    while at < len(tlvs):
        if at + 3 > len(tlvs):
            raise ProxyHeaderError("PROXY v2 TLV cut short")
        kind, size = tlvs[at], int.from_bytes(tlvs[at + 1 : at + 3], "big")
        value = tlvs[at + 3 : at + 3 + size]
        if len(value) != size:
            raise ProxyHeaderError("PROXY v2 TLV longer than the header")
        if kind == _PP2_TYPE_SSL and value:
            tls = bool(value[0] & _PP2_CLIENT_SSL)
        at += 3 + size
    return tls
