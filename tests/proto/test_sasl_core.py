"""Tests of the sans-I/O SASL core: base64, SASLprep, PLAIN, CRAM-MD5, SCRAM-SHA-256."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import re
import string
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from trio_pop3._proto import _sasl as sasl_module
from trio_pop3._proto._sasl import (
    PLAIN_MAX_FIELD_OCTETS,
    SCRAM_DEFAULT_ITERATIONS,
    SASLProtocolError,
    ScramServer,
    cram_md5_challenge,
    cram_md5_digest,
    decode_base64_strict,
    decode_initial_response,
    encode_challenge,
    parse_cram_md5_response,
    parse_plain,
    parse_scram_client_first,
    password_forms,
    saslprep,
    scram_salted_password,
    scram_server_keys,
)
from trio_pop3.mailbox._base import ScramCredentials

B64_ALPHABET = (string.ascii_letters + string.digits + "+/").encode()
NON_ALPHABET = [bytes([b]) for b in range(256) if b not in B64_ALPHABET and b != ord("=")]


def test_core_does_not_import_trio() -> None:
    # STYLE 2.2: the sans-I/O core never imports trio.
    tree = ast.parse(Path(sasl_module.__file__).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(not alias.name.startswith("trio") for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            assert node.module is not None
            assert not node.module.startswith("trio")


# --- strict base64 ------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_base64_round_trip(data: bytes) -> None:
    encoded = base64.b64encode(data)
    assert decode_base64_strict(encoded) == data
    assert decode_base64_strict(encoded) == base64.b64decode(encoded, validate=True)


@given(st.text(alphabet=(B64_ALPHABET + b"=").decode(), max_size=40))
def test_base64_agrees_with_reference_when_accepted(text: str) -> None:
    # Whatever the strict decoder accepts, the stdlib decodes to the same octets.
    data = text.encode()
    try:
        decoded = decode_base64_strict(data)
    except SASLProtocolError:
        return
    assert decoded == base64.b64decode(data, validate=True)


@given(st.binary(min_size=1, max_size=60), st.data())
def test_base64_rejects_every_non_alphabet_character(payload: bytes, data: st.DataObject) -> None:
    # RFC 5034 §4 (SASL-10): any character outside the alphabet is rejected, not ignored.
    encoded = base64.b64encode(payload)
    position = data.draw(st.integers(0, len(encoded)))
    bad = data.draw(st.sampled_from(NON_ALPHABET))
    with pytest.raises(SASLProtocolError):
        decode_base64_strict(encoded[:position] + bad + encoded[position:])


@pytest.mark.parametrize(
    "line",
    [
        b"=AAA",  # RFC 5034 §4 (SASL-10): "=" that is not trailing padding
        b"AAA=BBB=",
        b"QQ==QQ==",
        b"AA=A",
        b"QQ===",
        b"Q===",
        b"A",
        b"AA",
        b"AAA",
        b"AAAAA",
        b"!!!notbase64",  # Dovecot transcript A8
        b" QQ==",
        b"QQ==\r",
        b"=",
    ],
)
def test_base64_rejects_irregular_input(line: bytes) -> None:
    # RFC 5034 §4 (SASL-10)
    with pytest.raises(SASLProtocolError):
        decode_base64_strict(line)


def test_base64_empty_line_is_empty_response() -> None:
    # RFC 5034 §4 (SASL-12): the empty answer to a final challenge
    assert decode_base64_strict(b"") == b""


def test_initial_response_equals_sign_means_empty() -> None:
    # RFC 5034 §4 (SASL-06)
    assert decode_initial_response(b"=") == b""
    assert decode_initial_response(b"AGFsaWNlAHNlY3JldA==") == b"\x00alice\x00secret"


@pytest.mark.parametrize("argument", [b"", b"==", b"*", b"=AAA"])
def test_initial_response_rejects_invalid(argument: bytes) -> None:
    # RFC 5034 §4 (SASL-06, SASL-10)
    with pytest.raises(SASLProtocolError):
        decode_initial_response(argument)


def test_encode_challenge() -> None:
    # RFC 5034 §4 (SASL-04): an empty challenge is exactly "+ "
    assert encode_challenge(b"") == b"+ "
    assert encode_challenge(b"Username:") == b"+ VXNlcm5hbWU6"  # Dovecot transcript A9a


# --- PLAIN ----------------------------------------------------------------------------


def test_parse_plain() -> None:
    # RFC 4616 §2 (PLAIN-01)
    assert parse_plain(b"\x00alice\x00secret") == ("", "alice", "secret")
    assert parse_plain(b"alice\x00alice\x00secret") == ("alice", "alice", "secret")
    assert parse_plain("\x00jos\u00e9\x00p\u00e4ss".encode()) == ("", "jos\u00e9", "p\u00e4ss")


NO_NUL = st.characters(codec="utf-8", exclude_characters="\x00")


@given(st.text(NO_NUL), st.text(NO_NUL, min_size=1), st.text(NO_NUL, min_size=1))
def test_parse_plain_round_trip(authzid: str, authcid: str, password: str) -> None:
    message = b"\x00".join(part.encode() for part in (authzid, authcid, password))
    if max(len(part.encode()) for part in (authzid, authcid, password)) <= PLAIN_MAX_FIELD_OCTETS:
        assert parse_plain(message) == (authzid, authcid, password)


@pytest.mark.parametrize(
    "message",
    [
        b"alice\x00secret",  # RFC 4616 §2 (PLAIN-02): one NUL
        b"\x00alice\x00secret\x00",  # three NULs
        b"\x00al\x00ice\x00secret",
        b"",
        b"\x00\x00secret",  # empty authcid
        b"\x00alice\x00",  # empty password
        b"\x00alice\x00\xff\xfe",  # not UTF-8
    ],
)
def test_parse_plain_rejects(message: bytes) -> None:
    with pytest.raises(SASLProtocolError):
        parse_plain(message)


def test_parse_plain_accepts_255_octet_fields() -> None:
    # RFC 4616 §2 (PLAIN-03): up to and including 255 octets each
    field = "\u00e9" * 127 + "x"  # 255 octets of UTF-8
    assert len(field.encode()) == 255
    assert parse_plain(f"{field}\x00{field}\x00{field}".encode()) == (field, field, field)


def test_parse_plain_bounds_fields() -> None:
    with pytest.raises(SASLProtocolError):
        parse_plain(b"\x00alice\x00" + b"x" * (PLAIN_MAX_FIELD_OCTETS + 1))


# --- SASLprep -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I\u00adX", "IX"),  # RFC 4013 §3 #1: SOFT HYPHEN mapped to nothing
        ("user", "user"),  # #2: no transformation
        ("USER", "USER"),  # #3: case preserved
        ("\u00aa", "a"),  # #4: output is NFKC
        ("\u2168", "IX"),  # #5: output is NFKC
        ("two\u00a0words", "two words"),  # §2.1: non-ASCII space mapped to SPACE
        ("jose\u0301", "jos\u00e9"),  # NFKC composes
        ("\u0627\u0628", "\u0627\u0628"),  # RandAL only, first and last: fine
        ("", ""),
    ],
)
def test_saslprep_examples(text: str, expected: str) -> None:
    # RFC 4013 §3 (SASL-13, PLAIN-05)
    assert saslprep(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "\u0007",  # RFC 4013 §3 #6: prohibited character
        "\u0627\u0031",  # #7: bidirectional check
        "\u0627a\u0628",  # RandAL and L together
        "a\u0627",  # RandAL not first
        "\ue000",  # private use
        "\ufffe",  # non-character
        "\u2028",  # control
        "\U000e0001",  # tagging character
        "a\u3000\u200e",  # change-display-properties character
    ],
)
def test_saslprep_rejects(text: str) -> None:
    # RFC 4013 §2.3, §2.4 (SASL-13)
    with pytest.raises(ValueError, match="SASLprep"):
        saslprep(text)


def test_saslprep_unassigned_only_in_queries() -> None:
    # RFC 3454 §7: unassigned code points are allowed in queries, not in stored strings.
    unassigned = "\u0221"  # assigned only after Unicode 3.2
    assert saslprep(unassigned) == unassigned
    with pytest.raises(ValueError, match="unassigned"):
        saslprep(unassigned, allow_unassigned=False)


@given(st.text(max_size=30))
def test_saslprep_is_idempotent(text: str) -> None:
    try:
        prepared = saslprep(text)
    except ValueError:
        return
    assert saslprep(prepared) == prepared


@pytest.mark.rfc("4013", "2")
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40))
def test_saslprep_leaves_printable_ascii_alone(text: str) -> None:
    # What password_forms' shortcut relies on: no mapping, normalisation, prohibition
    # or bidi rule of RFC 4013 touches printable ASCII.
    assert saslprep(text) == text
    assert password_forms(text) == (text,)


@given(st.text(max_size=30))
def test_password_forms_are_as_sent_then_prepared(text: str) -> None:
    forms = password_forms(text)
    assert forms[0] == text
    try:
        prepared = saslprep(text)
    except ValueError:
        assert forms == (text,)
        return
    assert forms == ((text, prepared) if prepared and prepared != text else (text,))


# --- CRAM-MD5 -------------------------------------------------------------------------

RFC2195_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"


def test_cram_md5_rfc2195_vector() -> None:
    # RFC 2195 §2 (CRAM-02)
    line = b"PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
    assert decode_base64_strict(line) == RFC2195_CHALLENGE
    digest = cram_md5_digest("tanstaaftanstaaf", RFC2195_CHALLENGE)
    assert digest == "b913a602c7eda7a495b4e6e7334d3890"
    response = decode_base64_strict(b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw")
    assert parse_cram_md5_response(response) == ("tim", digest)
    assert cram_md5_digest(b"tanstaaftanstaaf", RFC2195_CHALLENGE) == digest


def test_cram_md5_response_accepts_upper_case_and_spaces_in_user() -> None:
    assert parse_cram_md5_response(b"tim B913A602C7EDA7A495B4E6E7334D3890") == (
        "tim",
        "b913a602c7eda7a495b4e6e7334d3890",
    )
    assert parse_cram_md5_response(b"two words " + b"0" * 32) == ("two words", "0" * 32)


@pytest.mark.parametrize(
    "response",
    [
        b"tim",
        b" b913a602c7eda7a495b4e6e7334d3890",
        b"tim b913a602c7eda7a495b4e6e7334d389",
        b"tim b913a602c7eda7a495b4e6e7334d38900",
        b"tim g913a602c7eda7a495b4e6e7334d3890",
        b"\xff b913a602c7eda7a495b4e6e7334d3890",
        b"tim b913a602c7eda7a495b4e6e7334d389\xff",
    ],
)
def test_cram_md5_response_rejects(response: bytes) -> None:
    with pytest.raises(SASLProtocolError):
        parse_cram_md5_response(response)


def test_cram_md5_challenge_is_msg_id_and_unique() -> None:
    # RFC 2195 §2 (CRAM-01)
    challenges = {cram_md5_challenge("mail.example.org") for _ in range(1000)}
    assert len(challenges) == 1000
    for challenge in challenges:
        assert re.fullmatch(rb"<\d+\.\d+@mail\.example\.org>", challenge)


@pytest.mark.parametrize("hostname", ["", "a b", "a>b", "a@b", "h\u00f6st", "x\r\n"])
def test_cram_md5_challenge_rejects_bad_hostname(hostname: str) -> None:
    with pytest.raises(ValueError, match="host name"):
        cram_md5_challenge(hostname)


# --- SCRAM-SHA-256 --------------------------------------------------------------------

# RFC 7677 §3
VECTOR_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
VECTOR_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
VECTOR_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
VECTOR_NONCE = "rOprNGfwEbeRWgbNEkqO" + VECTOR_SERVER_NONCE
VECTOR_SERVER_FIRST = f"r={VECTOR_NONCE},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".encode()
VECTOR_PROOF = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
VECTOR_CLIENT_FINAL = f"c=biws,r={VECTOR_NONCE},p={VECTOR_PROOF}".encode()
VECTOR_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def vector_credentials() -> ScramCredentials:
    stored_key, server_key = scram_server_keys(
        scram_salted_password("pencil", VECTOR_SALT, SCRAM_DEFAULT_ITERATIONS)
    )
    return ScramCredentials(SCRAM_DEFAULT_ITERATIONS, VECTOR_SALT, stored_key, server_key)


CREDENTIALS = vector_credentials()


def vector_server(client_first: bytes = VECTOR_CLIENT_FIRST) -> ScramServer:
    return ScramServer(
        parse_scram_client_first(client_first), CREDENTIALS, server_nonce=VECTOR_SERVER_NONCE
    )


def test_scram_rfc7677_vector() -> None:
    # RFC 7677 §3; RFC 5802 §3 (SCRAM-01, SCRAM-09)
    first = parse_scram_client_first(VECTOR_CLIENT_FIRST)
    assert first.gs2_header == b"n,,"
    assert first.authzid is None
    assert first.username == "user"
    assert first.client_nonce == "rOprNGfwEbeRWgbNEkqO"
    assert first.bare == b"n=user,r=rOprNGfwEbeRWgbNEkqO"
    server = vector_server()
    assert server.server_first == VECTOR_SERVER_FIRST
    assert server.nonce == VECTOR_NONCE
    assert server.verify_client_final(VECTOR_CLIENT_FINAL) == VECTOR_SERVER_FINAL


def test_scram_verify_only_once() -> None:
    server = vector_server()
    assert server.verify_client_final(VECTOR_CLIENT_FINAL) == VECTOR_SERVER_FINAL
    with pytest.raises(RuntimeError):
        server.verify_client_final(VECTOR_CLIENT_FINAL)


def test_scram_bad_proof_returns_none() -> None:
    # RFC 5802 §3 (SCRAM-09)
    proof = bytearray(base64.b64decode(VECTOR_PROOF))
    proof[0] ^= 1
    final = f"c=biws,r={VECTOR_NONCE},p={base64.b64encode(proof).decode()}".encode()
    assert vector_server().verify_client_final(final) is None


def test_scram_extensions_in_client_final_are_covered_by_the_proof() -> None:
    # RFC 5802 §5.1: unknown optional attributes are ignored, yet part of AuthMessage,
    # so the RFC's proof no longer fits.
    final = f"c=biws,r={VECTOR_NONCE},x=ext,p={VECTOR_PROOF}".encode()
    assert vector_server().verify_client_final(final) is None


@pytest.mark.parametrize(
    "final",
    [
        # RFC 5802 §5.1 (SCRAM-03): the nonce must be the one the server sent
        f"c=biws,r=rOprNGfwEbeRWgbNEkqO,p={VECTOR_PROOF}",
        f"c=biws,r={VECTOR_NONCE}x,p={VECTOR_PROOF}",
        # RFC 5802 §6 (SCRAM-06): c= must be base64 of the GS2 header
        f"c=eSws,r={VECTOR_NONCE},p={VECTOR_PROOF}",
        f"c=biwsYQ==,r={VECTOR_NONCE},p={VECTOR_PROOF}",
        f"c=bi ws,r={VECTOR_NONCE},p={VECTOR_PROOF}",
        # grammar
        f"c=biws,r={VECTOR_NONCE}",
        f"r={VECTOR_NONCE},c=biws,p={VECTOR_PROOF}",
        f"c=biws,p={VECTOR_PROOF}",
        f"p={VECTOR_PROOF}",
        f"c=biws,r={VECTOR_NONCE},,p={VECTOR_PROOF}",
        f"c=biws,r={VECTOR_NONCE},p=dHzb",  # proof of the wrong length
        f"c=biws,r={VECTOR_NONCE},p=!!!!",
        "",
        f"c=biws,r={VECTOR_NONCE}\u00e9,p={VECTOR_PROOF}",
    ],
)
def test_scram_client_final_protocol_errors(final: str) -> None:
    with pytest.raises(SASLProtocolError):
        vector_server().verify_client_final(final.encode())


def test_scram_gs2_y_and_authzid_accepted() -> None:
    # RFC 5802 §6 (SCRAM-06): "y" is fine when we offer no -PLUS; §5.1 a= authzid
    first = parse_scram_client_first(b"y,a=us=2Cer,n=user,r=abc")
    assert first.gs2_header == b"y,a=us=2Cer,"
    assert first.authzid == "us,er"
    final_prefix = f"c={base64.b64encode(b'y,a=us=2Cer,').decode()},r=abc{VECTOR_SERVER_NONCE}"
    server = ScramServer(first, CREDENTIALS, server_nonce=VECTOR_SERVER_NONCE)
    # c= matches; proof is wrong (made up), so the result is "wrong password".
    assert server.verify_client_final(f"{final_prefix},p={VECTOR_PROOF}".encode()) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a=2Cb", "a,b"), ("a=3Db", "a=b"), ("=3D=2C", "=,"), ("j\u00f6rg", "j\u00f6rg")],
)
def test_scram_username_escapes(name: str, expected: str) -> None:
    # RFC 5802 §5.1 (SCRAM-02)
    first = parse_scram_client_first(f"n,,n={name},r=abc".encode())
    assert first.username == expected
    assert first.bare == f"n={name},r=abc".encode()  # verbatim for the AuthMessage


@pytest.mark.parametrize(
    "message",
    [
        b"n,,n=us=er,r=abc",  # RFC 5802 §5.1 (SCRAM-02): "=" not in an escape
        b"n,,n=us=2cer,r=abc",  # escapes are upper case
        b"n,,n=user=,r=abc",
        b"n,a=x=41,n=user,r=abc",  # same rule for the authzid
        b"n,,n=,r=abc",  # empty user name
        b"n,,m=ext,n=user,r=abc",  # RFC 5802 §5.1 (SCRAM-05): mandatory extension
        b"p=tls-unique,,n=user,r=abc",  # RFC 5802 §6 (SCRAM-06): no channel binding
        b"p=tls-server-end-point,,n=user,r=abc",
        b"x,,n=user,r=abc",
        b"n,b=x,n=user,r=abc",
        b"n,,r=abc,n=user",
        b"n,,n=user",
        b"n,,n=user,r=",
        b"n,,n=user,r=a b",  # nonce must be printable
        b"n,,n=user,r=abc,1=x",  # bad extension
        b"n,,n=us\xffer,r=abc",  # not UTF-8
        b"n,,n=us\x00er,r=abc",
        b"n,n=user,r=abc",
        b"",
    ],
)
def test_scram_client_first_rejects(message: bytes) -> None:
    with pytest.raises(SASLProtocolError):
        parse_scram_client_first(message)


def test_scram_client_first_ignores_optional_extensions() -> None:
    # RFC 5802 §5.1: unknown optional attributes MUST be ignored
    first = parse_scram_client_first(b"n,,n=user,r=abc,x=1,y=2")
    assert first.bare == b"n=user,r=abc,x=1,y=2"


def test_scram_fresh_nonces() -> None:
    # RFC 5802 §5.1 (SCRAM-03)
    first = parse_scram_client_first(VECTOR_CLIENT_FIRST)
    nonces = {ScramServer(first, CREDENTIALS).nonce for _ in range(100)}
    assert len(nonces) == 100
    for nonce in nonces:
        assert nonce.startswith(first.client_nonce)
        assert re.fullmatch(r"[\x21-\x2b\x2d-\x7e]+", nonce)


@pytest.mark.parametrize("nonce", ["", "a,b", "a b", "\u00e9"])
def test_scram_injected_nonce_checked(nonce: str) -> None:
    with pytest.raises(ValueError, match="nonce"):
        ScramServer(parse_scram_client_first(VECTOR_CLIENT_FIRST), None, server_nonce=nonce)


def test_scram_unknown_user_gets_a_deterministic_fake_salt() -> None:
    # RFC 5802 §9 (SCRAM-11): same shape as a real user, same salt on every attempt
    first = parse_scram_client_first(b"n,,n=nosuchuser,r=abc")
    a = ScramServer(first, None, server_nonce="x")
    b = ScramServer(first, None, server_nonce="x")
    assert a.server_first == b.server_first
    match = re.fullmatch(rb"r=abcx,s=([A-Za-z0-9+/=]+),i=4096", a.server_first)
    assert match is not None
    assert len(base64.b64decode(match.group(1))) == len(VECTOR_SALT)
    other = ScramServer(parse_scram_client_first(b"n,,n=other,r=abc"), None, server_nonce="x")
    assert other.server_first != a.server_first
    # Even the "right" proof for a made-up password fails.
    final = f"c=biws,r=abcx,p={VECTOR_PROOF}".encode()
    assert a.verify_client_final(final) is None


def test_scram_fake_salt_follows_the_prepared_name() -> None:
    # RFC 5802 §5.1 (SCRAM-02, SCRAM-11): two spellings of one unknown user share a salt,
    # as they would for a real user, whose lookup uses the prepared name.
    composed = parse_scram_client_first("n,,n=jos\u00e9,r=abc".encode())
    decomposed = parse_scram_client_first("n,,n=jose\u0301,r=abc".encode())
    salts = {
        ScramServer(first, None, server_nonce="x").server_first.split(b",")[1]
        for first in (composed, decomposed)
    }
    assert len(salts) == 1


def test_scram_fake_iterations() -> None:
    first = parse_scram_client_first(b"n,,n=nosuchuser,r=abc")
    server = ScramServer(first, None, server_nonce="x", fake_iterations=10000)
    assert server.server_first.endswith(b",i=10000")


def test_scram_key_derivation_matches_rfc5802_formulas() -> None:
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", VECTOR_SALT, 4096)
    assert scram_salted_password("pencil", VECTOR_SALT, 4096) == salted
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    assert scram_server_keys(salted) == (
        hashlib.sha256(client_key).digest(),
        hmac.digest(salted, b"Server Key", "sha256"),
    )
    with pytest.raises(ValueError, match="SASLprep"):
        scram_salted_password("bell\u0007", VECTOR_SALT, 1)
