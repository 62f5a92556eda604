"""Tests of trio_pop3._passwd: password schemes, passwd-files, the authenticator."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, strategies as st
from pop3_support import Client, memory_session

from trio_pop3 import _crypt3, _passwd, _schemes
from trio_pop3._mailbox import check_offered_password
from trio_pop3._passwd import (
    ARGON2_MEMORY_COST,
    ARGON2_PARALLELISM,
    ARGON2_TIME_COST,
    BCRYPT_ROUNDS,
    DEFAULT_SCHEME,
    HASH_THREADS,
    LOGIN_CONTROL_FIELDS,
    RELOAD_CHECK_INTERVAL,
    SCRAM_ITERATIONS,
    SUPPORTED_SCHEMES,
    PasswdFile,
    PasswdFileAuthenticator,
    PasswdFileError,
    ScramCredentials,
    UnsupportedScheme,
    default_hash_limiter,
    hash_password,
    scram_sha256_credentials,
    verify_password,
)
from trio_pop3._proto._sasl import password_forms
from trio_pop3.mailbox import Authenticator, MailboxHandler, MemoryStore

# --------------------------------------------------------------------------------------
# Reference hashes.  All of these came from `doveadm pw -s <SCHEME> -p <password>`,
# Dovecot 2.3.19.1 (Debian 12); every one also passed `doveadm pw -t`.

NBSP_PASSWORD = "pass\u00a0word"  # SASLprep maps U+00A0 to a plain space

DOVEADM_VECTORS: list[tuple[str, str]] = [
    ("secret", "{PLAIN}secret"),
    ("secret", "{CLEARTEXT}secret"),
    ("secret", "{PLAIN.B64}c2VjcmV0"),
    ("secret", "{PLAIN.HEX}736563726574"),
    ("correct horse:battery", "{PLAIN.B64}Y29ycmVjdCBob3JzZTpiYXR0ZXJ5"),
    ("secret", "{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="),
    ("secret", "{SHA256.B64}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="),
    ("secret", "{SHA256.HEX}2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"),
    ("secret", "{SSHA256}xfE9LBhukWQLn/4UqZh5Vic8Zx2Gn0MrLoUB+XxsPer8FoGq"),
    ("secret", "{SSHA256.B64}lBNVuW9kdqXA/4VzT3f1KAPwWOZXkbICGJ+Rh6odV6hrlPMz"),
    (
        "secret",
        "{SSHA256.HEX}55c460a03e469fce185687af0a839212e9cba1fdd687e47787d595ef2d2e040d3ffb97ea",
    ),
    ("pässword", "{SSHA256}7d6DiPZYl9UwZRf0k5vcV+D6Lto2Qtf1ISArcB91S1c5f/B8"),
    (
        "secret",
        "{SHA512}vSsar3708Jvp9Szi2NWZZ02Bqp1qRCFpbcTZPdBhnWgs5WtNZKnvCXdhztmeD2cmW192CF5bDufKRpayrW/isg==",
    ),
    (
        "pässword",
        "{SHA512.HEX}285de271b49e00ef6819cf0abbf0315e97c25cba3616167c770efc526c648b4de11f4b00dc71fa"
        "ed33a312c7ba83690d3ed14aaaadf6b622aa48996ff07ec8a4",
    ),
    (
        "secret",
        "{SSHA512}/fHBWaUXVeh6eds3Lf0AY3EeMtb3lROCUmyATmcwwVTkQmENfC1oZv0XHZxzp7RROYhtUJg0nurnRmNb88XQ"
        "FuED+nY=",
    ),
    (
        "correct horse:battery",
        "{SSHA512}rcJxtha2l48Y56RV4Nn5RGFu+a8LnACUBqoPKra0LCJH7/jZ2dzfvaRpcyN0TDeA0pDTUTsSO3P3pkLd5hNi"
        "p4gIaRM=",
    ),
    (
        "secret",
        "{SSHA512.HEX}13f481145ceb9fd13f8e8ac1f92fda300f8f6eb8fe9793332905e5c821c2a23da9a4525f66f72e1c"
        "d7b312177b7869a3f19e4eaba27aae1111a365f6a1bc81d67047a5cf",
    ),
    ("secret", "{BLF-CRYPT}$2y$05$e2LvTOqjBvIHbqw6JZQs0eiDK2TJGboufyT8Rv7klxgXJu2hH3Dhi"),
    ("pässword", "{BLF-CRYPT}$2y$05$chYn.5slde3R6Rm4/fOeBuGNoA6snlXPA.8PLhp/QCdyeZUL1vk2O"),
    (
        "secret",
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$n7GgOx/gRBdBjw/I+FybBg"
        "$Vvwc+Oe41EKo0kTON5dul6HoGAq8wciuxzDfqCbA10c",
    ),
    (
        "secret",
        "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$nvyKf3eHQuPKorVeQ7z22A"
        "$MqCC3+7QEYDUwy+b07SVKPtqseMnOQThaEO+ItOFHJI",
    ),
    (
        "secret",
        "{SCRAM-SHA-256}4096,StZqbp+7IobpC4zblTDCFA==,aYfN/aMBaUUQBw1O5x8WET+z7hQuDqocFLfuy1YuN+w=,"
        "zGih6eWR0Hxq57a7MVotKcLCayvzHI14vznBUywLOlM=",
    ),
    (
        "pässword",
        "{SCRAM-SHA-256}4096,8TA3pRz8Cvmypy8yoLqM6w==,HKHP2wky0vUG8t5gpGtmRMOen4ChY+nnoY1y0YIlzkk=,"
        "oiLam25jqJucm3tHjEE9TwJ4eq8jyiMiHng82xplv6w=",
    ),
    (
        # Dovecot derives SCRAM keys from the password as is, without SASLprep.
        NBSP_PASSWORD,
        "{SCRAM-SHA-256}4096,kIpL3uPMpz7hMAo7fmQ3yQ==,VWBWoo0C2iH6qhhQYjUDM/KCMfZ8h2G30577JKQtHeU=,"
        "cqHp8UnZpjkpjvt5eMY1t4RA2Z2804H/kxAXQkZJgVc=",
    ),
]

DOVEADM_SCRAM = DOVEADM_VECTORS[-3][1]
DOVEADM_BCRYPT = DOVEADM_VECTORS[17][1]

#: Cheap work factors for hashes the tests make themselves (production defaults are
#: checked separately in test_production_work_factors).
TEST_ROUNDS: dict[str, int] = {"BLF-CRYPT": 4, "ARGON2ID": 1, "ARGON2I": 1}

FAST_SCHEMES = [
    "PLAIN",
    "CLEARTEXT",
    "PLAIN.B64",
    "PLAIN.HEX",
    "SHA256",
    "SHA256.HEX",
    "SSHA256",
    "SSHA256.B64",
    "SHA512",
    "SSHA512",
    "SSHA512.HEX",
]


def cheap_hash(password: str, scheme: str) -> str:
    """hash_password with a low work factor where the scheme has one."""
    return hash_password(password, scheme, rounds=TEST_ROUNDS.get(scheme.upper()))


def doveadm_entry(password: str, scheme: str) -> str:
    """An entry as ``doveadm pw`` makes it: of the password as typed, not SASLprep'd."""
    raw = password.encode("utf-8")
    if scheme == "PLAIN":
        return "{PLAIN.B64}" + base64.b64encode(raw).decode("ascii")
    assert scheme == "SSHA512"
    salt = os.urandom(16)
    return "{SSHA512}" + base64.b64encode(hashlib.sha512(raw + salt).digest() + salt).decode()


def logs_in(stored: str, typed: str) -> bool:
    """Whether ``typed`` matches ``stored`` the way the login side checks it."""
    return any(verify_password(stored, form) for form in password_forms(typed))


#: One password typed two ways that SASLprep maps to one form (RFC 4013): composed
#: and decomposed "café"; a full-width and an ASCII "P"; a ligature and two letters.
SAME_PASSWORD_TYPED_TWO_WAYS = [
    ("caf\u00e9", "cafe\u0301"),
    ("\uff30ass", "Pass"),
    ("\ufb01sh", "fish"),
]


