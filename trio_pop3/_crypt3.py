"""crypt(3) from the system's libcrypt, for Dovecot's ``CRYPT`` password schemes.

Dovecot verifies ``{CRYPT}``, ``{SHA512-CRYPT}``, ``{SHA256-CRYPT}``,
``{MD5-CRYPT}`` and ``{DES-CRYPT}`` entries (and a passwd-file entry with no
``{...}`` prefix, since its default scheme is CRYPT) by calling the C library's
``crypt()``: a password matches when ``crypt(password, stored) == stored``.  Python's
own :mod:`crypt` module is deprecated and gone in 3.13, so this module calls the same
function through :mod:`ctypes`, which makes every hash the system can verify (on
Linux with libxcrypt: ``$6$``, ``$5$``, ``$1$``, ``$2b$``/``$2y$``, yescrypt ``$y$``
and DES) verify here exactly as in Dovecot on that system.

Only the reentrant forms are used, each call with its own work area:
``crypt_rn`` (libxcrypt, every current Linux distribution) or else ``crypt_r``
(older glibc, the BSDs).  ctypes releases the GIL during the call, so hashes verified
in worker threads run in parallel.  Where neither exists (macOS), :func:`available`
is False and the schemes are reported as unsupported.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import secrets
from collections.abc import Callable
from typing import Final

__all__ = ["available", "crypt", "make_setting", "random_salt"]

#: Library names tried in order: libxcrypt with the glibc-compatible ABI (Debian,
#: Ubuntu, Arch), libxcrypt without it (Fedora, RHEL 9), then whatever the platform
#: calls its crypt library, and finally the C library itself (the BSDs).
_LIBRARY_NAMES: Final = ("libcrypt.so.1", "libcrypt.so.2")

#: Size of the work area of ``crypt_rn``: libxcrypt's ``sizeof(struct crypt_data)``
#: (32768; a larger area is accepted, a smaller one refused).
_CRYPT_RN_DATA_SIZE: Final = 32768
#: Size of the work area of ``crypt_r``: at least ``sizeof(struct crypt_data)`` of
#: glibc's old libcrypt (131,232 octets) and of the BSDs (260), rounded up.
_CRYPT_R_DATA_SIZE: Final = 262144

#: The alphabet of crypt(3) salts.
_SALT_ALPHABET: Final = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

#: Salt length of generated ``$5$``/``$6$`` hashes: the longest the algorithm uses
#: (16 characters, 96 bits), as ``doveadm pw`` writes them.
SHA_CRYPT_SALT_LENGTH: Final = 16
#: Salt length of generated ``$1$`` (MD5-crypt) hashes: its maximum, 8 characters.
MD5_CRYPT_SALT_LENGTH: Final = 8
#: Rounds allowed in a ``$5$``/``$6$`` setting (the SHA-crypt specification clamps
#: to this range; 5000 is its default, and Dovecot's).
SHA_CRYPT_ROUNDS_RANGE: Final = range(1000, 999_999_999 + 1)

_Crypt = Callable[[bytes, bytes], "bytes | None"]


@functools.cache
def _load() -> _Crypt | None:
    """Find a reentrant crypt in the system's libraries, or None."""
    candidates: list[str | None] = list(_LIBRARY_NAMES)
    found = ctypes.util.find_library("crypt")
    if found is not None:
        candidates.append(found)
    candidates.append(None)  # the running program and its C library
    for name in candidates:
        try:
            library = ctypes.CDLL(name)
        except OSError:
            continue
        function = _bind(library)
        if function is not None:
            return function
    return None


def _bind(library: ctypes.CDLL) -> _Crypt | None:
    crypt_rn = getattr(library, "crypt_rn", None)
    if crypt_rn is not None:
        crypt_rn.restype = ctypes.c_char_p
        crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]

        def call_rn(phrase: bytes, setting: bytes) -> bytes | None:
            data = ctypes.create_string_buffer(_CRYPT_RN_DATA_SIZE)
            result: bytes | None = crypt_rn(phrase, setting, data, _CRYPT_RN_DATA_SIZE)
            return result

        return call_rn
    crypt_r = getattr(library, "crypt_r", None)
    if crypt_r is not None:
        crypt_r.restype = ctypes.c_char_p
        crypt_r.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]

        def call_r(phrase: bytes, setting: bytes) -> bytes | None:
            data = ctypes.create_string_buffer(_CRYPT_R_DATA_SIZE)
            result: bytes | None = crypt_r(phrase, setting, data)
            return result

        return call_r
    return None


def available() -> bool:
    """Whether the system has a reentrant crypt(3) (``crypt_rn`` or ``crypt_r``)."""
    return _load() is not None


def crypt(phrase: bytes, setting: bytes) -> bytes | None:
    """Return crypt(3) of ``phrase`` with ``setting`` (a salt, or a whole hash).

    None when the library refuses: an unknown or malformed setting, a phrase too long
    for it, or a phrase or setting with a NUL octet (which C would cut short, so that
    only the part before it counted).  libxcrypt's failure token (``*0`` or ``*1``)
    is None too, so the result never matches a stored hash by accident.

    Raises:
        RuntimeError: :func:`available` is False.

    Cancellation:
        Synchronous; SHA-crypt and bcrypt take milliseconds, so call it from a worker
        thread in async code.
    """
    function = _load()
    if function is None:
        raise RuntimeError("this system has no reentrant crypt(3)")
    if b"\0" in phrase or b"\0" in setting:
        return None
    result = function(phrase, setting)
    if not result or result.startswith(b"*"):
        return None
    return result


def make_setting(prefix: str, salt_length: int, rounds: int | None = None) -> bytes:
    """Return a fresh crypt(3) setting: ``prefix``, optional rounds, a random salt.

    >>> setting = make_setting("$6$", 16)
    >>> setting.startswith(b"$6$") and len(setting) == 3 + 16 + 1
    True
    >>> make_setting("$5$", 16, rounds=10000).startswith(b"$5$rounds=10000$")
    True
    """
    head = prefix if rounds is None else f"{prefix}rounds={rounds}$"
    return head.encode("ascii") + random_salt(salt_length) + b"$"


def random_salt(length: int) -> bytes:
    """Return ``length`` random characters of crypt(3)'s salt alphabet (``./0-9A-Za-z``)."""
    return "".join(secrets.choice(_SALT_ALPHABET) for _ in range(length)).encode("ascii")
