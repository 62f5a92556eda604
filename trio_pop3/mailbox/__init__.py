"""The mailbox layer: RFC 1939 over a small storage interface.

Implement :class:`MailStore` and :class:`Mailbox` (or use :class:`MaildirStore` or
:class:`MemoryStore`) and an :class:`Authenticator`, and :class:`MailboxHandler`
does the rest.
"""

from .._passwd import (
    PasswdEntry as PasswdEntry,
    PasswdFile as PasswdFile,
    PasswdFileAuthenticator as PasswdFileAuthenticator,
    PasswdFileError as PasswdFileError,
    UnsupportedScheme as UnsupportedScheme,
    hash_password as hash_password,
    verify_password as verify_password,
)
from ._base import (
    Authenticator as Authenticator,
    Mailbox as Mailbox,
    MailStore as MailStore,
    MessageInfo as MessageInfo,
    ScramCredentials as ScramCredentials,
)
from ._handler import (
    LoginDelay as LoginDelay,
    MailboxHandler as MailboxHandler,
    ascii_lowercase as ascii_lowercase,
)
from ._maildir import (
    MaildirMailbox as MaildirMailbox,
    MaildirStore as MaildirStore,
    deliver as deliver,
)
from ._memory import (
    MemoryAuthenticator as MemoryAuthenticator,
    MemoryMailbox as MemoryMailbox,
    MemoryStore as MemoryStore,
)

__all__ = [
    "Authenticator",
    "LoginDelay",
    "MailStore",
    "Mailbox",
    "MailboxHandler",
    "MaildirMailbox",
    "MaildirStore",
    "MemoryAuthenticator",
    "MemoryMailbox",
    "MemoryStore",
    "MessageInfo",
    "PasswdEntry",
    "PasswdFile",
    "PasswdFileAuthenticator",
    "PasswdFileError",
    "ScramCredentials",
    "UnsupportedScheme",
    "ascii_lowercase",
    "deliver",
    "hash_password",
    "verify_password",
]


from .._util import fixup_module_metadata as _fixup_module_metadata

_fixup_module_metadata(__name__, globals())
del _fixup_module_metadata