@pytest.mark.rfc("4616", "2")
@pytest.mark.rfc("6856", "2.2")
@pytest.mark.parametrize(
    "scheme",
    [*FAST_SCHEMES, "BLF-CRYPT", "ARGON2ID", "ARGON2I", "SCRAM-SHA-256", "SHA512-CRYPT", "PBKDF2"],
)
@pytest.mark.parametrize(("one", "other"), SAME_PASSWORD_TYPED_TWO_WAYS)
def test_hash_password_stores_the_saslprep_form(scheme: str, one: str, other: str) -> None:
    # PLAIN-05 / UTF8-04: a stored password is prepared as an offered one is, so the
    # entry matches the password however either side typed it.
    for typed_when_hashed in (one, other):
        stored = cheap_hash(typed_when_hashed, scheme)
        for typed_at_login in (one, other):
            assert logs_in(stored, typed_at_login), (typed_when_hashed, typed_at_login)
        assert not logs_in(stored, "cafe")


@pytest.mark.rfc("4616", "2")
@pytest.mark.parametrize(("one", "other"), SAME_PASSWORD_TYPED_TWO_WAYS)
def test_plain_entry_matches_either_form(one: str, other: str) -> None:
    # A {PLAIN} entry written by hand or by Dovecot, in either form.
    for stored in (doveadm_entry(one, "PLAIN"), doveadm_entry(other, "PLAIN")):
        assert logs_in(stored, one)
        assert logs_in(stored, other)
        assert not logs_in(stored, one[:-1])


def test_hash_password_prepares_before_choosing_plain_b64() -> None:
    # SASLprep maps a full-width colon to ":", which a passwd-file field cannot hold.
    assert hash_password("a\uff1ab", "PLAIN") == "{PLAIN.B64}" + b64text("a:b")


def test_password_saslprep_refuses_is_hashed_as_typed() -> None:
    # A control character is prohibited by SASLprep: kept, and still matches as sent.
    for scheme in ("PLAIN", "SSHA512"):
        stored = hash_password("bell\x07", scheme)
        assert verify_password(stored, "bell\x07")
        assert not verify_password(stored, "bell")


# --------------------------------------------------------------------------------------
# verify_password / hash_password


@pytest.mark.parametrize(("password", "stored"), DOVEADM_VECTORS)
def test_doveadm_vectors_verify(password: str, stored: str) -> None:
    assert verify_password(stored, password)
    assert not verify_password(stored, password.upper())


def test_scheme_name_is_case_insensitive() -> None:
    assert verify_password("{sha256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=", "secret")
    assert verify_password("{Plain.b64}c2VjcmV0", "secret")
    assert verify_password("{cleartext}secret", "secret")
    assert hash_password("secret", "sha256.hex").startswith("{SHA256.HEX}2bb80d53")


def test_no_prefix_means_plain() -> None:
    assert verify_password("secret", "secret")
    assert not verify_password("secret", "Secret")
    # A "{" without "}" is no scheme prefix either.
    assert verify_password("{secret", "{secret")


def test_unsalted_digest_also_accepts_hex_without_suffix() -> None:
    # Dovecot recognises hex for fixed-size digests (doveadm pw -t agrees).
    hex_digest = hashlib.sha256(b"secret").hexdigest()
    assert verify_password("{SHA256}" + hex_digest, "secret")
    assert verify_password("{SHA256}" + hex_digest.upper(), "secret")
    assert verify_password("{SHA512}" + hashlib.sha512(b"secret").hexdigest(), "secret")


#: Schemes that verify but never make a hash (see test_des_crypt_is_verify_only).
VERIFY_ONLY = {"DES-CRYPT"}


@pytest.mark.parametrize(
    "scheme", [*sorted(SUPPORTED_SCHEMES - VERIFY_ONLY), "SHA512.HEX", "SSHA256.HEX"]
)
def test_round_trip(scheme: str) -> None:
    stored = cheap_hash("Tr0ub4dor&3 ünïcode", scheme)
    assert stored.startswith("{" + scheme + "}")
    assert verify_password(stored, "Tr0ub4dor&3 ünïcode")
    assert not verify_password(stored, "Tr0ub4dor&3 unicode")
    assert not verify_password(stored, "")


@pytest.mark.parametrize(
    "scheme",
    ["SSHA256", "SSHA512", "SCRAM-SHA-256", "BLF-CRYPT", "ARGON2ID", "SHA512-CRYPT", "PBKDF2"],
)
def test_salted_hashes_differ(scheme: str) -> None:
    assert cheap_hash("secret", scheme) != cheap_hash("secret", scheme)


def test_ssha_salt_is_16_bytes() -> None:
    raw = base64.b64decode(hash_password("secret", "SSHA256").removeprefix("{SSHA256}"))
    assert len(raw) == 32 + _passwd.SALT_SIZE == 48


def test_production_work_factors() -> None:
    assert hash_password("secret", "BLF-CRYPT").startswith(f"{{BLF-CRYPT}}$2b${BCRYPT_ROUNDS}$")
    params = f"m={ARGON2_MEMORY_COST},t={ARGON2_TIME_COST},p={ARGON2_PARALLELISM}$"
    assert hash_password("secret", "ARGON2ID").startswith("{ARGON2ID}$argon2id$v=19$" + params)
    assert hash_password("secret", "SCRAM-SHA-256").startswith(
        f"{{SCRAM-SHA-256}}{SCRAM_ITERATIONS},"
    )
    assert SCRAM_ITERATIONS >= 4096  # RFC 7677 section 4
    assert hash_password("secret").startswith("{" + DEFAULT_SCHEME + "}")


def test_rounds_are_used() -> None:
    assert hash_password("secret", "BLF-CRYPT", rounds=5).startswith("{BLF-CRYPT}$2b$05$")
    assert ",t=2,p=1$" in hash_password("secret", "ARGON2I", rounds=2)
    stored = hash_password("secret", "SCRAM-SHA-256", rounds=5000)
    assert stored.startswith("{SCRAM-SHA-256}5000,")
    assert verify_password(stored, "secret")


@pytest.mark.parametrize(
    ("password", "scheme", "rounds"),
    [
        ("", "SSHA512", None),
        ("", "PLAIN", None),
        ("secret", "SHA256", 5),
        ("secret", "PLAIN", 1),
        ("secret", "SCRAM-SHA-256", 4095),
        ("x" * 73, "BLF-CRYPT", 4),
        ("\ud800", "SHA256", None),  # a lone surrogate outside surrogateescape's range
    ],
)
def test_hash_password_refuses(password: str, scheme: str, rounds: int | None) -> None:
    with pytest.raises(ValueError):
        hash_password(password, scheme, rounds=rounds)


def test_bcrypt_uses_first_72_bytes_like_dovecot() -> None:
    stored = cheap_hash("a" * 72, "BLF-CRYPT")
    assert verify_password(stored, "a" * 80)
    assert not verify_password(stored, "a" * 71)


def test_argon2_variant_comes_from_the_string() -> None:
    # libsodium, and so Dovecot, accepts an argon2i string under {ARGON2ID} too.
    stored = cheap_hash("secret", "ARGON2I").replace("{ARGON2I}", "{ARGON2ID}")
    assert verify_password(stored, "secret")


def test_surrogateescape_password_stands_for_its_bytes() -> None:
    latin1 = b"p\xe4ssword".decode("utf-8", "surrogateescape")
    stored = "{SHA256}" + base64.b64encode(hashlib.sha256(b"p\xe4ssword").digest()).decode()
    assert verify_password(stored, latin1)
    assert verify_password(hash_password(latin1, "PLAIN"), latin1)
    assert not verify_password(stored, "\ud800")


