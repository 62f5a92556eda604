"""trio_pop3: write POP3 servers on trio.

The skeleton layer (:class:`POP3Server`, :class:`POP3Handler`) owns connections, the
state machine and the wire format; a subclass supplies commands as methods.  The
mailbox layer (:mod:`trio_pop3.mailbox`) implements all of RFC 1939 over a small
storage interface.
"""

from ._config import (
    DEFAULT_CLEANUP_TIMEOUT as DEFAULT_CLEANUP_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT as DEFAULT_IDLE_TIMEOUT,
    DEFAULT_SEND_TIMEOUT as DEFAULT_SEND_TIMEOUT,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT as DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    Limits as Limits,
)
from ._errors import (
    AuthenticationFailed as AuthenticationFailed,
    ClientDisconnected as ClientDisconnected,
    MailboxError as MailboxError,
    MailboxInUse as MailboxInUse,
    POP3Error as POP3Error,
    ResponseCode as ResponseCode,
)
from ._handler import POP3Handler as POP3Handler
from ._proto._state import STANDARD_COMMANDS as STANDARD_COMMANDS, State as State
from ._proto._wire import (
    MessageWriter as MessageWriter,
    WireSizeCounter as WireSizeCounter,
    wire_size as wire_size,
)
from ._sasl import (
    DEFAULT_MECHANISMS as DEFAULT_MECHANISMS,
    CramMD5Mechanism as CramMD5Mechanism,
    LoginMechanism as LoginMechanism,
    PlainMechanism as PlainMechanism,
    SASLCancelled as SASLCancelled,
    SASLDecodeError as SASLDecodeError,
    SASLExchange as SASLExchange,
    SASLMechanism as SASLMechanism,
    SASLProtocolError as SASLProtocolError,
    ScramSHA256Mechanism as ScramSHA256Mechanism,
    make_scram_credentials as make_scram_credentials,
)
from ._server import DEFAULT_GREETING as DEFAULT_GREETING, POP3Server as POP3Server
from ._session import SessionConfig as SessionConfig
from ._version import __version__ as __version__

__all__ = [
    "DEFAULT_CLEANUP_TIMEOUT",
    "DEFAULT_GREETING",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MECHANISMS",
    "DEFAULT_SEND_TIMEOUT",
    "DEFAULT_TLS_HANDSHAKE_TIMEOUT",
    "STANDARD_COMMANDS",
    "AuthenticationFailed",
    "ClientDisconnected",
    "CramMD5Mechanism",
    "Limits",
    "LoginMechanism",
    "MailboxError",
    "MailboxInUse",
    "MessageWriter",
    "POP3Error",
    "POP3Handler",
    "POP3Server",
    "PlainMechanism",
    "ResponseCode",
    "SASLCancelled",
    "SASLDecodeError",
    "SASLExchange",
    "SASLMechanism",
    "SASLProtocolError",
    "ScramSHA256Mechanism",
    "SessionConfig",
    "State",
    "WireSizeCounter",
    "__version__",
    "make_scram_credentials",
    "wire_size",
]


from ._util import fixup_module_metadata as _fixup_module_metadata

_fixup_module_metadata(__name__, globals())
del _fixup_module_metadata
