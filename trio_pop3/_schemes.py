"""Dovecot-compatible password schemes: verifying and making stored passwords.

Stored passwords
----------------
A stored password is ``{SCHEME}data``, exactly as Dovecot writes it and as
``doveadm pw -s SCHEME`` prints it.  The scheme name is case-insensitive; a value
without a ``{...}`` prefix is PLAIN, except that a bare crypt(3) hash (``$6$...``,
``$2y$...``) is Dovecot's default scheme, CRYPT, so the hash string itself can never
log in.  Supported schemes:

* ``PLAIN`` (aliases ``CLEARTEXT``, ``CLEAR``): the password itself.
* ``SHA256``, ``SHA512``: the digest of the password, base64 (hex is recognised too).
* ``SSHA256``, ``SSHA512``: ``digest(password + salt) + salt``, base64.
* ``BLF-CRYPT``: bcrypt, ``$2a$``/``$2b$``/``$2y$``; needs ``pip install trio-pop3[bcrypt]``.
* ``ARGON2ID``, ``ARGON2I``: a PHC string ``$argon2id$v=19$m=...,t=...,p=...$salt$hash``;
  needs ``pip install trio-pop3[argon2]``.
* ``SCRAM-SHA-256``: ``iterations,salt,StoredKey,ServerKey`` (base64 fields), the
  SCRAM verifier of RFC 5802 section 3 / RFC 7677, which also lets a server offer
  SASL SCRAM-SHA-256 without knowing the plaintext.
* ``SHA512-CRYPT`` (``$6$``), ``SHA256-CRYPT`` (``$5$``), ``MD5-CRYPT`` (``$1$``),
  ``DES-CRYPT`` and ``CRYPT`` (any hash the system's crypt(3) knows, bare ones
  included): verified as Dovecot does, by the C library's crypt(3)
  (:mod:`trio_pop3._crypt3`), so they need libcrypt (every Linux has it).  ``CRYPT``
  makes ``$6$`` hashes; ``DES-CRYPT`` is verify-only, since DES reads only the first
  8 characters of a password.
* ``PBKDF2``: Dovecot's ``$1$salt$rounds$hex`` of PBKDF2-HMAC-SHA1.

An encoding suffix overrides how ``data`` is written, for any scheme: ``.HEX``,
``.B64`` or ``.BASE64``, e.g. ``{SHA256.HEX}2bb8...`` or ``{PLAIN.B64}c2VjcmV0``
(handy for plaintext passwords that contain ``:``).

Passwords are compared as UTF-8 octets; a string holding lone surrogates from
``errors="surrogateescape"`` decoding stands for the original octets.

Unicode: one password can be typed as different code points (``café`` composed or
with a combining accent, a full-width ``P``, U+FF30), and SASLprep (RFC 4013) maps
them all to one form.  RFC 4616 section 2 and RFC 6856 section 2.2 ask that stored passwords
be prepared the same way as offered ones, so :func:`hash_password` hashes the
SASLprep form (a password SASLprep refuses, with a control character say, is hashed
as typed), and a PLAIN entry also matches a password equal to its SASLprep form.
The login side checks the password as sent and then its SASLprep form
(``trio_pop3._mailbox.check_offered_password``), so an entry made here matches the
password however it is typed, and one that Dovecot's ``doveadm pw`` made (which
hashes the password as typed) matches it typed as it was then.

:mod:`trio_pop3._passwd` (passwd-files and their authenticator) re-exports the public
names of this module.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from . import _crypt3
from ._mailbox import ScramCredentials
from ._proto._sasl import saslprep, scram_server_keys

__all__ = [
    "ARGON2_MEMORY_COST",
    "ARGON2_PARALLELISM",
    "ARGON2_TIME_COST",
    "BCRYPT_ROUNDS",
    "DEFAULT_SCHEME",
    "SALT_SIZE",
    "SCRAM_ITERATIONS",
    "SCRAM_MIN_ITERATIONS",
    "SUPPORTED_SCHEMES",
    "UnsupportedScheme",
    "hash_password",
    "scram_sha256_credentials",
    "verify_password",
]

#: Scheme :func:`hash_password` uses when none is given.  Salted SHA-512 needs no
#: optional dependency and is what Dovecot users know; choose ``ARGON2ID`` or
#: ``BLF-CRYPT`` where a stolen file must resist offline guessing for longer.
DEFAULT_SCHEME: Final = "SSHA512"

#: Bytes of random salt for SSHA256/SSHA512, SCRAM-SHA-256 and Argon2.  128 bits, the
#: floor NIST SP 800-132 section 5.1 sets; Dovecot's verifiers take any salt length
#: (``doveadm pw`` itself writes only 4 bytes for SSHA*).
SALT_SIZE: Final = 16

#: PBKDF2 iterations of generated SCRAM-SHA-256 verifiers: RFC 7677 section 4's
#: minimum, which is also what Dovecot writes and the least it accepts.
SCRAM_ITERATIONS: Final = 4096

#: Fewest iterations a stored SCRAM-SHA-256 verifier may have; Dovecot 2.3 rejects
#: anything below RFC 7677's 4096 and so do we.
SCRAM_MIN_ITERATIONS: Final = 4096

#: Longest stored password (the field after the user name) that can match.  The
#: longest hash strings (Argon2, SCRAM-SHA-256) are under 200 characters, and a
#: SASL password is at most 255 octets (RFC 4616 section 2), 1 KiB as ``.HEX``.
#: A longer field is damage, and checking it would cost event-loop time
#: (SASLprep takes about 5 us a character: an audit stalled every session for 3 s
#: per login with a 1 MB entry).
MAX_STORED_PASSWORD: Final = 4096

#: Largest iteration count accepted, Dovecot's limit (a C ``int``).
_SCRAM_MAX_ITERATIONS: Final = 2**31 - 1

#: Rounds of generated PBKDF2 entries: Dovecot's default (``doveadm pw -s PBKDF2``),
#: about 2 ms; the scheme is there for passwd-files Dovecot wrote, and SHA512-CRYPT,
#: BLF-CRYPT or ARGON2ID are better choices for new ones.
_PBKDF2_ROUNDS: Final = 5000
#: Rounds accepted in a PBKDF2 entry: Dovecot's limit (a C ``unsigned int``).
_PBKDF2_MAX_ROUNDS: Final = 2**32 - 1
#: Salt characters of generated PBKDF2 entries, as Dovecot writes them.
_PBKDF2_SALT_LENGTH: Final = 16

#: bcrypt cost factor (2**10 rounds) of generated BLF-CRYPT hashes: the OWASP
#: Password Storage Cheat Sheet's minimum, about 80 ms on a 2-core VM.  POP3 clients
#: log in afresh on every poll (often every few minutes), so each step up doubles a
#: load the server pays all day; ``doveadm pw`` defaults to a weak 5.
BCRYPT_ROUNDS: Final = 10

#: Argon2 passes (``t``) of generated hashes.  With :data:`ARGON2_MEMORY_COST` this
#: is above OWASP's minimum profile (m=19 MiB, t=2, p=1); 3 is also the least
#: libsodium (Dovecot's Argon2 library) allows when it hashes with Argon2i.
ARGON2_TIME_COST: Final = 3

#: Argon2 memory (``m``) in KiB: 19 MiB, OWASP's recommendation.  Four concurrent
#: verifications (``_passwd.HASH_THREADS``) then need under 80 MiB, about 40 ms each.
ARGON2_MEMORY_COST: Final = 19456

#: Argon2 lanes (``p``): one, so a verification uses one thread and
#: ``_passwd.HASH_THREADS`` bounds the CPU used; it is also what libsodium writes.
ARGON2_PARALLELISM: Final = 1

#: Length in bytes of the Argon2 tag, as libsodium and argon2-cffi write it.
_ARGON2_HASH_LEN: Final = 32

#: bcrypt uses at most this many bytes of the password (the original OpenBSD
#: algorithm); Dovecot's libc bcrypt silently ignores the rest.
_BCRYPT_MAX_PASSWORD: Final = 72

_PLAIN_NAMES: Final = frozenset({"PLAIN", "CLEARTEXT", "CLEAR"})

#: Characters a passwd-file line cannot hold in a password: ``:`` ends the field, CR
#: and LF end the line.  :func:`hash_password` writes a PLAIN password containing any
#: of them as ``{PLAIN.B64}`` (which Dovecot reads too), so the entry it prints can go
#: into a passwd-file as it is.
_PASSWD_FILE_SEPARATORS: Final = frozenset(":\r\n")
_ENCODINGS: Final = {"HEX": "hex", "B64": "base64", "BASE64": "base64"}
_HEX_RE: Final = re.compile(r"(?:[0-9a-fA-F]{2})*")
_DIGITS_RE: Final = re.compile(r"[0-9]{1,10}")
#: A bare value that is a crypt(3) hash, which Dovecot reads as its default scheme,
#: CRYPT; and one that is an Argon2 hash, which CRYPT cannot verify.
_CRYPT_HASH_RE: Final = re.compile(r"\$(?:1|2[abxy]|5|6|y|gy|7)\$")
_BARE_ARGON2_RE: Final = re.compile(r"\$argon2id?\$")
#: A bcrypt hash: ``$2y$<cost>$`` then 22 characters of salt and 31 of hash.
_BCRYPT_RE: Final = re.compile(rb"\$2[abxy]\$[0-9]{2}\$[./A-Za-z0-9]{53}")
#: An Argon2 PHC string: ``$argon2id$v=19$m=...,t=...,p=...$salt$hash`` (base64).
_ARGON2_PHC_RE: Final = re.compile(
    rb"\$argon2id?\$v=[0-9]+\$m=[0-9]+,t=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+"
)
#: Dovecot's PBKDF2 data: ``$1$<salt>$<rounds>$<hex of the derived key>``.
_PBKDF2_RE: Final = re.compile(rb"\$1\$([^$]+)\$([0-9]{1,10})\$((?:[0-9a-fA-F]{2})+)")


class UnsupportedScheme(ValueError):
    """A stored password uses a scheme this module cannot verify or generate.

    Raised for an unknown scheme name or encoding suffix, for a known scheme whose
    optional library is not installed (the message then says which extra to install),
    and for the ``*-CRYPT`` schemes on a system without crypt(3) (``needs`` says
    what is missing).

    Attributes:
        scheme: The scheme name as written, e.g. ``"SHA1"`` or ``"BLF-CRYPT"``.
        extra: The ``trio-pop3`` extra that provides the scheme, or None if unknown
            or not a Python library.
    """

    def __init__(self, scheme: str, extra: str | None = None, *, needs: str | None = None) -> None:
        self.scheme = scheme
        self.extra = extra
        if needs is not None:
            text = f"password scheme {scheme} needs {needs}"
        elif extra is None:
            text = f"unknown password scheme {scheme!r}"
        else:
            text = (
                f"password scheme {scheme} needs the {extra} library: "
                f"pip install trio-pop3[{extra}]"
            )
        super().__init__(text)


# --------------------------------------------------------------------------------------
# SCRAM-SHA-256


# ScramCredentials (iterations, salt, stored_key, server_key) is the frozen dataclass
# of the mailbox layer, which the SASL mechanism consumes; _passwd re-exports it.


def _scram_derive(password: bytes, salt: bytes, iterations: int) -> ScramCredentials:
    """RFC 5802 section 3: SaltedPassword, then StoredKey and ServerKey."""
    salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    stored_key, server_key = scram_server_keys(salted)
    return ScramCredentials(iterations, salt, stored_key, server_key)


def _scram_prepare(password: bytes, *, stored: bool) -> bytes | None:
    """Return SASLprep(password) as UTF-8 (RFC 5802 section 2.2 "Normalize"), or None.

    ``stored`` selects RFC 3454's rules for stored strings (no unassigned code points)
    over those for queries.
    """
    try:
        return saslprep(password.decode("utf-8"), allow_unassigned=not stored).encode("utf-8")
    except ValueError:  # not UTF-8, or a character SASLprep prohibits
        return None


def _scram_to_stored(creds: ScramCredentials) -> str:
    fields = (str(creds.iterations), _b64(creds.salt), _b64(creds.stored_key))
    return "{SCRAM-SHA-256}" + ",".join((*fields, _b64(creds.server_key)))


def _parse_scram(data: bytes) -> ScramCredentials | None:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    parts = text.split(",")
    if len(parts) != 4 or not _DIGITS_RE.fullmatch(parts[0]):
        return None
    iterations = int(parts[0])
    if not SCRAM_MIN_ITERATIONS <= iterations <= _SCRAM_MAX_ITERATIONS:
        return None
    salt, stored_key, server_key = (_unb64(p) for p in parts[1:])
    if not salt or stored_key is None or server_key is None:
        return None
    size = hashlib.sha256().digest_size
    if len(stored_key) != size or len(server_key) != size:
        return None
    return ScramCredentials(iterations, salt, stored_key, server_key)


# --------------------------------------------------------------------------------------
# Encoding helpers


def _password_bytes(password: str) -> bytes | None:
    try:
        return password.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        return None


def _unhex(text: str) -> bytes | None:
    # bytes.fromhex would also skip whitespace; Dovecot does not.
    return bytes.fromhex(text) if _HEX_RE.fullmatch(text) else None


def _equal(a: bytes, b: bytes) -> bool:
    # compare_digest still reveals whether the lengths differ; comparing digests
    # hides even the length of a stored plaintext.
    return hmac.compare_digest(hashlib.sha256(a).digest(), hashlib.sha256(b).digest())


def _plain_verify(data: bytes, password: bytes) -> bool:
    """A stored plaintext matches the password itself, or one equal to its SASLprep form.

    So ``{PLAIN}cafe\u0301`` (decomposed) matches ``café`` typed composed, whose
    SASLprep form the login side offers next (RFC 4616 section 2).
    """
    if _equal(data, password):
        return True
    prepared = _scram_prepare(data, stored=False)
    return prepared is not None and prepared != data and _equal(prepared, password)


def _stored_form(password: str) -> str:
    """Return the form of ``password`` that :func:`hash_password` stores: SASLprep's.

    A password SASLprep refuses (a control character, a lone surrogate) or maps to
    nothing (only soft hyphens, say) is kept as typed: clients can still send it as
    it is with USER/PASS, PLAIN and LOGIN.
    """
    try:
        return saslprep(password, allow_unassigned=False) or password
    except ValueError:
        return password


# --------------------------------------------------------------------------------------
# The schemes

#: Verify a password (as bytes) against decoded scheme data; False if malformed.
_Verifier = Callable[[bytes, bytes], bool]
#: Make scheme data (before encoding) from a password and optional ``rounds``.
_Maker = Callable[[bytes, int | None], bytes]


@dataclass(frozen=True, slots=True)
class _Scheme:
    verify: _Verifier
    make: _Maker
    #: Data is raw binary, base64 unless a suffix says otherwise (else it is text).
    binary: bool = False
    #: Too slow for the event loop: run in a worker thread.
    slow: bool = False
    #: Module of the optional dependency, and the extra that installs it.
    module: str | None = None
    extra: str | None = None
    #: Digest size of an unsalted digest, whose hex form Dovecot also accepts.
    fixed_size: int = 0
    #: Verified by the system's crypt(3) (:mod:`trio_pop3._crypt3`).
    libcrypt: bool = False
    #: Whether decoded data has the scheme's form (None: any data may be right), so
    #: that a damaged entry is reported when the file is loaded (:func:`_malformed`).
    well_formed: Callable[[bytes], bool] | None = None


def _no_rounds(scheme: str, rounds: int | None) -> None:
    if rounds is not None:
        raise ValueError(f"password scheme {scheme} takes no rounds")


def _plain_make(password: bytes, rounds: int | None) -> bytes:
    _no_rounds("PLAIN", rounds)
    return password


def _digest_scheme(algorithm: str, *, salted: bool) -> _Scheme:
    size = hashlib.new(algorithm).digest_size

    def verify(data: bytes, password: bytes) -> bool:
        if not salted:
            return len(data) == size and hmac.compare_digest(
                hashlib.new(algorithm, password).digest(), data
            )
        digest, salt = data[:size], data[size:]
        if not salt:  # Dovecot: "password is too short"
            return False
        return hmac.compare_digest(hashlib.new(algorithm, password + salt).digest(), digest)

    def make(password: bytes, rounds: int | None) -> bytes:
        _no_rounds(algorithm.upper(), rounds)
        if not salted:
            return hashlib.new(algorithm, password).digest()
        salt = secrets.token_bytes(SALT_SIZE)
        return hashlib.new(algorithm, password + salt).digest() + salt

    def well_formed(data: bytes) -> bool:
        return len(data) > size if salted else len(data) == size

    return _Scheme(
        verify, make, binary=True, fixed_size=0 if salted else size, well_formed=well_formed
    )


def _bcrypt_verify(data: bytes, password: bytes) -> bool:
    import bcrypt

    if not data.startswith((b"$2a$", b"$2b$", b"$2y$")):
        return False
    try:
        return bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD], data)
    except ValueError:  # "Invalid salt" and other malformed hashes
        return False


def _bcrypt_make(password: bytes, rounds: int | None) -> bytes:
    import bcrypt

    if len(password) > _BCRYPT_MAX_PASSWORD:
        raise ValueError(
            f"BLF-CRYPT uses only the first {_BCRYPT_MAX_PASSWORD} bytes of a password; "
            "use ARGON2ID for longer ones"
        )
    cost = BCRYPT_ROUNDS if rounds is None else rounds
    return bcrypt.hashpw(password, bcrypt.gensalt(cost))


def _argon2_verify(data: bytes, password: bytes) -> bool:
    from argon2.exceptions import VerificationError
    from argon2.low_level import Type, verify_secret

    # Like libsodium (and so Dovecot), take the variant from the string, whichever of
    # ARGON2I and ARGON2ID the prefix said.
    if data.startswith(b"$argon2id$"):
        variant = Type.ID
    elif data.startswith(b"$argon2i$"):
        variant = Type.I
    else:
        return False
    try:
        return verify_secret(data, password, variant)
    except (VerificationError, ValueError):  # mismatch, or a malformed string
        return False


def _argon2_maker(variant_name: str) -> _Maker:
    def make(password: bytes, rounds: int | None) -> bytes:
        from argon2.low_level import Type, hash_secret

        return hash_secret(
            password,
            secrets.token_bytes(SALT_SIZE),
            time_cost=ARGON2_TIME_COST if rounds is None else rounds,
            memory_cost=ARGON2_MEMORY_COST,
            parallelism=ARGON2_PARALLELISM,
            hash_len=_ARGON2_HASH_LEN,
            type=Type.ID if variant_name == "ARGON2ID" else Type.I,
        )

    return make


def _scram_verify(data: bytes, password: bytes) -> bool:
    stored = _parse_scram(data)
    if stored is None:
        return False
    # Dovecot derives the keys from the password as it is; RFC 5802 (and so SCRAM
    # clients, and trio_pop3's SASL layer) from its SASLprep form.  Accept either; the
    # two differ only for some non-ASCII or control characters.
    candidates = [password]
    prepared = _scram_prepare(password, stored=False)
    if prepared is not None and prepared != password:
        candidates.append(prepared)
    for candidate in candidates:
        fresh = _scram_derive(candidate, stored.salt, stored.iterations)
        # Dovecot checks StoredKey only; a ServerKey that does not match marks a
        # damaged entry, which would fail SCRAM's server signature anyway.
        if hmac.compare_digest(
            fresh.stored_key + fresh.server_key, stored.stored_key + stored.server_key
        ):
            return True
    return False


def _scram_make(password: bytes, rounds: int | None) -> bytes:
    iterations = SCRAM_ITERATIONS if rounds is None else rounds
    if iterations < SCRAM_MIN_ITERATIONS:
        raise ValueError(f"SCRAM-SHA-256 needs at least {SCRAM_MIN_ITERATIONS} iterations")
    # hash_password hands over the SASLprep form (_stored_form), which SASL
    # SCRAM-SHA-256 clients derive their keys from (RFC 5802 section 2.2).
    creds = _scram_derive(password, secrets.token_bytes(SALT_SIZE), iterations)
    return _scram_to_stored(creds).removeprefix("{SCRAM-SHA-256}").encode("ascii")


def _crypt_verify(data: bytes, password: bytes) -> bool:
    """Dovecot's check for every CRYPT scheme: crypt(password, stored) == stored."""
    result = _crypt3.crypt(password, data)
    return result is not None and hmac.compare_digest(result, data)


