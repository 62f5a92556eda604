"""The PROXY protocol header parser (HAProxy's proxy-protocol.txt, versions 1 and 2).

Synchronous; no trio.  The server's reading loop relies on two properties checked
here with hypothesis: every proper beginning of a header parses as "incomplete"
(so all of it may be taken off the socket), and a complete header's length never
covers the bytes after it.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, strategies as st

from trio_pop3._proto._proxy import (
    PROXY_V1_MAX,
    PROXY_V2_MAX,
    PROXY_V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    parse_proxy_header,
)


def v2(command: int = 0x1, family: int = 0x1, protocol: int = 0x1, body: bytes = b"") -> bytes:
    return (
        PROXY_V2_SIGNATURE
        + bytes([0x20 | command, family << 4 | protocol])
        + struct.pack("!H", len(body))
        + body
    )


def v2_tcp4(src: str, sport: int, dst: str, dport: int, tlvs: bytes = b"") -> bytes:
    addresses = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
    return v2(body=addresses + struct.pack("!HH", sport, dport) + tlvs)


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def v2_tcp6(src: str, sport: int, dst: str, dport: int) -> bytes:
    addresses = ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
    return v2(family=0x2, body=addresses + struct.pack("!HH", sport, dport))


VALID = [
    (
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 110\r\n",
        ProxyHeader(45, 1, ("192.0.2.7", 40000), ("198.51.100.1", 110)),
    ),
    (
        b"PROXY TCP6 2001:db8::7 ::1 0 65535\r\n",
        ProxyHeader(36, 1, ("2001:db8::7", 0), ("::1", 65535)),
    ),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(15, 1)),
    (b"PROXY UNKNOWN ffff:f...f:ffff 65535 65535\r\n", ProxyHeader(43, 1)),  # rest ignored
    (
        v2_tcp4("192.0.2.7", 40000, "10.0.0.1", 995),
        ProxyHeader(28, 2, ("192.0.2.7", 40000), ("10.0.0.1", 995)),
    ),
    (
        v2_tcp4("192.0.2.7", 1, "10.0.0.1", 2, tlvs=b"\x01\x00\x02h2" + b"\x04\x00\x00"),
        ProxyHeader(36, 2, ("192.0.2.7", 1), ("10.0.0.1", 2)),  # TLVs skipped
    ),
    (
        v2_tcp6("2001:db8::7", 40000, "2001:db8::1", 110),
        ProxyHeader(52, 2, ("2001:db8::7", 40000), ("2001:db8::1", 110)),
    ),
    (v2(command=0x0, family=0x0, protocol=0x0), ProxyHeader(16, 2)),  # LOCAL: health check
    (v2(command=0x0, body=bytes(12)), ProxyHeader(28, 2)),  # LOCAL: addresses ignored
    (v2(family=0x0, protocol=0x0), ProxyHeader(16, 2)),  # UNSPEC
    (v2(protocol=0x2, body=bytes(12)), ProxyHeader(28, 2)),  # UDP: not ours to use
    (v2(family=0x3, body=bytes(216)), ProxyHeader(232, 2)),  # AF_UNIX
]


@pytest.mark.parametrize(("header", "expected"), VALID)
def test_valid_headers(header: bytes, expected: ProxyHeader) -> None:
    assert parse_proxy_header(header) == expected
    assert parse_proxy_header(header + b"USER alice\r\n") == expected
    assert parse_proxy_header(bytearray(header)) == expected
    for cut in range(len(header)):
        assert parse_proxy_header(header[:cut]) is None, cut


@pytest.mark.parametrize(
    ("tlvs", "tls"),
    [
        (b"", False),
        (tlv(0x20, b"\x01" + bytes(4) + tlv(0x21, b"TLSv1.3")), True),  # PP2_CLIENT_SSL
        (tlv(0x04, bytes(3)) + tlv(0x20, b"\x05" + bytes(4)), True),  # after a NOOP TLV
        (tlv(0x20, b"\x00" + bytes(4)), False),  # the TLV, but no TLS
        (tlv(0x01, b"pop3"), False),  # ALPN only
    ],
)
def test_the_ssl_tlv_says_the_client_used_tls(tlvs: bytes, tls: bool) -> None:
    # proxy-protocol.txt section 2.2.5: a proxy that terminates TLS says so.
    header = parse_proxy_header(v2_tcp4("192.0.2.7", 1, "10.0.0.1", 995, tlvs=tlvs))
    assert header is not None
    assert header.tls is tls


@pytest.mark.parametrize(
    "data",
    [
        v2_tcp4("192.0.2.7", 1, "10.0.0.1", 2, tlvs=b"\x20\x00"),  # a TLV cut short
        v2_tcp4("192.0.2.7", 1, "10.0.0.1", 2, tlvs=b"\x20\x00\x09\x01"),  # overruns
        b"USER alice\r\n",
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00",  # a TLS ClientHello without the header
        b"proxy TCP4 192.0.2.7 198.51.100.1 1 2\r\n",  # the keyword is case-sensitive
        b"PROXY TCP4 192.0.2.7 198.51.100.1 01 2\r\n",  # leading zero in a port
        b"PROXY TCP4 192.0.2.7 198.51.100.1 1 65536\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n",
        b"PROXY TCP4 192.0.2.7  198.51.100.1 1 2\r\n",  # two spaces
        b"PROXY TCP4 ::1 ::1 1 2\r\n",  # family and address disagree
        b"PROXY TCP6 192.0.2.7 198.51.100.1 1 2\r\n",
        b"PROXY TCP4 192.0.2.300 198.51.100.1 1 2\r\n",
        b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
        b"PROXY UNKNOWNX\r\n",
        b"PROXY TCP4 192.0.2.7\n",  # a bare LF
        b"PROXY TCP4 \x00",
        b"PROXY TCP4 192.0.2.7\rX",
        b"PROXY " + b"1" * (PROXY_V1_MAX - 6),  # no CRLF within 107 octets
        PROXY_V2_SIGNATURE[:11] + b"X",
        PROXY_V2_SIGNATURE + b"\x11",  # version 1 in the binary format
        PROXY_V2_SIGNATURE + b"\x22",  # command 2
        v2(body=bytes(8)),  # a TCP4 address block too short
        v2(family=0x2, body=bytes(35)),
        PROXY_V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", PROXY_V2_MAX - 15),
    ],
)
def test_invalid_headers(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(data)


def test_longest_v1_header_and_largest_v2_header() -> None:
    # proxy-protocol.txt section 2.1's worst case: UNKNOWN with two full IPv6 addresses.
    longest = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
    longest += b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
    assert len(longest) == PROXY_V1_MAX
    assert parse_proxy_header(longest) == ProxyHeader(PROXY_V1_MAX, 1)
    largest = v2(family=0x0, protocol=0x0, body=bytes(PROXY_V2_MAX - 16))
    assert parse_proxy_header(largest) == ProxyHeader(PROXY_V2_MAX, 2)


ipv4_st = st.ip_addresses(v=4).map(str)
ipv6_st = st.ip_addresses(v=6).map(str)
port_st = st.integers(0, 65535)


@st.composite
def header_st(draw: st.DrawFn) -> tuple[bytes, tuple[str, int]]:
    """A valid header of either version and the source it names."""
    version6 = draw(st.booleans())
    src = draw(ipv6_st if version6 else ipv4_st)
    dst = draw(ipv6_st if version6 else ipv4_st)
    sport, dport = draw(port_st), draw(port_st)
    if draw(st.booleans()):
        family = b"TCP6" if version6 else b"TCP4"
        header = b"PROXY %s %s %s %d %d\r\n" % (family, src.encode(), dst.encode(), sport, dport)
    elif version6:
        header = v2_tcp6(src, sport, dst, dport)
    else:
        tlvs = draw(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=20)), max_size=4))
        header = v2_tcp4(src, sport, dst, dport, tlvs=b"".join(tlv(*t) for t in tlvs))
    return header, (src, sport)


@given(header_st(), st.binary(max_size=64))
def test_any_valid_header_then_anything(case: tuple[bytes, tuple[str, int]], rest: bytes) -> None:
    header, source = case
    parsed = parse_proxy_header(header + rest)
    assert parsed is not None
    assert parsed.length == len(header)  # the bytes after it stay unread
    assert parsed.source == source
    for cut in range(len(header)):  # any beginning: take it all, wait for more
        assert parse_proxy_header(header[:cut]) is None


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    try:
        parsed = parse_proxy_header(data)
    except ProxyHeaderError:
        return
    assert parsed is None or parsed.length <= len(data)


@given(st.binary(min_size=1, max_size=40))
def test_arbitrary_bytes_after_the_v2_signature(rest: bytes) -> None:
    try:
        parsed = parse_proxy_header(PROXY_V2_SIGNATURE + rest)
    except ProxyHeaderError:
        return
    assert parsed is None or parsed.length <= len(PROXY_V2_SIGNATURE) + len(rest)
