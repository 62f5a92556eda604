"""Checks on user names that become file names."""

from __future__ import annotations

__all__ = ["MAX_USERNAME_LENGTH", "is_safe_username"]

#: Longest user name accepted.  A name becomes one path component, and most file
#: systems cap a component at 255 octets.
MAX_USERNAME_LENGTH = 255


def is_safe_username(name: str) -> bool:
    """Return whether ``name`` can safely name a directory under a Maildir root.

    Rejects the empty name, ``.`` and ``..``, a leading dot (hidden files such as
    lock files live there), ``/`` and ``\\``, NUL and other control characters, and
    names longer than :data:`MAX_USERNAME_LENGTH` octets in UTF-8.

    >>> is_safe_username("alice"), is_safe_username("../etc")
    (True, False)
    """
    if not name or name.startswith("."):
        return False
    if len(name.encode("utf-8", "surrogatepass")) > MAX_USERNAME_LENGTH:
        return False
    return not any(ch in "/\\" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name)