def _crypt_maker(name: str, prefix: str, salt_length: int) -> _Maker:
    """Make ``prefix`` hashes; ``rounds`` (SHA-crypt only) as in ``$6$rounds=N$``."""

    def make(password: bytes, rounds: int | None) -> bytes:
        if rounds is not None:
            if prefix not in ("$5$", "$6$"):
                _no_rounds(name, rounds)
            if rounds not in _crypt3.SHA_CRYPT_ROUNDS_RANGE:
                allowed = _crypt3.SHA_CRYPT_ROUNDS_RANGE
                raise ValueError(f"{name} rounds must be {allowed.start} to {allowed[-1]}")
        result = _crypt3.crypt(password, _crypt3.make_setting(prefix, salt_length, rounds))
        if result is None:
            raise ValueError(f"the system's crypt(3) cannot make a {name} hash of it")
        return result

    return make


def _des_crypt_make(password: bytes, rounds: int | None) -> bytes:
    raise ValueError("DES-CRYPT reads only 8 characters of a password; use SHA512-CRYPT")


def _pbkdf2_verify(data: bytes, password: bytes) -> bool:
    """Dovecot's ``$1$salt$rounds$hex``: PBKDF2-HMAC-SHA1, the salt used as text."""
    match = _PBKDF2_RE.fullmatch(data)
    if match is None:
        return False
    salt, rounds, expected = match[1], int(match[2]), bytes.fromhex(match[3].decode())
    if not 1 <= rounds <= _PBKDF2_MAX_ROUNDS:
        return False
    derived = hashlib.pbkdf2_hmac("sha1", password, salt, rounds, len(expected))
    return hmac.compare_digest(derived, expected)


