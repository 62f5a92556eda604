"""RFC 6857 downgrading of a UTF-8 header for a client without UTF8 (RFC 6856 §2.1)."""

from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import given, settings, strategies as st

from trio_pop3._proto._downgrade import downgrade_header, split_header
from trio_pop3._proto._wire import header_needs_utf8

#: Text a header may hold: any Unicode but controls and surrogates.
_text = (
    st.text(
        alphabet=st.characters(exclude_categories=["Cc", "Cs", "Zl", "Zp"]),
        min_size=1,
        max_size=60,
    )
    .map(lambda t: " ".join(t.split()))
    .filter(bool)
)


def parsed(header: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(header + b"\r\nbody\r\n", policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


@pytest.mark.rfc("6856", "2.1")
@given(subject=_text, note=_text, ascii_value=st.from_regex(r"[!-~]{1,30}", fullmatch=True))
def test_unstructured_fields_read_back(subject: str, note: str, ascii_value: str) -> None:
    # UTF8-02: the surrogate is ASCII, a MIME reader gets the text back, and the
    # fields that were ASCII already are untouched, byte for byte.
    header = f"Subject: {subject}\nX-Plain: {ascii_value}\nX-Note: {note}\n".encode()
    out = downgrade_header(header)
    assert out is not None
    assert out.isascii()
    assert f"X-Plain: {ascii_value}\n".encode() in out
    message = parsed(out)
    assert message["Subject"] == subject
    assert message["X-Note"] == note
    assert not header_needs_utf8(out + b"\r\n")


#: A display name: letters, digits and spaces, some of them not ASCII.
_names = (
    st.text(alphabet=st.characters(categories=["L", "N", "Zs"]), min_size=1, max_size=30)
    .map(lambda t: " ".join(t.split()))
    .filter(lambda t: bool(t) and not t.isascii())
)


@given(name=_names)
def test_display_names_are_encoded_and_addresses_kept(name: str) -> None:
    out = downgrade_header(f'From: "{name}" <a@example.org>\n'.encode())
    assert out is not None
    assert out.isascii()
    (address,) = parsed(out)["From"].addresses
    assert address.addr_spec == "a@example.org"
    # A long name is folded into several encoded-words, which the library's reader
    # may join with a space.
    assert address.display_name.replace(" ", "") == name.replace(" ", "")


def test_non_ascii_addresses_become_named_empty_groups() -> None:
    # RFC 6857 section 3.1.2: the ASCII mailboxes stay usable.
    out = downgrade_header("To: 用户 <用户@例子.中国>,\n Bob <bob@example.com>\n".encode())
    assert out is not None
    assert out.isascii()
    to = parsed(out)["To"]
    assert [a.addr_spec for a in to.addresses] == ["bob@example.com"]
    assert "用户 <用户@例子.中国>" in str(to)


def test_mime_parameters_use_rfc_2231_and_structured_fields_are_renamed() -> None:
    out = downgrade_header(
        'Content-Type: application/pdf; name="Übersicht.pdf"\n'
        "Message-ID: <grüße@example>\nReceived: from høst\n".encode()
    )
    assert out is not None
    assert out.isascii()
    message = parsed(out)
    assert message.get_content_type() == "application/pdf"
    assert message.get_param("name") == "Übersicht.pdf"
    assert "Message-ID" not in message
    assert message["Downgraded-Message-ID"] == "<grüße@example>"
    assert message["Downgraded-Received"] == "from høst"


@pytest.mark.parametrize(
    "header",
    [
        "Cc: Jörg <a@b.example>, broken <<<\n",  # not parsed cleanly: renamed
        "Not a field ü\n",
        "Subject: ü\n\tcontinued\n",
    ],
)
def test_anything_else_still_comes_out_ascii(header: str) -> None:
    out = downgrade_header(header.encode())
    assert out is not None
    assert out.isascii()


def test_not_utf8_is_no_surrogate() -> None:
    assert downgrade_header(b"Subject: caf\xe9\n") is None


@pytest.mark.parametrize(
    ("data", "parts"),
    [
        (b"A: b\n\nbody", (b"A: b\n", b"\nbody")),
        (b"A: b\r\n\r\nbody", (b"A: b\r\n", b"\r\nbody")),
        (b"A: b\n\r\nbody", (b"A: b\n", b"\r\nbody")),
        (b"\nbody", (b"", b"\nbody")),
        (b"A: b\nC: d", None),
    ],
)
def test_split_header(data: bytes, parts: tuple[bytes, bytes] | None) -> None:
    assert split_header(data) == parts


_field_names = st.sampled_from(
    ["Subject", "From", "To", "Cc", "Content-Type", "Received", "Message-ID", "X-Any", "Date"]
)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            _field_names, st.text(max_size=80).filter(lambda t: "\n" not in t and "\r" not in t)
        ),
        min_size=1,
        max_size=6,
    )
)
def test_any_utf8_header_comes_out_ascii(fields: list[tuple[str, str]]) -> None:
    # Whatever the header holds (controls, odd syntax, surrogate pairs' worth of
    # characters), the surrogate is made and is ASCII, or there is none (not UTF-8).
    header = "".join(f"{name}: {value}\n" for name, value in fields)
    raw = header.encode("utf-8", "surrogatepass")
    out = downgrade_header(raw)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        assert out is None
        return
    assert out is not None
    assert out.isascii()


def test_lines_end_at_lf_only_and_unfolding_keeps_other_spaces() -> None:
    # NEL (U+0085) and U+2028 are no line ends in a header: the next field stays whole.
    out = downgrade_header("Subject: a\u0085b\u2028c\nX-A: z\n".encode())
    assert out is not None
    assert out.endswith(b"\nX-A: z\n")
    assert out.count(b"\n") == 2
    # Unfolding takes a line end before white space, not NBSP for a space.
    out = downgrade_header("Subject: a\u00a0b\n c\n".encode())
    assert out is not None
    assert parsed(out)["Subject"] == "a\u00a0b c"
