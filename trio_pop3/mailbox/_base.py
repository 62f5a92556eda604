"""Re-export of the mailbox interfaces, which live in :mod:`trio_pop3._mailbox`.

They live outside this package so that modules the package imports (SASL) can use
them without an import cycle.
"""

from .._mailbox import (
    Authenticator as Authenticator,
    Mailbox as Mailbox,
    MailStore as MailStore,
    MessageInfo as MessageInfo,
    ScramCredentials as ScramCredentials,
)

__all__ = ["Authenticator", "MailStore", "Mailbox", "MessageInfo", "ScramCredentials"]
