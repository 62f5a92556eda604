"""ListingCache and format_listing: the shared LIST/UIDL bodies (pure, no I/O)."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, strategies as st

from trio_pop3._proto._wire import stuff_lines
from trio_pop3.mailbox._listings import ListingCache, format_listing

# What LIST and UIDL lines hold: a number, a space, then a size or a UID (RFC 1939
# section 7: 0x21 to 0x7E, so a UID may start with ".").
listing_line = st.from_regex(r"[1-9][0-9]{0,5} [\x21-\x7e]{1,70}", fullmatch=True)


@pytest.mark.rfc("1939", "3")
@given(st.lists(listing_line, max_size=50))
def test_format_listing_is_the_stuffed_body(lines: list[str]) -> None:
    # RFC 1939 section 3 (DOT-01..DOT-03): CRLF after each line, a leading "." doubled,
    # then ".CRLF".
    assert format_listing(lines) == stuff_lines([line.encode("ascii") for line in lines])


def test_format_listing_stuffs_uids_starting_with_a_dot() -> None:
    assert format_listing(["1 .a", "2 b"]) == b"1 .a\r\n2 b\r\n.\r\n"
    assert format_listing(["1 a", ".2"]) == b"1 a\r\n..2\r\n.\r\n"
    assert format_listing([]) == b".\r\n"


def test_cache_finds_only_the_same_snapshot_object() -> None:
    cache = ListingCache()
    snapshot = ("a", "b")
    cache.put(snapshot, b"1 1\r\n.\r\n")
    assert cache.get(snapshot) == b"1 1\r\n.\r\n"
    # Built at run time: an equal tuple literal could be the very same constant.
    assert cache.get(tuple(["a", "b"])) is None  # noqa: C409 - equal, another object
    assert len(cache) == 1


def test_cache_put_replaces_and_keeps_the_size_right() -> None:
    cache = ListingCache()
    snapshot = ("a",)
    cache.put(snapshot, b"x" * 10)
    cache.put(snapshot, b"y" * 4)
    assert cache.get(snapshot) == b"yyyy"
    assert (len(cache), cache.size) == (1, 4)


def test_cache_drops_the_oldest_past_its_bound() -> None:
    cache = ListingCache(max_bytes=100, max_entry=60)
    snapshots = [(n,) for n in range(4)]
    for snapshot in snapshots:
        cache.put(snapshot, b"z" * 40)
    # 4 x 40 octets > 100: the two oldest went, the two newest stay.
    assert [cache.get(s) is not None for s in snapshots] == [False, False, True, True]
    assert cache.size == 80


def test_cache_does_not_keep_an_oversized_body() -> None:
    cache = ListingCache(max_bytes=1000, max_entry=10)
    small, big = ("small",), ("big",)
    cache.put(small, b"s" * 10)
    cache.put(big, b"b" * 11)
    assert cache.get(big) is None
    assert cache.get(small) == b"s" * 10  # and it pushed nothing out


def test_cache_entry_keeps_its_snapshot_alive() -> None:
    # The id() an entry is filed under cannot be reused while the entry lives.
    cache = ListingCache()
    snapshot = tuple(["only", "here"])  # noqa: C409 - not a shared constant
    before = sys.getrefcount(snapshot)
    cache.put(snapshot, b".\r\n")
    assert sys.getrefcount(snapshot) == before + 1
    del snapshot
    # Objects of the same size, made after the snapshot's last other reference went.
    others = [(str(n), "x") for n in range(1000)]
    assert all(cache.get(other) is None for other in others)