def _pbkdf2_make(password: bytes, rounds: int | None) -> bytes:
    count = _PBKDF2_ROUNDS if rounds is None else rounds
    if not 1 <= count <= _PBKDF2_MAX_ROUNDS:
        raise ValueError(f"PBKDF2 rounds must be 1 to {_PBKDF2_MAX_ROUNDS}")
    salt = _crypt3.random_salt(_PBKDF2_SALT_LENGTH)
    derived = hashlib.pbkdf2_hmac("sha1", password, salt, count)
    return b"$1$%s$%d$%s" % (salt, count, derived.hex().encode("ascii"))


def _matches(pattern: re.Pattern[bytes]) -> Callable[[bytes], bool]:
    """A ``well_formed`` check: the whole data matches ``pattern``."""
    return lambda data: pattern.fullmatch(data) is not None


_PLAIN_SCHEME: Final = _Scheme(_plain_verify, _plain_make)
_SHA512_CRYPT: Final = _Scheme(
    _crypt_verify,
    _crypt_maker("SHA512-CRYPT", "$6$", _crypt3.SHA_CRYPT_SALT_LENGTH),
    slow=True,
    libcrypt=True,
)

_SCHEMES: Final[Mapping[str, _Scheme]] = {
    "PLAIN": _PLAIN_SCHEME,
    "CLEARTEXT": _PLAIN_SCHEME,
    "CLEAR": _PLAIN_SCHEME,
    "SHA256": _digest_scheme("sha256", salted=False),
    "SSHA256": _digest_scheme("sha256", salted=True),
    "SHA512": _digest_scheme("sha512", salted=False),
    "SSHA512": _digest_scheme("sha512", salted=True),
    "BLF-CRYPT": _Scheme(
        _bcrypt_verify,
        _bcrypt_make,
        slow=True,
        module="bcrypt",
        extra="bcrypt",
        well_formed=_matches(_BCRYPT_RE),
    ),
    "ARGON2ID": _Scheme(
        _argon2_verify,
        _argon2_maker("ARGON2ID"),
        slow=True,
        module="argon2",
        extra="argon2",
        well_formed=_matches(_ARGON2_PHC_RE),
    ),
    "ARGON2I": _Scheme(
        _argon2_verify,
        _argon2_maker("ARGON2I"),
        slow=True,
        module="argon2",
        extra="argon2",
        well_formed=_matches(_ARGON2_PHC_RE),
    ),
    # At least 4096 rounds of PBKDF2 (about 1.3 ms on a 2-core VM): long enough to
    # stall every other session, so SCRAM verification goes to a thread too.
    "SCRAM-SHA-256": _Scheme(
        _scram_verify,
        _scram_make,
        slow=True,
        well_formed=lambda data: _parse_scram(data) is not None,
    ),
    # crypt(3): 5000 rounds of SHA-512 take about 2 ms, and bcrypt more.
    "CRYPT": _SHA512_CRYPT,
    "SHA512-CRYPT": _SHA512_CRYPT,
    "SHA256-CRYPT": _Scheme(
        _crypt_verify,
        _crypt_maker("SHA256-CRYPT", "$5$", _crypt3.SHA_CRYPT_SALT_LENGTH),
        slow=True,
        libcrypt=True,
    ),
    "MD5-CRYPT": _Scheme(
        _crypt_verify,
        _crypt_maker("MD5-CRYPT", "$1$", _crypt3.MD5_CRYPT_SALT_LENGTH),
        slow=True,
        libcrypt=True,
    ),
    "DES-CRYPT": _Scheme(_crypt_verify, _des_crypt_make, slow=True, libcrypt=True),
    "PBKDF2": _Scheme(_pbkdf2_verify, _pbkdf2_make, slow=True, well_formed=_matches(_PBKDF2_RE)),
}

