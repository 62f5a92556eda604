"""Tests of the SASL mechanisms against an in-memory exchange and authenticator."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pytest

from trio_pop3._errors import AuthenticationFailed, POP3Error, ResponseCode
from trio_pop3._proto._sasl import SASLProtocolError, cram_md5_digest, saslprep
from trio_pop3._sasl import (
    DEFAULT_MECHANISMS,
    CramMD5Mechanism,
    LoginMechanism,
    PlainMechanism,
    SASLCancelled,
    SASLDecodeError,
    SASLExchange,
    SASLMechanism,
    ScramSHA256Mechanism,
    decode_client_initial_response,
    decode_client_response,
    format_challenge,
    make_scram_credentials,
)
from trio_pop3.mailbox import MemoryAuthenticator
from trio_pop3.mailbox._base import Authenticator, ScramCredentials

USERS = {"alice": "secret", "dave": "two words", "jos\u00e9": "p\u00e4ss"}
SCRAM_ITERATIONS = 4096


def b64(data: bytes | str) -> bytes:
    return base64.b64encode(data.encode() if isinstance(data, str) else data)


class FakeAuthenticator(Authenticator):
    """Knows USERS; offers secrets and SCRAM credentials unless told not to."""

    def __init__(self, *, secrets: bool = True) -> None:
        self.secrets = secrets
        self.checked: list[tuple[str, str]] = []
        self.scram = {
            user: make_scram_credentials(password, iterations=SCRAM_ITERATIONS)
            for user, password in USERS.items()
        }

    async def check_password(self, user: str, password: str) -> bool:
        self.checked.append((user, password))
        return USERS.get(user) == password

    async def get_secret(self, user: str) -> str | None:
        return USERS.get(user) if self.secrets else None

    async def get_scram_credentials(self, user: str) -> ScramCredentials | None:
        return self.scram.get(user)


@dataclass
class FakeExchange:
    """A scripted client: the handler's side of AUTH, over lists instead of a socket.

    ``replies`` are raw client lines, or callables that compute the line from the
    decoded challenge (for CRAM-MD5 and SCRAM).  ``sent`` records the challenge lines.
    """

    authenticator: Authenticator
    replies: list[bytes | Callable[[bytes], bytes]] = field(default_factory=list)
    initial_response: bytes | None = None
    secure: bool = True
    hostname: str = "pop.example.org"
    sent: list[bytes] = field(default_factory=list)

    async def challenge(self, data: bytes) -> bytes:
        self.sent.append(format_challenge(data))
        assert self.replies, f"unexpected challenge {data!r}"
        reply = self.replies.pop(0)
        line = reply(data) if callable(reply) else reply
        return decode_client_response(line)


def exchange(
    *replies: bytes | Callable[[bytes], bytes],
    ir: bytes | None = None,
    authenticator: Authenticator | None = None,
) -> FakeExchange:
    return FakeExchange(authenticator or FakeAuthenticator(), list(replies), ir)


async def run(mechanism: SASLMechanism, ex: FakeExchange) -> str:
    user = await mechanism.authenticate(ex)
    assert not ex.replies, "the mechanism did not read every client line"
    return user


def test_fake_exchange_satisfies_protocol() -> None:
    ex: SASLExchange = exchange()
    assert ex.secure


# --- handler helpers ------------------------------------------------------------------


def test_decode_client_response() -> None:
    # RFC 5034 §4 (SASL-05, SASL-10, SASL-12)
    assert decode_client_response(b"") == b""
    assert decode_client_response("YWxpY2U=") == b"alice"
    with pytest.raises(SASLCancelled) as cancelled:
        decode_client_response(b"*")
    assert cancelled.value.text == "Authentication aborted by client."
    assert cancelled.value.code is None
    with pytest.raises(SASLDecodeError) as bad:
        decode_client_response(b"=AAA")
    assert bad.value.text == "Invalid base64 data in continued response"
    assert bad.value.code is ResponseCode.AUTH
    assert isinstance(bad.value, SASLProtocolError)
    assert isinstance(bad.value, POP3Error)
    with pytest.raises(SASLDecodeError):
        decode_client_response("caf\u00e9")


def test_decode_client_initial_response() -> None:
    # RFC 5034 §4 (SASL-06, SASL-10)
    assert decode_client_initial_response("=") == b""
    assert decode_client_initial_response(b"YWxpY2U=") == b"alice"
    for argument in ("!!!notbase64", "*", "", b"AAA=BBB"):
        with pytest.raises(SASLDecodeError, match="initial response"):
            decode_client_initial_response(argument)


def test_format_challenge() -> None:
    # RFC 5034 §4 (SASL-04)
    assert format_challenge(b"") == b"+ "
    assert format_challenge(b"Password:") == b"+ UGFzc3dvcmQ6"


# --- PLAIN ----------------------------------------------------------------------------


async def test_plain_with_initial_response() -> None:
    # Dovecot transcript A6
    ex = exchange(ir=base64.b64decode("AGFsaWNlAHNlY3JldA=="))
    assert await run(PlainMechanism(), ex) == "alice"
    assert ex.sent == []


async def test_plain_without_initial_response_sends_empty_challenge() -> None:
    # RFC 5034 §4 (SASL-07), Dovecot transcript A7; authzid = authcid (PLAIN-04)
    ex = exchange(b"YWxpY2UAYWxpY2UAc2VjcmV0")
    assert await run(PlainMechanism(), ex) == "alice"
    assert ex.sent == [b"+ "]


@pytest.mark.parametrize(
    "message",
    [
        b"\x00alice\x00wrong",  # wrong password
        b"\x00nosuchuser\x00secret",  # unknown user
        b"bob\x00alice\x00secret",  # RFC 4616 §2 (PLAIN-04), Dovecot transcript D4
        b"",  # AUTH PLAIN = (Dovecot transcript A8)
        b"alice\x00secret",  # RFC 4616 §2 (PLAIN-02)
        b"\x00alice\x00secret\x07",  # RFC 4013 §2.3 (PLAIN-05): prohibited
        b"\x00\xc2\xad\x00secret",  # authcid prepares to "" (PLAIN-05)
        b"\xc2\xad\x00alice\x00secret",  # authzid prepares to "" (SASL-13)
    ],
)
async def test_plain_failures_look_alike(message: bytes) -> None:
    with pytest.raises(AuthenticationFailed) as failure:
        await run(PlainMechanism(), exchange(ir=message))
    assert failure.value.text == "Authentication failed."
    assert failure.value.code is ResponseCode.AUTH


@pytest.mark.rfc("4616", "2")
async def test_plain_saslprep() -> None:
    # RFC 4616 §2 (PLAIN-05): decomposed user name, NBSP in the password.  The user name
    # is prepared; the password is checked as sent, then SASLprep'd.
    authenticator = FakeAuthenticator()
    message = "\x00jose\u0301\x00p\u00e4ss".encode()
    assert await run(PlainMechanism(), exchange(ir=message, authenticator=authenticator)) == (
        "jos\u00e9"
    )
    message = "\x00dave\x00two\u00a0words".encode()
    assert await run(PlainMechanism(), exchange(ir=message, authenticator=authenticator)) == (
        "dave"
    )
    assert authenticator.checked == [
        ("jos\u00e9", "p\u00e4ss"),
        ("dave", "two\u00a0words"),
        ("dave", "two words"),
    ]


@pytest.mark.rfc("4616", "2")
async def test_plain_password_with_a_prohibited_character_is_refused_unchecked() -> None:
    # UTF8-05 (RFC 6856 §2.2), PLAIN-05: SASLprep prohibits U+0007 (RFC 4013 §2.3),
    # so the password is refused without asking the authenticator.
    authenticator = FakeAuthenticator()
    with pytest.raises(AuthenticationFailed):
        await run(PlainMechanism(), exchange(ir=b"\x00alice\x00\x07", authenticator=authenticator))
    assert authenticator.checked == []


async def test_plain_password_that_only_breaks_the_bidi_rule_is_checked_as_sent() -> None:
    # PLAIN-05: RTL text ending in a digit has no SASLprep form (RFC 3454 §6), but
    # RFC 6856 §2.2 asks to reject only prohibited characters: checked as sent.
    authenticator = FakeAuthenticator()
    password = "\u05e9\u05dc\u05d5\u05dd1"
    with pytest.raises(AuthenticationFailed):
        await run(
            PlainMechanism(),
            exchange(ir=b"\x00alice\x00" + password.encode(), authenticator=authenticator),
        )
    assert authenticator.checked == [("alice", password)]


async def test_plain_cancel() -> None:
    # RFC 5034 §4 (SASL-05), Dovecot transcript A8
    with pytest.raises(SASLCancelled):
        await run(PlainMechanism(), exchange(b"*"))


async def test_plain_bad_base64_response() -> None:
    # RFC 5034 §4 (SASL-10), Dovecot transcript A8
    with pytest.raises(SASLDecodeError, match="continued response"):
        await run(PlainMechanism(), exchange(b"=AAA"))


async def test_plain_authorize_hook_for_master_users() -> None:
    class MasterPlain(PlainMechanism):
        async def authorize(self, exchange: SASLExchange, authcid: str, authzid: str) -> bool:
            return authcid == "dave" or authzid == authcid

    ex = exchange(ir=b"alice\x00dave\x00two words")
    assert await run(MasterPlain(), ex) == "alice"
    with pytest.raises(AuthenticationFailed):
        await run(MasterPlain(), exchange(ir=b"dave\x00alice\x00secret"))


# --- LOGIN ----------------------------------------------------------------------------


async def test_login() -> None:
    # Dovecot transcript A9a
    ex = exchange(b"YWxpY2U=", b"c2VjcmV0")
    assert await run(LoginMechanism(), ex) == "alice"
    assert ex.sent == [b"+ VXNlcm5hbWU6", b"+ UGFzc3dvcmQ6"]


async def test_login_initial_response_is_the_user_name() -> None:
    # Dovecot transcript A9b
    ex = exchange(b"c2VjcmV0", ir=b"alice")
    assert await run(LoginMechanism(), ex) == "alice"
    assert ex.sent == [b"+ UGFzc3dvcmQ6"]


@pytest.mark.parametrize(
    ("user", "password"),
    [
        (b"alice", b"wrong"),
        (b"nosuchuser", b"secret"),
        (b"", b"secret"),
        (b"alice", b""),
        (b"\xff", b"secret"),
        (b"alice", b"\x07"),
    ],
)
async def test_login_failures_look_alike(user: bytes, password: bytes) -> None:
    ex = exchange(b64(user), b64(password))
    with pytest.raises(AuthenticationFailed) as failure:
        await run(LoginMechanism(), ex)
    assert failure.value.text == "Authentication failed."
    # Always asks for both, so a client learns nothing before the password.
    assert ex.sent == [b"+ VXNlcm5hbWU6", b"+ UGFzc3dvcmQ6"]


async def test_login_cancel_at_password() -> None:
    with pytest.raises(SASLCancelled):
        await run(LoginMechanism(), exchange(b"*", ir=b"alice"))


# --- CRAM-MD5 -------------------------------------------------------------------------


def cram_reply(user: str, secret: str, *, upper: bool = False) -> Callable[[bytes], bytes]:
    def reply(challenge: bytes) -> bytes:
        digest = hmac.new(secret.encode(), challenge, hashlib.md5).hexdigest()
        return b64(f"{user} {digest.upper() if upper else digest}")

    return reply


@pytest.mark.parametrize("upper", [False, True])
async def test_cram_md5(upper: bool) -> None:
    # RFC 2195 §2 (CRAM-01, CRAM-02)
    ex = exchange(cram_reply("alice", "secret", upper=upper))
    assert await run(CramMD5Mechanism(), ex) == "alice"
    [line] = ex.sent
    assert line.startswith(b"+ ")
    assert re.fullmatch(rb"<\d+\.\d+@pop\.example\.org>", base64.b64decode(line[2:]))


async def test_cram_md5_initial_response_rejected() -> None:
    # RFC 5034 §4 (SASL-08), RFC 2195 (CRAM-03); Dovecot transcript A9d does otherwise
    assert CramMD5Mechanism.initial_response is False
    ex = exchange(ir=b"alice")
    with pytest.raises(POP3Error) as error:
        await run(CramMD5Mechanism(), ex)
    assert not isinstance(error.value, AuthenticationFailed)
    assert ex.sent == []
    with pytest.raises(POP3Error):
        await run(CramMD5Mechanism(), exchange(ir=b""))


@pytest.mark.parametrize(
    "reply",
    [
        cram_reply("alice", "wrong"),
        cram_reply("nosuchuser", "secret"),
        lambda challenge: b64("alice"),
        lambda challenge: b64("alice " + cram_md5_digest("secret", challenge + b"x")),
    ],
)
async def test_cram_md5_failures_look_alike(reply: Callable[[bytes], bytes]) -> None:
    with pytest.raises(AuthenticationFailed) as failure:
        await run(CramMD5Mechanism(), exchange(reply))
    assert failure.value.text == "Authentication failed."


async def test_cram_md5_without_secrets_fails() -> None:
    # Authenticator.get_secret returns None: nobody can use CRAM-MD5.
    ex = exchange(cram_reply("alice", "secret"), authenticator=FakeAuthenticator(secrets=False))
    with pytest.raises(AuthenticationFailed):
        await run(CramMD5Mechanism(), ex)


async def test_cram_md5_cancel() -> None:
    with pytest.raises(SASLCancelled):
        await run(CramMD5Mechanism(), exchange(b"*"))


# --- SCRAM-SHA-256 --------------------------------------------------------------------


def scram_escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    """A SCRAM-SHA-256 client written from the formulas of RFC 5802 section 3."""

    def __init__(
        self, user: str, password: str, *, authzid: str = "", flag: str = "n", nonce: str = "cN"
    ) -> None:
        self.password = password
        authzid_field = f"a={scram_escape(authzid)}" if authzid else ""
        self.gs2_header = f"{flag},{authzid_field},"
        self.nonce = nonce
        self.bare = f"n={scram_escape(user)},r={nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return (self.gs2_header + self.bare).encode()

    def final(self, server_first_octets: bytes) -> bytes:
        server_first = server_first_octets.decode()
        attributes = dict(part.split("=", 1) for part in server_first.split(","))
        assert attributes["r"].startswith(self.nonce)
        assert len(attributes["r"]) > len(self.nonce)
        salted = hashlib.pbkdf2_hmac(
            "sha256",
            self.password.encode(),
            base64.b64decode(attributes["s"]),
            int(attributes["i"]),
        )
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        cbind = base64.b64encode(self.gs2_header.encode()).decode()
        without_proof = f"c={cbind},r={attributes['r']}"
        auth_message = f"{self.bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def check_final(self, server_final: bytes) -> bytes:
        assert server_final == b"v=" + base64.b64encode(self.server_signature)
        return b""

    def script(self, *, ir: bool = True, ack: bytes = b"") -> list[Callable[[bytes], bytes]]:
        steps: list[Callable[[bytes], bytes]] = []
        if not ir:
            steps.append(lambda challenge: b64(self.first()))
        steps.append(lambda challenge: b64(self.final(challenge)))
        steps.append(lambda challenge: b64(self.check_final(challenge) + ack))
        return steps

    def exchange(self, *, ir: bool = True, ack: bytes = b"") -> FakeExchange:
        return exchange(*self.script(ir=ir, ack=ack), ir=self.first() if ir else None)


@pytest.mark.parametrize("ir", [True, False])
async def test_scram_full_exchange(ir: bool) -> None:
    # RFC 5802 §3, RFC 7677; RFC 5034 §4 (SASL-07, SASL-12, SCRAM-10)
    client = ScramClient("alice", "secret")
    ex = client.exchange(ir=ir)
    assert await run(ScramSHA256Mechanism(), ex) == "alice"
    assert len(ex.sent) == (2 if ir else 3)
    if not ir:
        assert ex.sent[0] == b"+ "
    assert base64.b64decode(ex.sent[-1][2:]).startswith(b"v=")


async def test_scram_unicode_and_escaped_names() -> None:
    # RFC 5802 §5.1 (SCRAM-02): name prepared for the lookup, hashed as received
    ex = ScramClient("jose\u0301", "p\u00e4ss").exchange()
    assert await run(ScramSHA256Mechanism(), ex) == "jos\u00e9"


@pytest.mark.rfc("5802", "3")
async def test_scram_default_credentials_use_the_saslprepped_secret() -> None:
    # SaltedPassword = Hi(Normalize(password), ...): a client that knows "two\u00a0words"
    # derives its keys from "two words", so must the default get_scram_credentials.
    authenticator = MemoryAuthenticator({"dave": "two\u00a0words"})
    ex = ScramClient("dave", saslprep("two\u00a0words")).exchange()
    ex.authenticator = authenticator
    assert await run(ScramSHA256Mechanism(), ex) == "dave"


async def test_scram_y_flag_and_own_authzid_accepted() -> None:
    # RFC 5802 §6 (SCRAM-06): "y" without -PLUS on offer is fine
    ex = ScramClient("alice", "secret", flag="y", authzid="alice").exchange()
    assert await run(ScramSHA256Mechanism(), ex) == "alice"


async def test_scram_other_authzid_fails() -> None:
    client = ScramClient("alice", "secret", authzid="dave")
    ex = exchange(*client.script()[:1], ir=client.first())
    with pytest.raises(AuthenticationFailed):
        await run(ScramSHA256Mechanism(), ex)
    assert len(ex.sent) == 1  # no server-final for a failure (SCRAM-08)


async def test_scram_final_answer_must_be_empty() -> None:
    # RFC 5034 §4 (SASL-12)
    with pytest.raises(AuthenticationFailed):
        await run(ScramSHA256Mechanism(), ScramClient("alice", "secret").exchange(ack=b"x"))


async def test_scram_cancel_at_the_final_challenge() -> None:
    client = ScramClient("alice", "secret")
    steps: list[bytes | Callable[[bytes], bytes]] = [*client.script()[:1], b"*"]
    with pytest.raises(SASLCancelled):
        await run(ScramSHA256Mechanism(), exchange(*steps, ir=client.first()))


async def transcript_of_failure(client: ScramClient) -> Sequence[bytes]:
    ex = exchange(*client.script()[:1], ir=client.first())
    with pytest.raises(AuthenticationFailed) as failure:
        await run(ScramSHA256Mechanism(), ex)
    assert failure.value.text == "Authentication failed."
    return ex.sent


async def test_scram_wrong_password_and_unknown_user_look_alike() -> None:
    # RFC 5802 §9 (SCRAM-11): same shape, i=4096, a salt of the same size, no v=
    wrong = await transcript_of_failure(ScramClient("alice", "wrong"))
    unknown = await transcript_of_failure(ScramClient("nosuchuser", "secret"))
    again = await transcript_of_failure(ScramClient("nosuchuser", "secret"))
    shapes = []
    for sent in (wrong, unknown):
        [line] = sent
        server_first = base64.b64decode(line[2:]).decode()
        match = re.fullmatch(r"r=cN[^,]+,s=([^,]+),i=(\d+)", server_first)
        assert match is not None
        shapes.append((len(base64.b64decode(match[1])), match[2]))
    assert shapes[0] == shapes[1] == (16, str(SCRAM_ITERATIONS))
    salt = re.compile(rb",s=[^,]+,")
    assert salt.findall(base64.b64decode(unknown[0][2:])) == salt.findall(
        base64.b64decode(again[0][2:])
    )


async def test_scram_fake_iterations() -> None:
    ex = exchange(*ScramClient("nosuchuser", "x").script()[:1], ir=b"n,,n=nosuchuser,r=cN")
    with pytest.raises(AuthenticationFailed):
        await run(ScramSHA256Mechanism(fake_iterations=5000), ex)
    assert base64.b64decode(ex.sent[0][2:]).endswith(b",i=5000")


@pytest.mark.parametrize(
    "first",
    [
        b"p=tls-unique,,n=alice,r=cN",  # RFC 5802 §6 (SCRAM-06)
        b"n,,m=x,n=alice,r=cN",  # RFC 5802 §5.1 (SCRAM-05)
        b"n,,n=al=ice,r=cN",  # RFC 5802 §5.1 (SCRAM-02)
        b"n,,n=\xc2\xad,r=cN",  # prepares to ""
        b"n,,n=a\x07,r=cN",  # SASLprep refuses
        b"",
    ],
)
async def test_scram_bad_client_first(first: bytes) -> None:
    ex = exchange(ir=first)
    with pytest.raises(AuthenticationFailed):
        await run(ScramSHA256Mechanism(), ex)
    assert ex.sent == []


async def test_scram_bad_client_final() -> None:
    # RFC 5802 §5.1 (SCRAM-03): nonce mismatch
    client = ScramClient("alice", "secret")

    def tampered(challenge: bytes) -> bytes:
        return b64(client.final(challenge).replace(b",r=cN", b",r=cX"))

    with pytest.raises(AuthenticationFailed):
        await run(ScramSHA256Mechanism(), exchange(tampered, ir=client.first()))


async def test_scram_without_credentials_fails() -> None:
    # An authenticator that offers no SCRAM credentials: everyone is "unknown".
    class PasswordOnly(Authenticator):
        async def check_password(self, user: str, password: str) -> bool:
            return USERS.get(user) == password

    client = ScramClient("alice", "secret")
    ex = exchange(*client.script()[:1], ir=client.first(), authenticator=PasswordOnly())
    with pytest.raises(AuthenticationFailed):
        await run(ScramSHA256Mechanism(), ex)


def test_make_scram_credentials() -> None:
    # RFC 7677 §3 vector: the keys for "pencil" with the RFC's salt
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    credentials = make_scram_credentials("pencil", salt=salt)
    assert credentials.iterations == 4096
    assert credentials.salt == salt
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    assert credentials.server_key == hmac.digest(salted, b"Server Key", "sha256")
    one = make_scram_credentials("pencil", iterations=4097)
    two = make_scram_credentials("pencil", iterations=4097)
    assert one.iterations == 4097
    assert len(one.salt) == 16
    assert one.salt != two.salt


# --- the mechanism API ----------------------------------------------------------------


def test_default_mechanisms() -> None:
    names = [mechanism.name for mechanism in DEFAULT_MECHANISMS]
    assert names == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
    assert "CRAM-MD5" not in names  # opt-in: plaintext secrets and MD5 (CRAM-04)
    plaintext = {mechanism.name: mechanism.plaintext for mechanism in DEFAULT_MECHANISMS}
    assert plaintext == {"PLAIN": True, "LOGIN": True, "SCRAM-SHA-256": False}
    assert CramMD5Mechanism.plaintext is False
    assert all(mechanism.initial_response for mechanism in DEFAULT_MECHANISMS)


@pytest.mark.parametrize("name", ["plain", "", "X" * 21, "A B", "ÄÖ"])
def test_mechanism_names_are_checked(name: str) -> None:
    with pytest.raises(TypeError, match="SASL name"):
        type("Bad", (PlainMechanism,), {"name": name})


class OAuthBearerMechanism(SASLMechanism):
    """The class docstring's example, so that it keeps working."""

    name = "OAUTHBEARER"
    plaintext = True
    initial_response = True

    def __init__(self, verify: Callable[[str, str], Awaitable[bool]]) -> None:
        self.verify = verify

    async def authenticate(self, exchange: SASLExchange) -> str:
        message = await self.first_response(exchange)
        gs2_header, _, rest = message.decode().partition("\x01")
        user = gs2_header.removeprefix("n,a=").removesuffix(",")
        fields = dict(f.split("=", 1) for f in rest.split("\x01") if "=" in f)
        token = fields.get("auth", "").removeprefix("Bearer ")
        if not user or not await self.verify(user, token):
            raise AuthenticationFailed()
        return user


async def test_user_defined_mechanism() -> None:
    async def verify(user: str, token: str) -> bool:
        return (user, token) == ("alice", "vF9dft4qmT")

    mechanism = OAuthBearerMechanism(verify)
    message = b"n,a=alice,\x01host=server.example.com\x01auth=Bearer vF9dft4qmT\x01\x01"
    assert await run(mechanism, exchange(b64(message))) == "alice"
    with pytest.raises(AuthenticationFailed):
        await run(mechanism, exchange(ir=message.replace(b"vF9", b"xxx")))