MALFORMED = [
    "",
    "{PLAIN}",
    "{SHA256}",
    "{SHA256}not base64!",
    "{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols",  # bad padding
    "{SHA256}" + base64.b64encode(hashlib.sha256(b"secret").digest()[:31]).decode(),
    "{SHA256}" + base64.b64encode(hashlib.sha256(b"secret").digest() + b"x").decode(),
    "{SHA256.HEX}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=",
    "{SHA256.HEX}2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25",  # odd
    "{SHA256.HEX}2b b8",
    "{SSHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=",  # digest, no salt
    "{SSHA512}AAAA",
    "{SHA512}é",
    "{BLF-CRYPT}garbage",
    "{BLF-CRYPT}$2y$05$short",
    "{BLF-CRYPT}$2y$99$e2LvTOqjBvIHbqw6JZQs0eiDK2TJGboufyT8Rv7klxgXJu2hH3Dhi",
    "{BLF-CRYPT}$1$e2LvTOqjBvIHbqw6JZQs0eiDK2TJGboufyT8Rv7klxgXJu2hH3Dhi",
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$n7GgOx/gRBdBjw/I+FybBg",
    "{ARGON2ID}$argon2id$v=19$m=x,t=3,p=1$n7GgOx/gRBdBjw/I+FybBg$Vvwc",
    "{ARGON2ID}$argon2d$v=19$m=8,t=1,p=1$n7GgOx/gRBdBjw/I+FybBg$Vvwc",
    "{ARGON2I}not a phc string",
    "{SCRAM-SHA-256}",
    "{SCRAM-SHA-256}4096",
    "{SCRAM-SHA-256}4096,StZqbp+7IobpC4zblTDCFA==,aYfN",
    "{SCRAM-SHA-256}4096,StZqbp+7IobpC4zblTDCFA==,aYfN/aMBaUUQBw1O5x8WET+z7hQuDqocFLfuy1YuN+w=",
    "{SCRAM-SHA-256}x,StZqbp+7IobpC4zblTDCFA==,aYfN/aMBaUUQBw1O5x8WET+z7hQuDqocFLfuy1YuN+w=,"
    "zGih6eWR0Hxq57a7MVotKcLCayvzHI14vznBUywLOlM=",
    "{SCRAM-SHA-256}-4096,StZqbp+7IobpC4zblTDCFA==,aYfN/aMBaUUQBw1O5x8WET+z7hQuDqocFLfuy1YuN+w=,"
    "zGih6eWR0Hxq57a7MVotKcLCayvzHI14vznBUywLOlM=",
    "{SCRAM-SHA-256}4096,,aYfN/aMBaUUQBw1O5x8WET+z7hQuDqocFLfuy1YuN+w=,"
    "zGih6eWR0Hxq57a7MVotKcLCayvzHI14vznBUywLOlM=",
    "{SCRAM-SHA-256}4096,StZqbp+7IobpC4zblTDCFA==,aYfN/aMBaUUQBw1O5x8WET+z7hQuDqocFLfuy1YuN+w=,"
    "zGih6eWR0Hxq57a7MVotKcLCayvzHI14vznBUywLOlM=,extra",
    # Dovecot refuses fewer than 4096 iterations (RFC 7677): this is a correct
    # verifier for "secret" with i=1.
    "{SCRAM-SHA-256}1,MDEyMzQ1Njc4OWFiY2RlZg==,rb2i4FWE8CCi1HDhnBxhv8/uERf3QN6tiTjE4qSdliQ=,"
    "gWfVquF9Vgm4YA/KIyjllnL4Zn6B7unP+DKFnilYEAg=",
    # The doveadm verifier with its ServerKey damaged.
    DOVEADM_SCRAM[:-10] + "AAAAAAAAA=",
]


@pytest.mark.parametrize("stored", MALFORMED)
def test_malformed_stored_never_matches(stored: str) -> None:
    assert verify_password(stored, "secret") is False
    assert verify_password(stored, "") is False


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("{SHA1}5en6G6MezRroT3XKqkdPOmY/BfQ=", "'SHA1'"),
        ("{SMD5}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=", "'SMD5'"),
        ("{SHA256.FOO}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=", "'SHA256.FOO'"),
        ("{}secret", "''"),
    ],
)
def test_unknown_scheme_raises(stored: str, shown: str) -> None:
    with pytest.raises(UnsupportedScheme, match="unknown password scheme " + shown) as info:
        verify_password(stored, "secret")
    assert info.value.extra is None
    with pytest.raises(UnsupportedScheme):
        hash_password("secret", stored[1 : stored.index("}")])