#: Names of all supported schemes (upper case; encoding suffixes not listed).
SUPPORTED_SCHEMES: Final = frozenset(_SCHEMES)


@dataclass(frozen=True, slots=True)
class _Parsed:
    name: str  # upper case, without the suffix
    encoding: str | None  # "hex", "base64" or None for the scheme's default
    label: str  # as written inside the braces, upper case
    data: str
    scheme: _Scheme


def _parse(stored: str) -> _Parsed:
    """Split ``{SCHEME.ENC}data``; raise UnsupportedScheme for an unknown name/suffix."""
    end = stored.find("}") if stored.startswith("{") else -1
    if end < 0:
        # Dovecot's default scheme is CRYPT: a bare "$6$..." is a hash, never a
        # password.  Taking it as PLAIN would let the hash itself log in.
        if _CRYPT_HASH_RE.match(stored):
            return _Parsed("CRYPT", None, "CRYPT", stored, _SCHEMES["CRYPT"])
        if _BARE_ARGON2_RE.match(stored):
            raise UnsupportedScheme("CRYPT", needs="{ARGON2ID} or {ARGON2I} before an Argon2 hash")
        return _Parsed("PLAIN", None, "PLAIN", stored, _PLAIN_SCHEME)
    label = stored[1:end].upper()
    name, dot, suffix = label.partition(".")
    encoding = _ENCODINGS.get(suffix) if dot else None
    scheme = _SCHEMES.get(name)
    if scheme is None or (dot and encoding is None):
        raise UnsupportedScheme(stored[1:end])
    return _Parsed(name, encoding, label, stored[end + 1 :], scheme)


