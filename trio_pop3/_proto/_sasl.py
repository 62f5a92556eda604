"""The sans-I/O half of SASL: strict base64, SASLprep, PLAIN, CRAM-MD5 and SCRAM-SHA-256.

Theory of operation
-------------------
Everything here is a pure function of its arguments (plus, where a protocol demands
freshness, :mod:`secrets`): no sockets, no clock other than a CRAM-MD5 timestamp, no
trio.  The async mechanism layer (:mod:`trio_pop3._sasl`) strings these steps together
and talks to the client through the POP3 handler.

Client data that does not follow the grammar raises :class:`SASLProtocolError`; the
mechanism layer turns that into an authentication failure, so a malformed message
never tells a client anything a wrong password would not.

SCRAM-SHA-256 (RFC 5802, RFC 7677) runs in three pure steps::

    first = parse_scram_client_first(message)        # who, which nonce, GS2 header
    server = ScramServer(first, credentials_or_none)  # credentials looked up in between
    send(server.server_first)
    server_final = server.verify_client_final(reply)  # None: wrong proof

An unknown user (``credentials_or_none is None``) gets a salt derived from the user
name with a per-process secret key and the default iteration count, so the exchange
looks exactly like a real one and only fails at the proof (RFC 5802 section 9).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import stringprep
import time
import unicodedata
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "PLAIN_MAX_FIELD_OCTETS",
    "SCRAM_DEFAULT_ITERATIONS",
    "SASLProtocolError",
    "ScramClientFirst",
    "ScramSecrets",
    "ScramServer",
    "cram_md5_challenge",
    "cram_md5_digest",
    "decode_base64_strict",
    "decode_initial_response",
    "encode_challenge",
    "parse_cram_md5_response",
    "parse_plain",
    "parse_scram_client_first",
    "ProhibitedCharacter",
    "password_forms",
    "saslprep",
    "scram_salted_password",
    "scram_server_keys",
]

#: RFC 4616 section 2 (PLAIN-03): servers MUST accept authzid, authcid and passwd of up
#: to 255 octets each.  We accept four times that, for long passphrases, and refuse
#: more: it bounds the work a client can make the password hash do.
PLAIN_MAX_FIELD_OCTETS = 1024

#: RFC 7677 section 4 / RFC 5802 section 5.1 (SCRAM-04): the iteration count SHOULD be
#: at least 4096.  Used for made-up credentials of unknown users, matching Dovecot.
SCRAM_DEFAULT_ITERATIONS = 4096

#: Length of the salt made up for unknown users; 16 octets is what Dovecot and most
#: tools generate for real users, so a fake salt is indistinguishable by size.
_SCRAM_FAKE_SALT_OCTETS = 16

#: Secret per-process key for fake salts: the same unknown user gets the same salt on
#: every attempt (so repeating AUTH reveals nothing), but nobody can predict it.
_SCRAM_FAKE_SALT_KEY = secrets.token_bytes(32)

#: Random octets in a server nonce.  RFC 5802 section 5.1 asks for a fresh, unguessable
#: nonce; 18 octets give 144 bits and encode to 24 URL-safe base64 characters, which are
#: all "printable" in the RFC's sense (no ",").
_SCRAM_NONCE_OCTETS = 18

#: SHA-256 digest size: the length of a SCRAM-SHA-256 ClientProof.
_SHA256_OCTETS = 32

#: RFC 4648 section 4 alphabet, with "=" only as one or two trailing pad characters and
#: the length a multiple of four (RFC 5034 section 4, SASL-10).
_BASE64_RE = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")

#: RFC 5802 section 7: ``printable = %x21-2B / %x2D-7E`` (printable ASCII except ",").
_SCRAM_PRINTABLE_RE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")

#: RFC 5802 section 7: ``attr-val = ALPHA "=" value`` (extensions).
_SCRAM_ATTR_VAL_RE = re.compile(r"[A-Za-z]=.*", re.DOTALL)

#: RFC 5802 section 7: a saslname is UTF-8 without NUL or ",", and "=" only in the
#: escapes "=2C" (",") and "=3D" ("=").
_SCRAM_SASLNAME_RE = re.compile(r"(?:[^\x00,=]|=2C|=3D)+")

#: A host name that fits in an RFC 822 msg-id: printable ASCII except "<", ">", "@".
_CRAM_MD5_HOSTNAME_RE = re.compile(r"[\x21-\x3b\x3d\x3f\x41-\x7e]+")

#: RFC 2195 section 2: the digest is 16 octets written as 32 hexadecimal digits.
_CRAM_MD5_DIGEST_RE = re.compile(r"[0-9A-Fa-f]{32}")


class SASLProtocolError(Exception):
    """Client SASL data that does not follow the mechanism's grammar.

    Malformed base64, a PLAIN message without exactly two NULs, a SCRAM message with a
    mandatory extension, and so on.  The text is for logs, never for the client.
    """


# ---------------------------------------------------------------------------------------
# base64 (RFC 5034 section 4)
# ---------------------------------------------------------------------------------------


def decode_base64_strict(data: bytes) -> bytes:
    """Decode one client response line of base64, refusing anything irregular.

    RFC 5034 section 4 (SASL-10): any character outside the base64 alphabet, any "="
    that is not trailing padding, and padding that does not make the length a multiple
    of four make the response undecodable.  An empty line decodes to ``b""`` (an empty
    response, e.g. the answer to SCRAM's server-final challenge).

    Args:
        data: The line, without its CRLF.

    Returns:
        The decoded octets.

    Raises:
        SASLProtocolError: ``data`` is not canonical base64.
    """
    if _BASE64_RE.fullmatch(data) is None:
        raise SASLProtocolError("invalid base64 data")
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as exc:  # pragma: no cover - the regex already excludes this
        raise SASLProtocolError("invalid base64 data") from exc


def decode_initial_response(data: bytes) -> bytes:
    """Decode the initial-response argument of ``AUTH mechanism initial-response``.

    RFC 5034 section 4 (SASL-06): the argument is base64, or the single character "="
    for a present but empty response.  An empty argument is not valid (the grammar is
    ``1*base64-char / "="``): a handler passes "no initial response" as None instead.

    Raises:
        SASLProtocolError: ``data`` is neither "=" nor non-empty strict base64.
    """
    if data == b"=":
        return b""
    if not data:
        raise SASLProtocolError("empty initial response")
    return decode_base64_strict(data)


def encode_challenge(data: bytes) -> bytes:
    """Return the server challenge line for ``data``, without CRLF.

    RFC 5034 section 4 (SASL-04): ``"+" SP base64``; an empty challenge is exactly
    ``b"+ "``, with the space.
    """
    return b"+ " + base64.b64encode(data)


# ---------------------------------------------------------------------------------------
# SASLprep (RFC 4013, a profile of stringprep, RFC 3454)
# ---------------------------------------------------------------------------------------

_PROHIBITED = (
    stringprep.in_table_c12,  # non-ASCII space
    stringprep.in_table_c21_c22,  # control characters
    stringprep.in_table_c3,  # private use
    stringprep.in_table_c4,  # non-character code points
    stringprep.in_table_c5,  # surrogates
    stringprep.in_table_c6,  # inappropriate for plain text
    stringprep.in_table_c7,  # inappropriate for canonical representation
    stringprep.in_table_c8,  # change display properties / deprecated
    stringprep.in_table_c9,  # tagging characters
)


class ProhibitedCharacter(ValueError):
    """SASLprep refused a string for a prohibited character (RFC 4013 section 2.3)."""

    def __init__(self, char: str) -> None:
        super().__init__(f"SASLprep: prohibited character U+{ord(char):04X}")


def saslprep(text: str, *, allow_unassigned: bool = True) -> str:
    """Prepare a user name or password with SASLprep (RFC 4013).

    Maps non-ASCII spaces to SPACE and "commonly mapped to nothing" characters to
    nothing, normalises with NFKC (Unicode 3.2, as stringprep requires), then refuses
    prohibited characters and right-to-left text that breaks the bidi rules
    (RFC 4013 section 2; SASL-13, PLAIN-05).

    The result may be empty (e.g. a lone soft hyphen); callers that need a non-empty
    string must check, as RFC 4616 section 2 requires.

    Args:
        text: The string to prepare.
        allow_unassigned: True for "queries" (what a client sends to log in), False for
            "stored strings" (what goes into a password database), RFC 3454 section 7.

    Returns:
        The prepared string.

    Raises:
        ProhibitedCharacter: a prohibited character (a ValueError).
        ValueError: an unassigned code point (when not allowed) or a bidi violation.
    """
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch)
    )
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    for ch in prepared:
        if any(table(ch) for table in _PROHIBITED):
            raise ProhibitedCharacter(ch)
        if not allow_unassigned and stringprep.in_table_a1(ch):
            raise ValueError(f"SASLprep: unassigned code point U+{ord(ch):04X}")
    # RFC 3454 section 6: text with any RandALCat character must contain no LCat
    # character, and must begin and end with a RandALCat character.
    if any(stringprep.in_table_d1(ch) for ch in prepared) and (
        any(stringprep.in_table_d2(ch) for ch in prepared)
        or not stringprep.in_table_d1(prepared[0])
        or not stringprep.in_table_d1(prepared[-1])
    ):
        raise ValueError("SASLprep: bidirectional text violates RFC 3454 section 6")
    return prepared


def password_forms(password: str, *, offered: bool = False) -> tuple[str, ...]:
    """The forms of a password to check, in order: as it is, then SASLprep'd.

    RFC 4616 section 2 (PLAIN-05) recommends SASLprep but lets a server use another
    preparation, "including none", to interoperate with an external system.  Stored
    passwords made without SASLprep are common: Dovecot applies none, so its
    passwd-files hold passwords (and hashes of them) exactly as they were typed.  So
    the password as it is comes first, then its SASLprep form when that differs and
    is not empty.

    A password SASLprep refuses (a prohibited character such as a control or
    private-use character, or right-to-left text ending in a digit) has no prepared
    form, and is checked only as it is.  But one a client ``offered`` with a
    prohibited character (RFC 4013 section 2.3) has no form at all: RFC 6856
    section 2.2 (UTF8-05) says to reject it, and no check is made.  Right-to-left
    text that only breaks the bidi rule (such as a Hebrew word ending in a digit),
    which RFC 6856 does not ask to reject, is still checked as it is.  A stored
    secret (``offered`` false, for APOP's digest) is used as it is.

    >>> password_forms("secret"), password_forms("two\\u00a0words")
    (('secret',), ('two\\xa0words', 'two words'))
    >>> password_forms("bad\\x07"), password_forms("bad\\x07", offered=True)
    (('bad\\x07',), ())
    """
    if password.isascii() and password.isprintable():
        # SASLprep leaves printable ASCII as it is: no need to run it (it cost 7 % of
        # a benchmark session, login included).
        return (password,)
    try:
        prepared = saslprep(password)
    except ProhibitedCharacter:
        return () if offered else (password,)
    except ValueError:
        return (password,)
    if prepared and prepared != password:
        return (password, prepared)
    return (password,)


# ---------------------------------------------------------------------------------------
# PLAIN (RFC 4616)
# ---------------------------------------------------------------------------------------


def parse_plain(message: bytes) -> tuple[str, str, str]:
    """Split a PLAIN message ``[authzid] NUL authcid NUL passwd`` (RFC 4616 section 2).

    Returns:
        ``(authzid, authcid, password)``, decoded from UTF-8 and not yet prepared;
        ``authzid`` is ``""`` when the client sent none.

    Raises:
        SASLProtocolError: not exactly two NULs (PLAIN-02), a field that is not UTF-8,
            an empty authcid or password, or a field over
            :data:`PLAIN_MAX_FIELD_OCTETS`.
    """
    fields = message.split(b"\x00")
    if len(fields) != 3:
        raise SASLProtocolError("PLAIN message needs exactly two NUL separators")
    if any(len(field) > PLAIN_MAX_FIELD_OCTETS for field in fields):
        raise SASLProtocolError("PLAIN field too long")
    try:
        authzid, authcid, password = (field.decode("utf-8") for field in fields)
    except UnicodeDecodeError as exc:
        raise SASLProtocolError("PLAIN field is not UTF-8") from exc
    if not authcid or not password:
        raise SASLProtocolError("PLAIN authcid and passwd must not be empty")
    return authzid, authcid, password


# ---------------------------------------------------------------------------------------
# CRAM-MD5 (RFC 2195)
# ---------------------------------------------------------------------------------------


def cram_md5_challenge(hostname: str) -> bytes:
    """Make a fresh CRAM-MD5 challenge ``<random.timestamp@hostname>`` (CRAM-01).

    64 random bits plus a nanosecond timestamp make it unique per attempt.

    Raises:
        ValueError: ``hostname`` is not printable ASCII without "<", ">" or "@".
    """
    if _CRAM_MD5_HOSTNAME_RE.fullmatch(hostname) is None:
        raise ValueError(f"unusable host name for a CRAM-MD5 challenge: {hostname!r}")
    return f"<{secrets.randbits(64)}.{time.time_ns()}@{hostname}>".encode("ascii")


def cram_md5_digest(secret: str | bytes, challenge: bytes) -> str:
    """Return ``hex(HMAC-MD5(secret, challenge))`` in lower case (RFC 2195 section 2).

    A ``str`` secret is encoded as UTF-8.
    """
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(key, challenge, hashlib.md5).hexdigest()


def parse_cram_md5_response(response: bytes) -> tuple[str, str]:
    """Split a CRAM-MD5 response ``user SP digest`` (CRAM-02).

    The user name is everything before the last space.

    Returns:
        ``(user, digest)``, the digest in lower case.

    Raises:
        SASLProtocolError: no space, an empty user, a user that is not UTF-8, or a
            digest that is not 32 hex digits.
    """
    user_octets, space, digest_octets = response.rpartition(b" ")
    if not space or not user_octets:
        raise SASLProtocolError("CRAM-MD5 response is not 'user SP digest'")
    try:
        user = user_octets.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SASLProtocolError("CRAM-MD5 user name is not UTF-8") from exc
    digest = digest_octets.decode("ascii", errors="replace")
    if _CRAM_MD5_DIGEST_RE.fullmatch(digest) is None:
        raise SASLProtocolError("CRAM-MD5 digest is not 32 hex digits")
    return user, digest.lower()


# ---------------------------------------------------------------------------------------
# SCRAM-SHA-256 (RFC 5802, RFC 7677)
# ---------------------------------------------------------------------------------------


class ScramSecrets(Protocol):
    """What :class:`ScramServer` needs of a user's stored SCRAM credentials.

    :class:`trio_pop3.mailbox.ScramCredentials` has exactly these attributes.
    """

    @property
    def iterations(self) -> int:
        """PBKDF2 iteration count."""

    @property
    def salt(self) -> bytes:
        """The salt."""

    @property
    def stored_key(self) -> bytes:
        """H(ClientKey)."""

    @property
    def server_key(self) -> bytes:
        """HMAC(SaltedPassword, "Server Key")."""


@dataclass(frozen=True, slots=True)
class _FakeSecrets:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes


def scram_salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """``SaltedPassword = Hi(Normalize(password), salt, i)`` (RFC 5802 section 3).

    Normalize is SASLprep for stored strings.

    Raises:
        ValueError: SASLprep refuses ``password``.
    """
    prepared = saslprep(password, allow_unassigned=False)
    return hashlib.pbkdf2_hmac("sha256", prepared.encode("utf-8"), salt, iterations)


def scram_server_keys(salted_password: bytes) -> tuple[bytes, bytes]:
    """Return ``(StoredKey, ServerKey)`` for a salted password (RFC 5802 section 3)."""
    client_key = hmac.digest(salted_password, b"Client Key", "sha256")
    server_key = hmac.digest(salted_password, b"Server Key", "sha256")
    return hashlib.sha256(client_key).digest(), server_key


def _unescape_saslname(value: str) -> str:
    """Undo the ``=2C`` / ``=3D`` escapes of a saslname (RFC 5802 section 5.1, SCRAM-02)."""
    if _SCRAM_SASLNAME_RE.fullmatch(value) is None:
        raise SASLProtocolError("invalid SCRAM saslname")
    return value.replace("=2C", ",").replace("=3D", "=")


@dataclass(frozen=True, slots=True)
class ScramClientFirst:
    """A parsed SCRAM client-first-message (RFC 5802 section 7).

    Attributes:
        gs2_header: The GS2 header as sent, e.g. ``b"n,,"``; ``c=`` must echo it.
        authzid: The unescaped ``a=`` authorization identity, or None.
        username: The unescaped ``n=`` user name, not yet SASLprepped.
        client_nonce: The client's ``r=`` nonce.
        bare: client-first-message-bare, verbatim, for the AuthMessage.
    """

    gs2_header: bytes
    authzid: str | None
    username: str
    client_nonce: str
    bare: bytes


def parse_scram_client_first(message: bytes) -> ScramClientFirst:
    """Parse a SCRAM client-first-message.

    The GS2 channel-binding flag must be ``n`` or ``y``: we offer no -PLUS mechanism,
    so ``y`` ("I could bind but you don't offer it") is fine and ``p=`` fails
    (SCRAM-06).  A mandatory extension ``m=`` fails (SCRAM-05); other extensions are
    ignored.

    Raises:
        SASLProtocolError: the message does not follow the grammar.
    """
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SASLProtocolError("SCRAM client-first-message is not UTF-8") from exc
    parts = text.split(",")
    if len(parts) < 4:
        raise SASLProtocolError("SCRAM client-first-message is too short")
    cbind_flag, authzid_field, *bare_parts = parts
    if cbind_flag.startswith("p="):
        raise SASLProtocolError("SCRAM channel binding requested but not offered")
    if cbind_flag not in ("n", "y"):
        raise SASLProtocolError("invalid SCRAM GS2 channel-binding flag")
    authzid: str | None = None
    if authzid_field:
        if not authzid_field.startswith("a="):
            raise SASLProtocolError("invalid SCRAM GS2 authzid")
        authzid = _unescape_saslname(authzid_field[2:])
    if bare_parts[0].startswith("m="):
        raise SASLProtocolError("SCRAM mandatory extension not supported")
    user_field, nonce_field, *extensions = bare_parts
    if not user_field.startswith("n=") or not nonce_field.startswith("r="):
        raise SASLProtocolError("SCRAM client-first-message needs n= then r=")
    nonce = nonce_field[2:]
    if _SCRAM_PRINTABLE_RE.fullmatch(nonce) is None:
        raise SASLProtocolError("invalid SCRAM client nonce")
    if not all(_SCRAM_ATTR_VAL_RE.fullmatch(ext) for ext in extensions):
        raise SASLProtocolError("invalid SCRAM extension")
    return ScramClientFirst(
        gs2_header=f"{cbind_flag},{authzid_field},".encode(),
        authzid=authzid,
        username=_unescape_saslname(user_field[2:]),
        client_nonce=nonce,
        bare=",".join(bare_parts).encode(),
    )


def _fake_secrets(username: str, iterations: int) -> _FakeSecrets:
    try:
        # Derive from the name as it is looked up, so that two spellings of one unknown
        # user get one salt, just as they would for a real user.
        username = saslprep(username)
    except ValueError:
        pass
    salt = hmac.digest(_SCRAM_FAKE_SALT_KEY, username.encode("utf-8"), "sha256")
    return _FakeSecrets(
        iterations=iterations,
        salt=salt[:_SCRAM_FAKE_SALT_OCTETS],
        # Random keys: no proof can match, yet verification does the same work.
        stored_key=secrets.token_bytes(_SHA256_OCTETS),
        server_key=secrets.token_bytes(_SHA256_OCTETS),
    )


class ScramServer:
    """The server side of one SCRAM-SHA-256 exchange, after the client-first-message.

    Args:
        client_first: The parsed client-first-message.
        credentials: The user's stored credentials, or None for an unknown user (or one
            without SCRAM credentials): then a deterministic fake salt and
            :data:`SCRAM_DEFAULT_ITERATIONS` are announced and the proof always fails
            (SCRAM-11).
        server_nonce: The server's part of the nonce; by default a fresh random one
            (SCRAM-03).  Inject one only in tests.
        fake_iterations: The iteration count announced for an unknown user; make it
            the count your real credentials use, or the difference gives users away.

    Attributes:
        server_first: The server-first-message to send as a challenge.
        nonce: The combined nonce the client-final-message must repeat.
    """

    __slots__ = ("_client_first", "_done", "_secrets", "nonce", "server_first")

    def __init__(
        self,
        client_first: ScramClientFirst,
        credentials: ScramSecrets | None,
        *,
        server_nonce: str | None = None,
        fake_iterations: int = SCRAM_DEFAULT_ITERATIONS,
    ) -> None:
        if server_nonce is None:
            server_nonce = secrets.token_urlsafe(_SCRAM_NONCE_OCTETS)
        elif _SCRAM_PRINTABLE_RE.fullmatch(server_nonce) is None:
            raise ValueError("a SCRAM nonce is printable ASCII without ','")
        self._client_first = client_first
        self._secrets: ScramSecrets = (
            _fake_secrets(client_first.username, fake_iterations)
            if credentials is None
            else credentials
        )
        self._done = False
        self.nonce = client_first.client_nonce + server_nonce
        salt = base64.b64encode(self._secrets.salt).decode("ascii")
        self.server_first = f"r={self.nonce},s={salt},i={self._secrets.iterations}".encode()

    def verify_client_final(self, message: bytes) -> bytes | None:
        """Check the client-final-message; may be called once.

        Verifies that ``c=`` is the base64 GS2 header (no channel binding, SCRAM-06),
        that ``r=`` repeats the nonce (SCRAM-03), and the proof, in constant time
        (SCRAM-09).

        Returns:
            The server-final-message ``v=ServerSignature`` on success, None when the
            proof is wrong (wrong password, or unknown user).

        Raises:
            SASLProtocolError: the message is malformed, or its ``c=`` or ``r=`` is wrong.
            RuntimeError: called a second time.
        """
        if self._done:
            raise RuntimeError("verify_client_final() called twice")
        self._done = True
        try:
            text = message.decode("ascii")
        except UnicodeDecodeError as exc:
            raise SASLProtocolError("SCRAM client-final-message is not ASCII") from exc
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            raise SASLProtocolError("SCRAM client-final-message has no proof")
        fields = without_proof.split(",")
        if len(fields) < 2 or not fields[0].startswith("c=") or not fields[1].startswith("r="):
            raise SASLProtocolError("SCRAM client-final-message needs c= then r=")
        cbind_field, nonce_field, *extensions = fields
        if not all(_SCRAM_ATTR_VAL_RE.fullmatch(ext) for ext in extensions):
            raise SASLProtocolError("invalid SCRAM extension")
        if decode_base64_strict(cbind_field[2:].encode()) != self._client_first.gs2_header:
            raise SASLProtocolError("SCRAM channel-binding data does not match")
        if not hmac.compare_digest(nonce_field[2:], self.nonce):
            raise SASLProtocolError("SCRAM nonce does not match")
        proof = decode_base64_strict(proof_b64.encode())
        if len(proof) != _SHA256_OCTETS:
            raise SASLProtocolError("SCRAM proof has the wrong length")
        auth_message = b",".join(
            (self._client_first.bare, self.server_first, without_proof.encode())
        )
        client_signature = hmac.digest(self._secrets.stored_key, auth_message, "sha256")
        client_key = bytes(p ^ s for p, s in zip(proof, client_signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self._secrets.stored_key):
            return None
        signature = hmac.digest(self._secrets.server_key, auth_message, "sha256")
        return b"v=" + base64.b64encode(signature)