@pytest.mark.parametrize(
    ("module", "scheme", "stored"),
    [
        ("bcrypt", "BLF-CRYPT", DOVEADM_BCRYPT),
        ("argon2", "ARGON2ID", DOVEADM_VECTORS[19][1]),
        ("argon2", "ARGON2I", DOVEADM_VECTORS[20][1]),
    ],
)
def test_missing_optional_library(
    monkeypatch: pytest.MonkeyPatch, module: str, scheme: str, stored: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes "import module" fail
    extra = "bcrypt" if module == "bcrypt" else "argon2"
    with pytest.raises(UnsupportedScheme, match=rf"pip install trio-pop3\[{extra}\]") as info:
        verify_password(stored, "secret")
    assert info.value.extra == extra
    assert info.value.scheme == scheme
    with pytest.raises(UnsupportedScheme, match=rf"trio-pop3\[{extra}\]"):
        hash_password("secret", scheme)
    # Even a malformed value says what is missing rather than just not matching.
    with pytest.raises(UnsupportedScheme):
        verify_password("{" + scheme + "}garbage", "secret")


def test_unsupported_scheme_is_a_value_error() -> None:
    assert issubclass(UnsupportedScheme, ValueError)
    assert issubclass(PasswdFileError, ValueError)


# --------------------------------------------------------------------------------------
# crypt(3) schemes and PBKDF2, verified as Dovecot verifies them

needs_libcrypt = pytest.mark.skipif(not _crypt3.available(), reason="no crypt(3) here")

#: From ``doveadm pw -s <SCHEME> -p <password>`` (Dovecot 2.3.19.1, Debian 12); a
#: bare hash is how /etc/shadow, ``openssl passwd -6`` and older Dovecot setups
#: write them, and Dovecot's passwd-file reads it as CRYPT, its default scheme.
DOVEADM_CRYPT_VECTORS: list[tuple[str, str]] = [
    (
        "secret",
        "{SHA512-CRYPT}$6$LlR1hMZw.OGW4X0O$Swehevo9sip32Nlr8a2YprMtfo03gDnqiGxbh6fEHJVMhMnlO"
        ".41qWN.6hvl1gyXmjT4CdExSulSfPFmqsVWC1",
    ),
    ("secret", "{SHA256-CRYPT}$5$QBAZXyD04OJnmBm2$0.LzSrD2s2euaIRGmOdNzCKln132s9d6OJCVoT71iS6"),
    ("secret", "{MD5-CRYPT}$1$HKGfhV4V$2eWW2LHfZofNmPj/HZ2eT1"),
    ("secret", "{DES-CRYPT}e4QvoNNBFLuwQ"),
    ("secret", "{CRYPT}$2y$05$F7kVPnoneYFrdGjHMkjF3eFyg9h6sZYOcL9N8sSynmhVmWOr/8lE6"),
    (
        "secret",
        "$6$LlR1hMZw.OGW4X0O$Swehevo9sip32Nlr8a2YprMtfo03gDnqiGxbh6fEHJVMhMnlO"
        ".41qWN.6hvl1gyXmjT4CdExSulSfPFmqsVWC1",
    ),
    (
        "secret",
        "{sha512-crypt}$6$rounds=7000$s5qUHZv.CapsW7PJ$E0s2zia5qPfoigz2NSsEPrQ4yOGf2ww9E2bKo2j"
        "HbhFwzQq61gyzAZKvkDufMG9f6NiBIrVU9vw2jfEW/as0k1",
    ),
    (
        "pässword",
        "{SHA512-CRYPT}$6$U9YhxuU6A6JK4kjd$s07snCkLs3PLSH2waX0H/dpTK7E/B01Asda9776dhy0zjJ79vf83o"
        "OM89bpaDu0aFw13tzaOaG03TsVWkDKN20",
    ),
]

#: ``doveadm pw -s PBKDF2 -p secret``: PBKDF2 needs no crypt(3).
DOVEADM_PBKDF2 = "{PBKDF2}$1$zKpcKh4L1I4SdXjG$5000$b43564b74d767e5a46b1e7321dbb7a1027c68e67"


@needs_libcrypt
@pytest.mark.parametrize(("password", "stored"), DOVEADM_CRYPT_VECTORS)
def test_doveadm_crypt_vectors_verify(password: str, stored: str) -> None:
    assert verify_password(stored, password)
    assert not verify_password(stored, password.upper())
    assert not verify_password(stored, stored)  # the hash itself is no password
    assert not verify_password(stored, "")


def test_doveadm_pbkdf2_vector_verifies() -> None:
    assert verify_password(DOVEADM_PBKDF2, "secret")
    assert not verify_password(DOVEADM_PBKDF2, "Secret")


@pytest.mark.parametrize(
    "stored",
    [
        "{PBKDF2}",
        "{PBKDF2}$1$zKpcKh4L1I4SdXjG$5000$",
        "{PBKDF2}$1$$5000$b43564b74d767e5a46b1e7321dbb7a1027c68e67",
        "{PBKDF2}$2$zKpcKh4L1I4SdXjG$5000$b43564b74d767e5a46b1e7321dbb7a1027c68e67",
        "{PBKDF2}$1$zKpcKh4L1I4SdXjG$0$b43564b74d767e5a46b1e7321dbb7a1027c68e67",
        "{PBKDF2}$1$zKpcKh4L1I4SdXjG$-5000$b43564b74d767e5a46b1e7321dbb7a1027c68e67",
        "{PBKDF2}$1$zKpcKh4L1I4SdXjG$5000$b43564b74d767e5a46b1e7321dbb7a1027c68e6",
        "{PBKDF2}$1$zKpcKh4L1I4SdXjG$5000$b43564b74d767e5a46b1e7321dbb7a1027c68e67$",
    ],
)
def test_malformed_pbkdf2_never_matches(stored: str) -> None:
    assert verify_password(stored, "secret") is False


@needs_libcrypt
@pytest.mark.parametrize(
    "stored",
    ["{SHA512-CRYPT}garbage", "{SHA512-CRYPT}$6$", "{CRYPT}*0", "{CRYPT}*1", "$6$salt$hash"],
)
def test_malformed_crypt_never_matches(stored: str) -> None:
    # libxcrypt answers a setting it cannot use with "*0" or "*1": never a match.
    for password in ("secret", "", stored, "*0", "*1"):
        assert verify_password(stored, password) is False


@needs_libcrypt
def test_crypt_password_with_nul_never_matches() -> None:
    # C would see only the part before the NUL, so "abc\0anything" would match "abc".
    stored = hash_password("abc", "SHA512-CRYPT")
    assert verify_password(stored, "abc")
    assert not verify_password(stored, "abc\x00anything")


@needs_libcrypt
@pytest.mark.parametrize(
    ("scheme", "prefix"),
    [("SHA512-CRYPT", "$6$"), ("CRYPT", "$6$"), ("SHA256-CRYPT", "$5$"), ("MD5-CRYPT", "$1$")],
)
def test_crypt_hashes_made_here(scheme: str, prefix: str) -> None:
    stored = hash_password("secret", scheme)
    data = stored.removeprefix("{" + scheme + "}")
    assert data.startswith(prefix)
    salt = data[len(prefix) :].split("$")[0]
    assert len(salt) == (8 if scheme == "MD5-CRYPT" else 16)
    # As the C library itself computes it (what Dovecot compares against).
    assert _crypt3.crypt(b"secret", data.encode()) == data.encode()


@needs_libcrypt
def test_sha_crypt_rounds() -> None:
    stored = hash_password("secret", "SHA256-CRYPT", rounds=6000)
    assert stored.startswith("{SHA256-CRYPT}$5$rounds=6000$")
    assert verify_password(stored, "secret")
    for rounds in (999, 1_000_000_000):
        with pytest.raises(ValueError, match="rounds must be 1000 to 999999999"):
            hash_password("secret", "SHA512-CRYPT", rounds=rounds)
    with pytest.raises(ValueError, match="takes no rounds"):
        hash_password("secret", "MD5-CRYPT", rounds=5000)


def test_pbkdf2_made_here() -> None:
    stored = hash_password("secret", "PBKDF2")
    _, _, salt, rounds, key = stored.split("$")
    assert (len(salt), rounds, len(key)) == (16, "5000", 40)
    assert key == hashlib.pbkdf2_hmac("sha1", b"secret", salt.encode(), 5000).hex()
    assert hash_password("secret", "PBKDF2", rounds=7).split("$")[3] == "7"
    with pytest.raises(ValueError, match="PBKDF2 rounds"):
        hash_password("secret", "PBKDF2", rounds=0)


@needs_libcrypt
def test_des_crypt_is_verify_only() -> None:
    # DES reads 8 characters of a password: never make one, but read Dovecot's.
    with pytest.raises(ValueError, match="DES-CRYPT reads only 8 characters"):
        hash_password("secret", "DES-CRYPT")


@pytest.mark.skipif(shutil.which("doveadm") is None, reason="needs Dovecot's doveadm")
@pytest.mark.parametrize(
    "scheme", ["SHA512-CRYPT", "SHA256-CRYPT", "MD5-CRYPT", "CRYPT", "PBKDF2"]
)
def test_doveadm_verifies_hashes_made_here(scheme: str) -> None:
    stored = hash_password("pässword", scheme)
    result = subprocess.run(
        ["doveadm", "pw", "-t", stored, "-p", "pässword"], capture_output=True, check=False
    )
    assert result.returncode == 0, result
    assert b"(verified)" in result.stdout


def test_crypt_schemes_need_libcrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_crypt3, "available", lambda: False)
    bare = DOVEADM_CRYPT_VECTORS[5][1]
    for stored in (DOVEADM_CRYPT_VECTORS[0][1], bare):
        with pytest.raises(UnsupportedScheme, match=r"needs the system's crypt\(3\)") as info:
            verify_password(stored, "secret")
        assert info.value.extra is None
    with pytest.raises(UnsupportedScheme, match="SHA256-CRYPT needs"):
        hash_password("secret", "SHA256-CRYPT")
    assert verify_password(DOVEADM_PBKDF2, "secret")  # hashlib only


@needs_libcrypt
async def test_crypt_entries_log_in(tmp_path: Path) -> None:
    # Hashes in worker threads, like every slow scheme: USER/PASS, PLAIN and LOGIN.
    path = tmp_path / "passwd"
    path.write_text(
        f"alice:{DOVEADM_CRYPT_VECTORS[0][1]}\nbob:{DOVEADM_CRYPT_VECTORS[5][1]}\n"
        f"carol:{DOVEADM_PBKDF2}\n",
        encoding="utf-8",
    )
    for method in LOGIN_METHODS:
        for user in ("alice", "bob", "carol"):
            async with memory_session(passwd_handler(path)) as s:
                reply = await log_in(s.client, method, user, "secret")
                assert reply.startswith("+OK Logged in"), (method, user, reply)
            async with memory_session(passwd_handler(path)) as s:
                reply = await log_in(s.client, method, user, "Secret")
                assert reply == "-ERR [AUTH] Authentication failed.", (method, user, reply)


#: Damaged entries of supported schemes (as the operations audit wrote them): never a
#: match, and reported when the file is loaded.
DAMAGED = [
    "{SSHA512}!!!notbase64",
    "{SHA256}" + base64.b64encode(hashlib.sha256(b"secret").digest()[:31]).decode(),
    "{SSHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=",  # a digest and no salt
    "{PLAIN.B64}!!",
    "{SHA256.HEX}2bb8zz",
    "{BLF-CRYPT}$2y$05$abc",
    "{ARGON2ID}$argon2id$garbage",
    "{SCRAM-SHA-256}4096,StZqbp+7IobpC4zblTDCFA==,aYfN",
    "{PBKDF2}$1$zKpcKh4L1I4SdXjG$5000$b4356",
]


@pytest.mark.parametrize("stored", DAMAGED)
def test_damaged_entries_are_malformed(stored: str) -> None:
    assert _schemes._malformed(stored)
    assert verify_password(stored, "secret") is False


@pytest.mark.parametrize(
    "stored",
    [
        *(stored for _, stored in DOVEADM_VECTORS),
        *(cheap_hash("secret", scheme) for scheme in sorted(SUPPORTED_SCHEMES - VERIFY_ONLY)),
        DOVEADM_PBKDF2,
        "",  # a disabled account
        "{SSHA512}",  # likewise
        "{SHA1}5en6G6MezRroT3XKqkdPOmY/BfQ=",  # unsupported: reported as that instead
        "secret",
    ],
)
def test_sound_entries_are_not_malformed(stored: str) -> None:
    assert not _schemes._malformed(stored)