def _require(parsed: _Parsed) -> None:
    if parsed.scheme.libcrypt and not _crypt3.available():
        raise UnsupportedScheme(parsed.name, needs="the system's crypt(3) library (libcrypt)")
    if parsed.scheme.module is None:
        return
    try:
        importlib.import_module(parsed.scheme.module)
    except ImportError:
        raise UnsupportedScheme(parsed.name, parsed.scheme.extra) from None


def _decode_data(parsed: _Parsed) -> bytes | None:
    text, scheme = parsed.data, parsed.scheme
    if parsed.encoding == "hex":
        return _unhex(text)
    if parsed.encoding == "base64":
        return _unb64(text)
    if not scheme.binary:
        return _password_bytes(text)
    if scheme.fixed_size and len(text) == 2 * scheme.fixed_size:
        return _unhex(text)  # Dovecot recognises hex for unsalted digests
    return _unb64(text)


def _encode_data(raw: bytes, parsed: _Parsed) -> str:
    encoding = parsed.encoding or ("base64" if parsed.scheme.binary else None)
    if encoding == "hex":
        return raw.hex()
    if encoding == "base64":
        return _b64(raw)
    return raw.decode("utf-8", "surrogateescape")


def verify_password(stored: str, password: str) -> bool:
    """Return whether ``password`` matches the stored password ``stored``.

    Comparisons run in constant time.  Malformed data (bad base64, a truncated
    digest, a damaged bcrypt or Argon2 string, a SCRAM verifier with fewer than
    ``SCRAM_MIN_ITERATIONS``) never matches, and neither does an empty value,
    which marks a disabled account.

    >>> verify_password("{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=", "secret")
    True
    >>> verify_password("{plain}secret", "Secret"), verify_password("secret", "secret")
    (False, True)

    Bcrypt, Argon2 and SCRAM take milliseconds or more: call them from a worker
    thread in async code (:class:`PasswdFileAuthenticator` does).

    Raises:
        UnsupportedScheme: the scheme or encoding suffix is unknown, or its optional
            library (``bcrypt``, ``argon2-cffi``) is not installed.

    Cancellation:
        Synchronous, with no checkpoint.  In a worker thread of
        :func:`trio.to_thread.run_sync` a slow hash runs to completion even when
        the call is cancelled.
    """
    if len(stored) > MAX_STORED_PASSWORD:
        return False  # damage (see _malformed), not worth the time
    parsed = _parse(stored)
    _require(parsed)
    raw_password = _password_bytes(password)
    data = _decode_data(parsed)
    if raw_password is None or not data:
        return False
    return parsed.scheme.verify(data, raw_password)


def hash_password(
    password: str, scheme: str = DEFAULT_SCHEME, *, rounds: int | None = None
) -> str:
    """Return ``password`` stored with ``scheme``, as ``{SCHEME}data``.

    The scheme is case-insensitive and may carry an encoding suffix (``SHA256.HEX``,
    ``PLAIN.B64``).  Salts come from :mod:`secrets`.  A PLAIN password containing
    ``:``, CR or LF is written with the ``.B64`` suffix unless a suffix was given,
    since a passwd-file field cannot hold those characters as they are.

    The password is stored in its SASLprep form (RFC 4013; RFC 4616 section 2), so
    it matches however a client types it: ``café`` composed or decomposed, a ``P``
    full-width (U+FF30) or not.  One SASLprep refuses is stored as typed.
    (``doveadm pw`` hashes the password as typed; such entries still match it typed
    that way.)

    >>> hash_password("secret", "sha256")
    '{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols='
    >>> hash_password("a:b", "PLAIN")
    '{PLAIN.B64}YTpi'
    >>> verify_password(hash_password("secret"), "secret")
    True
    >>> hash_password("\uff30ass", "PLAIN")  # full-width P: stored as SASLprep'd
    '{PLAIN}Pass'

    Args:
        password: The password; it must not be empty.
        scheme: One of ``SUPPORTED_SCHEMES``, with an optional suffix.
        rounds: The work factor, like ``doveadm pw -r``: the bcrypt cost (4 to 31,
            default ``BCRYPT_ROUNDS``), the Argon2 passes (default
            ``ARGON2_TIME_COST``) or the SCRAM iterations (at least
            ``SCRAM_MIN_ITERATIONS``).  Other schemes take none.

    Raises:
        UnsupportedScheme: see :func:`verify_password`.
        ValueError: an empty or unencodable password, a BLF-CRYPT password over 72
            bytes, or ``rounds`` out of range or not applicable.

    Cancellation:
        Synchronous, with no checkpoint; BLF-CRYPT, ARGON2* and SCRAM-SHA-256 take
        milliseconds or more.  From trio, call it through
        :func:`trio.to_thread.run_sync`, which runs it to completion even when
        cancelled.
    """
    parsed = _parse("{" + scheme + "}")
    _require(parsed)
    password = _stored_form(password)  # after which U+FF1A is ":"
    if (
        parsed.name in _PLAIN_NAMES
        and parsed.encoding is None
        and not _PASSWD_FILE_SEPARATORS.isdisjoint(password)
    ):
        parsed = _parse("{" + parsed.label + ".B64}")
    raw = _password_bytes(password)
    if raw is None:
        raise ValueError("password cannot be encoded as UTF-8")
    if not raw:
        raise ValueError("password must not be empty")
    data = parsed.scheme.make(raw, rounds)
    return "{" + parsed.label + "}" + _encode_data(data, parsed)