async def test_damaged_entries_are_reported_at_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Else their users' logins would only read as password guessing (fail2ban's line).
    path = tmp_path / "passwd"
    good = hash_password("right", "SSHA512")
    path.write_text(
        f"alice:{good}\nbob:{{SSHA512}}!!!notbase64\ncarol:{{BLF-CRYPT}}$2y$05$abc\n"
        f"dave:{{SSHA512}}AAAA\n"
    )
    with caplog.at_level(logging.WARNING, logger="trio_pop3._passwd"):
        auth = PasswdFileAuthenticator(path)
    messages = [r.getMessage() for r in caplog.records]
    assert any("line 2: damaged SSHA512 password data (2 users)" in m for m in messages)
    assert any("line 3: damaged BLF-CRYPT password data (1 users)" in m for m in messages)
    assert not any("!!!" in m or "$2y$" in m for m in messages)  # never the data
    assert await auth.check_password("alice", "right")
    assert not await auth.check_password("bob", "!!!notbase64")


# --------------------------------------------------------------------------------------
# SCRAM-SHA-256 credentials


def test_scram_derivation_matches_rfc_7677_example() -> None:
    # RFC 7677 section 3: user "user", password "pencil".  The server signature
    # computed from our ServerKey must equal the one in the RFC, and the client proof
    # in the RFC must check against our StoredKey.
    salt = "W22ZaJ0SNY7soEsUEjb6gQ=="
    stored = hash_password("pencil", "SCRAM-SHA-256")
    creds = scram_sha256_credentials("{PLAIN}pencil", salt=base64.b64decode(salt))
    assert creds is not None
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = (
        f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s={salt},i=4096,c=biws,r={nonce}"
    ).encode()
    signature = hmac.digest(creds.server_key, auth_message, "sha256")
    assert base64.b64encode(signature) == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_signature = hmac.digest(creds.stored_key, auth_message, "sha256")
    client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == creds.stored_key
    assert verify_password(stored, "pencil")


def test_scram_credentials_from_a_scram_entry() -> None:
    creds = scram_sha256_credentials(DOVEADM_SCRAM)
    assert creds == ScramCredentials(
        iterations=4096,
        salt=base64.b64decode("StZqbp+7IobpC4zblTDCFA=="),
        stored_key=base64.b64decode("aYfN/aMBaUUQBw1O5x8WET+z7hQuDqocFLfuy1YuN+w="),
        server_key=base64.b64decode("zGih6eWR0Hxq57a7MVotKcLCayvzHI14vznBUywLOlM="),
    )
    # A verifier passes through unchanged, whatever salt is asked for.
    assert scram_sha256_credentials(DOVEADM_SCRAM, salt=b"ignored") == creds


def test_scram_credentials_from_a_plain_entry() -> None:
    salt = base64.b64decode("StZqbp+7IobpC4zblTDCFA==")
    # The same password and salt give the doveadm verifier's keys.
    assert scram_sha256_credentials("{PLAIN}secret", salt=salt) == scram_sha256_credentials(
        DOVEADM_SCRAM
    )
    assert scram_sha256_credentials("{PLAIN.B64}c2VjcmV0", salt=salt) == (
        scram_sha256_credentials(DOVEADM_SCRAM)
    )
    first, second = (scram_sha256_credentials("secret") for _ in range(2))
    assert first is not None
    assert second is not None
    assert first.iterations == SCRAM_ITERATIONS
    assert first.salt != second.salt  # a fresh salt each time


@pytest.mark.parametrize(
    "stored",
    [
        "{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=",
        DOVEADM_BCRYPT,
        "{SCRAM-SHA-256}garbage",
        "{PLAIN}",
        "",
        "{NOSUCH}x",
        "{PLAIN}bad\x00",  # SASLprep prohibits NUL, so no SCRAM client could log in
    ],
)
def test_scram_credentials_none(stored: str) -> None:
    assert scram_sha256_credentials(stored) is None


def test_scram_saslprep() -> None:
    # Entries we make are SASLprep'd (RFC 5802), as the SASL layer's are; verify
    # accepts the password either way, so Dovecot's unprepared entries keep working.
    stored = hash_password(NBSP_PASSWORD, "SCRAM-SHA-256")
    creds = scram_sha256_credentials(stored)
    assert creds is not None
    assert scram_sha256_credentials("{PLAIN}pass word", salt=creds.salt) == creds
    assert verify_password(stored, NBSP_PASSWORD)
    assert verify_password(stored, "pass word")
    assert not verify_password(stored, "password")


# --------------------------------------------------------------------------------------
# Hypothesis properties


@given(password=st.text(min_size=1), scheme=st.sampled_from(FAST_SCHEMES), other=st.text())
def test_fast_schemes_round_trip(password: str, scheme: str, other: str) -> None:
    stored = hash_password(password, scheme)
    assert logs_in(stored, password)
    if logs_in(stored, other):  # only when the two share a form (RFC 4013)
        assert set(password_forms(other)) & {_schemes._stored_form(password), password}


@given(
    scheme=st.sampled_from([*sorted(SUPPORTED_SCHEMES), "SHA256.HEX", "SSHA512.B64", ""]),
    data=st.text(),
    password=st.text(),
)
def test_verify_never_crashes(scheme: str, data: str, password: str) -> None:
    stored = "{" + scheme + "}" + data if scheme else data
    assert verify_password(stored, password) in (True, False)
    result = scram_sha256_credentials(stored)
    assert result is None or isinstance(result, ScramCredentials)


_user_names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters=":#/\\", exclude_categories=["Cc"]),
    min_size=1,
    max_size=40,
).filter(lambda name: not name.startswith("."))
_passwords = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters=":\n\r"),
    min_size=1,
)


@given(users=st.dictionaries(_user_names, _passwords, max_size=10))
def test_passwd_file_round_trip(users: dict[str, str]) -> None:
    text = "# generated\n" + "".join(
        f"{u}:{{PLAIN}}{p}:1000:1000::/home/x::\n" for u, p in users.items()
    )
    passwd = PasswdFile.parse(text)
    assert dict(passwd) == {u: "{PLAIN}" + p for u, p in users.items()}


# --------------------------------------------------------------------------------------
# passwd-file parsing

SAMPLE_FILE = """\
# Users of the test server.

alice:{PLAIN}wonderland
bob:{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=:1000:1000:Bob B:/home/bob:/bin/false:\
userdb_mail=maildir:~/Maildir allow_nets=192.168.0.0/24 nodelay
   # an indented comment
carol:{PLAIN}x:1001:1001::/home/carol::nodelay:ignored:too
dave:
erin:{PLAIN.B64}Y29ycmVjdCBob3JzZTpiYXR0ZXJ5\r
frank:secret:1002
"""


def test_parse_sample() -> None:
    passwd = PasswdFile.parse(SAMPLE_FILE, path="/etc/pop3.passwd")
    assert list(passwd) == ["alice", "bob", "carol", "dave", "erin", "frank"]
    assert len(passwd) == 6
    assert passwd.path == "/etc/pop3.passwd"
    assert passwd.lookup("alice") == "{PLAIN}wonderland"
    assert passwd["bob"] == "{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="
    assert passwd.lookup("dave") == ""
    assert passwd.lookup("erin") == "{PLAIN.B64}Y29ycmVjdCBob3JzZTpiYXR0ZXJ5"  # CRLF
    assert passwd.lookup("frank") == "secret"
    assert passwd.lookup("mallory") is None
    assert "alice" in passwd
    assert "Alice" not in passwd  # user names are compared exactly
    assert passwd.get("nobody") is None

    bob = passwd.entry("bob")
    assert bob is not None
    assert (bob.uid, bob.gid, bob.gecos, bob.home, bob.shell) == (
        "1000",
        "1000",
        "Bob B",
        "/home/bob",
        "/bin/false",
    )
    assert bob.extra_fields == (
        "userdb_mail=maildir:~/Maildir",
        "allow_nets=192.168.0.0/24",
        "nodelay",
    )
    assert bob.line == 4
    assert "K7gN" not in repr(bob)  # the password stays out of reprs
    carol = passwd.entry("carol")
    assert carol is not None
    assert carol.extra_fields == ("nodelay:ignored:too",)
    frank = passwd.entry("frank")
    assert frank is not None
    assert (frank.uid, frank.gid, frank.home, frank.extra_fields) == ("1002", "", "", ())
    assert [e.user for e in passwd.entries()] == list(passwd)
    assert passwd.entry("nobody") is None
    assert "6 users" in repr(passwd)