def scram_sha256_credentials(stored: str, *, salt: bytes | None = None) -> ScramCredentials | None:
    """Return the SCRAM-SHA-256 verifier a stored password provides, if any.

    A ``{SCRAM-SHA-256}`` entry gives its own verifier.  A PLAIN entry gives one
    derived from its SASLprep'd plaintext (RFC 5802 section 2.2) with
    :data:`SCRAM_ITERATIONS` and ``salt``, by default a fresh random one (so two calls
    differ).  Other schemes, malformed and unknown ones give None, as does a
    plaintext SASLprep refuses.  PBKDF2 is slow: call this in a worker thread from
    async code.

    >>> scram_sha256_credentials("{PLAIN}secret").iterations
    4096
    >>> scram_sha256_credentials("{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=")
    """
    if len(stored) > MAX_STORED_PASSWORD:
        return None
    try:
        parsed = _parse(stored)
    except UnsupportedScheme:
        return None
    data = _decode_data(parsed)
    if not data:
        return None
    if parsed.name == "SCRAM-SHA-256":
        return _parse_scram(data)
    if parsed.name not in _PLAIN_NAMES:
        return None
    prepared = _scram_prepare(data, stored=True)
    if not prepared:
        return None
    return _scram_derive(
        prepared, secrets.token_bytes(SALT_SIZE) if salt is None else salt, SCRAM_ITERATIONS
    )


def _is_slow(stored: str) -> bool:
    try:
        return _parse(stored).scheme.slow
    except UnsupportedScheme:
        return False


def _scheme_problem(stored: str) -> UnsupportedScheme | None:
    try:
        _require(_parse(stored))
    except UnsupportedScheme as exc:
        return exc
    return None


def _malformed(stored: str) -> bool:
    """Whether a stored password of a supported scheme is damaged, so never matches.

    Bad base64 or hex, a digest of the wrong length, a truncated bcrypt or Argon2
    string, a SCRAM verifier below ``SCRAM_MIN_ITERATIONS``, anything longer than
    :data:`MAX_STORED_PASSWORD`.  An empty value (a disabled account) and an
    unsupported scheme (see :func:`_scheme_problem`) are not.
    """
    if len(stored) > MAX_STORED_PASSWORD:
        return True
    try:
        parsed = _parse(stored)
    except UnsupportedScheme:
        return False
    if not parsed.data:
        return False
    data = _decode_data(parsed)
    if data is None:
        return True
    check = parsed.scheme.well_formed
    return check is not None and not check(data)


def _scheme_key(stored: str) -> str:
    try:
        return _parse(stored).name
    except UnsupportedScheme:
        return "?"