def test_password_field_ends_at_colon() -> None:
    passwd = PasswdFile.parse("alice:{PLAIN}pass:word\n")
    assert passwd.lookup("alice") == "{PLAIN}pass"
    entry = passwd.entry("alice")
    assert entry is not None
    assert entry.uid == "word"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice:{PLAIN}x\nbob\n", "line 2: no ':' after the user name"),
        ("\n\n:{PLAIN}secret\n", "line 3: empty user name"),
        ("../etc:{PLAIN}x\n", "line 1: unsafe user name '../etc'"),
        ("a/b:{PLAIN}x\n", "line 1: unsafe user name 'a/b'"),
        (".hidden:{PLAIN}x\n", "line 1: unsafe user name '.hidden'"),
        ("tab\tbed:{PLAIN}x\n", "line 1: unsafe user name 'tab\\tbed'"),
        ("a:{PLAIN}x\n# c\na:{PLAIN}y\n", "line 3: user 'a' already on line 1"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(PasswdFileError) as info:
        PasswdFile.parse(text, path="/x/passwd")
    assert str(info.value) == f"passwd-file /x/passwd {message}"
    assert "\n" not in str(info.value)


def test_parse_error_does_not_show_the_password() -> None:
    with pytest.raises(PasswdFileError) as info:
        PasswdFile.parse("../x:{PLAIN}hunter2\n")
    assert "hunter2" not in str(info.value)


def test_load(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text(SAMPLE_FILE, encoding="utf-8")
    passwd = PasswdFile.load(path)
    assert passwd.path == str(path)
    assert passwd.lookup("alice") == "{PLAIN}wonderland"


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(PasswdFileError) as info:
        PasswdFile.load(path)
    assert str(info.value) == f"cannot read passwd-file {path}: No such file or directory"
    with pytest.raises(PasswdFileError, match=r"cannot read passwd-file .*: Is a directory"):
        PasswdFile.load(tmp_path)


def test_load_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_bytes(b"alice:{PLAIN}x\n\nbroken line\n")
    with pytest.raises(PasswdFileError, match=f"^passwd-file {path} line 3: no ':'"):
        PasswdFile.load(path)


def test_load_leaves_out_lines_that_are_not_utf8(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An old Dovecot file may hold a Latin-1 password (Dovecot compares bytes): that
    # user can never log in here (commands are UTF-8), but the others must.
    path = tmp_path / "passwd"
    path.write_bytes(b"alice:{PLAIN}x\nb\xffb:{PLAIN}y\ndave:{PLAIN}caf\xe9\ncarol:{PLAIN}z\n")
    passwd = PasswdFile.load(path)
    assert sorted(passwd) == ["alice", "carol"]
    assert passwd.entry("carol") is not None
    assert passwd.entry("carol").line == 4  # type: ignore[union-attr]
    messages = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert messages == [
        f"passwd-file {path} line {n}: not valid UTF-8; left out, so its user cannot log in"
        for n in (2, 3)
    ]
    assert "caf" not in caplog.text  # never the password


# --------------------------------------------------------------------------------------
# PasswdFileAuthenticator


@pytest.fixture
def passwd_path(tmp_path: Path) -> Path:
    path = tmp_path / "passwd"
    lines = [
        f"alice:{cheap_hash('wonderland', 'BLF-CRYPT')}",
        f"bob:{cheap_hash('builder', 'BLF-CRYPT')}:1000:1000::/home/bob",
        "carol:{PLAIN}cleartext",
        f"dave:{cheap_hash('argon', 'ARGON2ID')}",
        f"erin:{DOVEADM_SCRAM}",
        "frank:{PLAIN.B64}Y29ycmVjdCBob3JzZTpiYXR0ZXJ5",
        "grace::1003:1003::/home/grace",
        "heidi:{SSHA512}" + hash_password("ssha", "SSHA512").removeprefix("{SSHA512}"),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def test_authenticator_checks_passwords(passwd_path: Path) -> None:
    auth = PasswdFileAuthenticator(passwd_path)
    assert isinstance(auth, Authenticator)
    assert auth.path == str(passwd_path)
    cases = [
        ("alice", "wonderland", True),
        ("alice", "builder", False),
        ("bob", "builder", True),
        ("carol", "cleartext", True),
        ("carol", "Cleartext", False),
        ("dave", "argon", True),
        ("dave", "argon2", False),
        ("erin", "secret", True),
        ("erin", "secret ", False),
        ("frank", "correct horse:battery", True),
        ("heidi", "ssha", True),
        ("heidi", "SSHA", False),
        ("grace", "", False),  # empty password field: account disabled
        ("grace", "anything", False),
        ("mallory", "wonderland", False),
        ("", "", False),
        ("../alice", "wonderland", False),
    ]
    for user, password, expected in cases:
        assert await auth.check_password(user, password) is expected, (user, password)


def verified_entries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the stored entry of every verify_password call the authenticator makes."""
    seen: list[str] = []
    real_verify = _passwd.verify_password

    def spy(stored: str, password: str) -> bool:
        seen.append(stored)
        return real_verify(stored, password)

    monkeypatch.setattr(_passwd, "verify_password", spy)
    return seen


async def test_unknown_user_checks_a_dummy_of_the_usual_scheme(
    passwd_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = PasswdFileAuthenticator(passwd_path)
    seen = verified_entries(monkeypatch)
    # The dummy is alice's entry (BLF-CRYPT is the most common scheme)...
    assert not await auth.check_password("mallory", "wonderland")
    assert not await auth.check_password("grace", "wonderland")
    assert seen == [auth.passwd["alice"]] * 2
    # ...and it goes through the worker-thread path, like a real bcrypt login.
    limiter = trio.CapacityLimiter(1)
    auth = PasswdFileAuthenticator(passwd_path, limiter=limiter, reload=False)
    async with trio.open_nursery() as nursery:
        await limiter.acquire()
        nursery.start_soon(auth.check_password, "mallory", "x")
        await trio.testing.wait_all_tasks_blocked()
        assert limiter.statistics().tasks_waiting == 1
        limiter.release()


async def test_empty_file_uses_a_default_scheme_dummy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "passwd"
    path.write_text("# nobody yet\n")
    auth = PasswdFileAuthenticator(path)
    seen: list[str] = []

    def always_true(stored: str, password: str) -> bool:
        seen.append(stored)
        return True

    monkeypatch.setattr(_passwd, "verify_password", always_true)
    assert not await auth.check_password("anyone", "x")  # even if the dummy "matched"
    assert len(seen) == 1
    assert seen[0].startswith("{" + DEFAULT_SCHEME + "}")


async def test_slow_schemes_run_under_the_limiter(passwd_path: Path) -> None:
    limiter = trio.CapacityLimiter(1)
    # No reload checks: a task waiting on stat() in a thread also counts as blocked.
    auth = PasswdFileAuthenticator(passwd_path, limiter=limiter, reload=False)
    results: dict[str, bool] = {}

    async def check(user: str, password: str) -> None:
        results[user] = await auth.check_password(user, password)

    async with trio.open_nursery() as nursery:
        await limiter.acquire()
        for user, password in [("alice", "wonderland"), ("dave", "argon"), ("erin", "secret")]:
            nursery.start_soon(check, user, password)
        await trio.testing.wait_all_tasks_blocked()
        assert limiter.statistics().tasks_waiting == 3
        # Fast schemes do not wait for a thread.
        assert await auth.check_password("carol", "cleartext")
        assert await auth.check_password("heidi", "ssha")
        assert results == {}
        limiter.release()
    assert results == {"alice": True, "dave": True, "erin": True}


async def test_default_limiter_is_shared_per_run() -> None:
    limiter = default_hash_limiter()
    assert limiter is default_hash_limiter()
    assert limiter.total_tokens == HASH_THREADS


async def test_get_secret(passwd_path: Path) -> None:
    auth = PasswdFileAuthenticator(passwd_path)
    assert await auth.get_secret("carol") == "cleartext"
    assert await auth.get_secret("frank") == "correct horse:battery"
    for user in ("alice", "dave", "erin", "grace", "heidi", "mallory"):
        assert await auth.get_secret(user) is None


async def test_scram_credentials(passwd_path: Path) -> None:
    auth = PasswdFileAuthenticator(passwd_path)
    assert await auth.get_scram_credentials("erin") == scram_sha256_credentials(DOVEADM_SCRAM)
    first = await auth.get_scram_credentials("carol")
    assert first is not None
    # A PLAIN user's salt is the same every time, as a stored verifier's is.
    assert await auth.scram_credentials("carol") == first
    assert first == scram_sha256_credentials("{PLAIN}cleartext", salt=first.salt)
    frank = await auth.get_scram_credentials("frank")
    assert frank is not None
    assert frank.salt != first.salt
    for user in ("alice", "dave", "grace", "heidi", "mallory"):
        assert await auth.get_scram_credentials(user) is None


class CountingDerivations:
    """Counts the SCRAM verifiers the authenticator derives (PBKDF2 for PLAIN)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sources: list[str] = []
        self._real = _passwd.scram_sha256_credentials
        monkeypatch.setattr(_passwd, "scram_sha256_credentials", self)

    def __call__(self, stored: str, *, salt: bytes | None = None) -> object:
        self.sources.append(stored)
        return self._real(stored, salt=salt)


@pytest.mark.rfc("5802", "9")
async def test_scram_of_an_unknown_user_costs_what_a_plain_user_costs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SCRAM-11: a PLAIN entry's verifier is derived (PBKDF2, about 3 ms); an
    # unknown user answered at once (0.3 ms) told users apart.  Now an unknown user
    # derives one for a made-up password, and both are remembered, so repeated
    # exchanges (an AUTH loop cancelled with "*") cost nothing either.
    path = tmp_path / "passwd"
    path.write_text("carol:{PLAIN}cleartext\n")
    derived = CountingDerivations(monkeypatch)
    auth = PasswdFileAuthenticator(path, reload=False)
    carol = await auth.get_scram_credentials("carol")
    assert carol is not None
    assert await auth.get_scram_credentials("nobody") is None
    assert len(derived.sources) == 2
    assert derived.sources[0] == "{PLAIN}cleartext"
    assert derived.sources[1].startswith("{PLAIN}")
    assert derived.sources[1] != "{PLAIN}cleartext"
    assert await auth.get_scram_credentials("carol") == carol
    assert await auth.get_scram_credentials("nobody") is None
    assert len(derived.sources) == 2  # remembered


async def test_scram_unknown_user_without_plain_entries_derives_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stored verifiers cost a parse: so does an unknown user, then.
    path = tmp_path / "passwd"
    path.write_text(f"erin:{DOVEADM_SCRAM}\n")
    derived = CountingDerivations(monkeypatch)
    auth = PasswdFileAuthenticator(path, reload=False)
    assert await auth.get_scram_credentials("erin") is not None
    assert await auth.get_scram_credentials("nobody") is None
    assert derived.sources == [DOVEADM_SCRAM]


async def test_scram_cache_follows_a_password_change(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "passwd"
    path.write_text("carol:{PLAIN}one\n")
    auth = PasswdFileAuthenticator(path)
    first = await auth.get_scram_credentials("carol")
    path.write_text("carol:{PLAIN}two-and-longer\n")
    mock_clock.jump(10)
    second = await auth.get_scram_credentials("carol")
    assert first is not None
    assert second == scram_sha256_credentials("{PLAIN}two-and-longer", salt=first.salt)
    assert second != first


async def test_reload_on_change(tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    path = tmp_path / "passwd"
    path.write_text("alice:{PLAIN}one\n")
    auth = PasswdFileAuthenticator(path)
    assert await auth.check_password("alice", "one")

    path.write_text("alice:{PLAIN}two\nbob:{PLAIN}new\n")
    # Checked at most once per interval: the old contents still answer.
    assert await auth.check_password("alice", "one")
    mock_clock.jump(RELOAD_CHECK_INTERVAL)
    assert await auth.check_password("alice", "two")
    assert not await auth.check_password("alice", "one")
    assert await auth.get_secret("bob") == "new"

    # An atomic replace by a file of the same size is noticed too.
    replacement = tmp_path / "passwd.new"
    replacement.write_text("alice:{PLAIN}TWO\nbob:{PLAIN}new\n")
    os.replace(replacement, path)
    mock_clock.jump(RELOAD_CHECK_INTERVAL)
    assert await auth.check_password("alice", "TWO")


async def test_reload_checks_entries_off_the_event_loop(
    tmp_path: Path, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checking each entry (schemes, damaged data, the dummy) costs about as much as
    # parsing it: in the event loop, 100,000 users stalled every session for 1.7 s.
    path = tmp_path / "passwd"
    path.write_text("alice:{PLAIN}one\n")
    auth = PasswdFileAuthenticator(path)
    install = PasswdFileAuthenticator._install
    threads = []

    def recording(self: PasswdFileAuthenticator, passwd: PasswdFile) -> object:
        threads.append(threading.current_thread())
        return install(self, passwd)

    monkeypatch.setattr(PasswdFileAuthenticator, "_install", recording)
    path.write_text("alice:{PLAIN}two\n")
    mock_clock.jump(RELOAD_CHECK_INTERVAL)
    assert await auth.check_password("alice", "two")
    assert len(threads) == 1
    assert threads[0] is not threading.main_thread()


async def test_failed_reload_keeps_old_contents(
    tmp_path: Path, mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "passwd"
    path.write_text("alice:{PLAIN}one\n")
    auth = PasswdFileAuthenticator(path)

    path.write_text("alice:{PLAIN}two\nbroken\n")
    mock_clock.jump(RELOAD_CHECK_INTERVAL)
    with caplog.at_level(logging.ERROR, logger="trio_pop3._passwd"):
        assert await auth.check_password("alice", "one")
        mock_clock.jump(RELOAD_CHECK_INTERVAL)
        assert await auth.check_password("alice", "one")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"passwd-file {path} line 2: no ':' after the user name; still using the previous contents"
    ]

    path.unlink()
    mock_clock.jump(RELOAD_CHECK_INTERVAL)
    assert await auth.check_password("alice", "one")

    path.write_text("alice:{PLAIN}three\n")
    mock_clock.jump(RELOAD_CHECK_INTERVAL)
    assert await auth.check_password("alice", "three")


async def test_reload_disabled(tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    path = tmp_path / "passwd"
    path.write_text("alice:{PLAIN}one\n")
    auth = PasswdFileAuthenticator(path, reload=False)
    path.write_text("alice:{PLAIN}two\n")
    mock_clock.jump(10 * RELOAD_CHECK_INTERVAL)
    assert await auth.check_password("alice", "one")


def test_constructor_raises_for_a_bad_file(tmp_path: Path) -> None:
    with pytest.raises(PasswdFileError, match="cannot read passwd-file"):
        PasswdFileAuthenticator(tmp_path / "missing")
    (tmp_path / "bad").write_text("alice\n")
    with pytest.raises(PasswdFileError, match="line 1"):
        PasswdFileAuthenticator(tmp_path / "bad")


async def test_unsupported_schemes_are_logged_and_fail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "bcrypt", None)
    path = tmp_path / "passwd"
    path.write_text(
        f"alice:{DOVEADM_BCRYPT}\nbob:{DOVEADM_BCRYPT}\n"
        "carol:{SHA1}5en6G6MezRroT3XKqkdPOmY/BfQ=\ndave:{PLAIN}ok\n"
        "erin:$argon2id$v=19$m=65536,t=3,p=1$n7GgOx/gRBdBjw/I+FybBg$Vvwc\n"
    )
    with caplog.at_level(logging.WARNING, logger="trio_pop3._passwd"):
        auth = PasswdFileAuthenticator(path)
        assert not await auth.check_password("alice", "secret")
        assert not await auth.check_password("carol", "secret")
        assert not await auth.check_password("mallory", "secret")
        assert await auth.check_password("dave", "ok")
    messages = [r.getMessage() for r in caplog.records]
    assert any("line 1" in m and "trio-pop3[bcrypt]" in m and "2 users" in m for m in messages)
    assert any("line 3" in m and "'SHA1'" in m for m in messages)
    # A bare hash is Dovecot's default CRYPT scheme, never a PLAIN password, and an
    # Argon2 hash is one CRYPT cannot verify.
    assert any("line 5" in m and "CRYPT needs {ARGON2ID}" in m for m in messages)
    assert not await auth.check_password(
        "erin", "$argon2id$v=19$m=65536,t=3,p=1$n7GgOx/gRBdBjw/I+FybBg$Vvwc"
    )
    assert any("user 'alice'" in m for m in messages)
    assert not any("mallory" in m for m in messages)
    assert not any("secret" in m for m in messages)


# --------------------------------------------------------------------------------------
# Logging in with a password SASLprep changes

#: Passwords whose SASLprep form (RFC 4013) differs from what was typed: NFKC folds
#: "²" to "2" and "ﬁ" to "fi", U+00A0 maps to a space; and one SASLprep refuses
#: (right-to-left text ending in a digit, RFC 3454 section 6).  Dovecot stores all of
#: them as typed, and so do hash_password and ``trio-pop3 hash-password``.
SASLPREP_CHANGES = ["pass\u00b2", "a\u00a0b", "\ufb01sh", "\u05e9\u05dc\u05d5\u05dd1"]

LOGIN_METHODS = ["USER/PASS", "AUTH PLAIN", "AUTH LOGIN"]


def b64text(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


async def log_in(client: Client, method: str, user: str, password: str) -> str:
    """Log in with ``method``; return the last reply."""
    if method == "USER/PASS":
        assert (await client.command(f"USER {user}")).startswith("+OK")
        return await client.command(f"PASS {password}")
    if method == "AUTH PLAIN":
        return await client.command("AUTH PLAIN " + b64text(f"\x00{user}\x00{password}"))
    assert await client.command("AUTH LOGIN " + b64text(user)) == "+ " + b64text("Password:")
    return await client.command(b64text(password))


def passwd_handler(path: Path) -> Callable[[], MailboxHandler]:
    users = PasswdFile.load(path)
    store = MemoryStore({user: [b"Subject: x\r\n\r\nhi\r\n"] for user in users})
    return functools.partial(MailboxHandler, store, PasswdFileAuthenticator(path))


@pytest.mark.rfc("4616", "2")
@pytest.mark.parametrize("method", LOGIN_METHODS)
@pytest.mark.parametrize("scheme", ["SSHA512", "PLAIN"])
@pytest.mark.parametrize("password", SASLPREP_CHANGES)
async def test_password_changed_by_saslprep_logs_in(
    tmp_path: Path, password: str, scheme: str, method: str
) -> None:
    # PLAIN-05: RFC 4616 section 2 lets a server skip SASLprep to interoperate with an
    # external system.  Dovecot stores passwords as typed ("typed"), a SASLprep-aware
    # tool (hash_password) stores the prepared form ("prepped"): both log in with the
    # typed password.
    path = tmp_path / "passwd"
    lines = [f"typed:{doveadm_entry(password, scheme)}"]
    prepared = password_forms(password)[1:]
    lines += [f"prepped:{hash_password(form, scheme)}" for form in prepared]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for user in ["typed", "prepped"][: len(lines)]:
        async with memory_session(passwd_handler(path)) as s:
            reply = await log_in(s.client, method, user, password)
            assert reply.startswith("+OK Logged in"), (user, reply)
        async with memory_session(passwd_handler(path)) as s:
            assert (await log_in(s.client, method, user, "pass")).startswith("-ERR [AUTH]")


async def test_second_form_costs_the_same_for_unknown_users(
    passwd_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SASLprep form is a second check_password call, with its own dummy for an
    # unknown user: a failure verifies as often for mallory as for alice.
    auth = PasswdFileAuthenticator(passwd_path, reload=False)
    seen = verified_entries(monkeypatch)
    alice = auth.passwd["alice"]
    assert not await check_offered_password(auth, "alice", "wonder\u00b2")
    assert seen == [alice, alice]
    seen.clear()
    assert not await check_offered_password(auth, "mallory", "wonder\u00b2")
    assert seen == [alice, alice]  # alice's entry is the dummy (BLF-CRYPT, most common)
    seen.clear()
    # A password SASLprep leaves alone costs one check, as it always did.
    assert not await check_offered_password(auth, "mallory", "wonderland")
    assert seen == [alice]


# --------------------------------------------------------------------------------------
# Extra fields that control logins

LOGIN_CONTROL_FILE = """\
nl:{PLAIN}Secr3t-pw::::::nologin allow_nets=192.0.2.1/32
nets:{PLAIN}Secr3t-pw::::::allow_nets=127.0.0.0/8,::1
px:{PLAIN}Secr3t-pw::::::proxy=y host=192.0.2.2 pass=proxy-Secr3t
ref:{PLAIN}Secr3t-pw::::::host=192.0.2.3
ren:{PLAIN}Secr3t-pw::::::user=other
nopw:::::::nopassword
shout:{PLAIN}Secr3t-pw::::::NoLogin=Y
ok:{PLAIN}Secr3t-pw:1000:1000::/home/ok::userdb_mail=maildir:~/Maildir nodelay k5principals=x
"""

REFUSED = {
    "nl": "nologin, allow_nets",
    "nets": "allow_nets",
    "px": "proxy, host",
    "ref": "host",
    "ren": "user",
    "nopw": "nopassword",
    "shout": "nologin",
}


def test_login_controls_of_an_entry() -> None:
    passwd = PasswdFile.parse(LOGIN_CONTROL_FILE)
    controls = {e.user: ", ".join(e.login_controls) for e in passwd.entries()}
    assert controls == {**REFUSED, "ok": ""}
    assert {"nologin", "allow_nets", "proxy", "host", "user"} <= LOGIN_CONTROL_FIELDS


async def test_login_control_fields_refuse_the_user(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Dovecot keeps these users out (or sends them elsewhere); a server that cannot
    # apply the rule must not let them in either.
    path = tmp_path / "passwd"
    path.write_text(LOGIN_CONTROL_FILE, encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="trio_pop3._passwd"):
        auth = PasswdFileAuthenticator(path)
        for user in REFUSED:
            assert not await auth.check_password(user, "Secr3t-pw"), user
            assert await auth.get_secret(user) is None, user
            assert await auth.get_scram_credentials(user) is None, user
        assert await auth.check_password("ok", "Secr3t-pw")
        assert await auth.get_secret("ok") == "Secr3t-pw"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    # One error per user at load, naming the fields but no value and no password.
    assert len(errors) == len(REFUSED)
    for (user, fields), error in zip(REFUSED.items(), errors, strict=True):
        assert f"user {user!r} has extra field {fields}," in error
        assert "cannot log in" in error
    assert not any("Secr3t" in m or "192.0.2" in m for m in caplog.messages)


async def test_nologin_user_is_refused_on_the_wire(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text(LOGIN_CONTROL_FILE, encoding="utf-8")
    for method in LOGIN_METHODS:
        async with memory_session(passwd_handler(path)) as s:
            reply = await log_in(s.client, method, "nl", "Secr3t-pw")
            assert reply == "-ERR [AUTH] Authentication failed.", (method, reply)
        async with memory_session(passwd_handler(path)) as s:
            reply = await log_in(s.client, method, "ok", "Secr3t-pw")
            assert reply.startswith("+OK Logged in"), (method, reply)


async def test_an_overlong_stored_password_is_damage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An audit's 1 MB {PLAIN} entry stalled every session 3 s per login (SASLprep of
    # the stored secret on the event loop); as the only entry, it became the dummy
    # every unknown user was checked against and hung the server.  Past
    # MAX_STORED_PASSWORD a field is damage: reported at load, never matched,
    # never the dummy, never prepared.
    huge = "{PLAIN}" + "x" * 1_000_000
    path = tmp_path / "passwd"
    path.write_text(f"mallory:{huge}\nalice:{{PLAIN}}secret\n")

    def no_saslprep(text: str, *args: object, **kwargs: object) -> str:
        assert len(text) < 10_000, "SASLprep of the huge entry"
        return real(text, *args, **kwargs)  # type: ignore[arg-type]

    real = _schemes.saslprep  # type: ignore[attr-defined]
    monkeypatch.setattr(_schemes, "saslprep", no_saslprep)
    auth = PasswdFileAuthenticator(path, reload=False)
    assert "damaged PLAIN password data (1 users)" in caplog.text
    assert auth._loaded.dummy != huge
    assert not await auth.check_password("mallory", "x" * 1_000_000)
    assert not await auth.check_password("nobody", "x")
    assert await auth.check_password("alice", "secret")
    assert await auth.get_secret("mallory") is None
    assert await auth.get_scram_credentials("mallory") is None
    assert not verify_password(huge, "x")
    only = tmp_path / "only"
    only.write_text(f"mallory:{huge}\n")
    assert PasswdFileAuthenticator(only, reload=False)._loaded.dummy != huge
