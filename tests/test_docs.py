"""The documentation stays true to the code.

* ``docs/reference/cli.rst`` documents every option of every ``trio-pop3``
  subcommand, with its choices and default, and no option that does not exist.
* The README's "server in 30 lines" is run over an in-memory stream and answers bad
  message numbers as a POP3 server must.
"""

from __future__ import annotations

import argparse
import ast
import logging
import re
from pathlib import Path

import pytest
from pop3_support import memory_session

from trio_pop3 import POP3Handler
from trio_pop3._cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
CLI_REFERENCE = ROOT / "docs" / "reference" / "cli.rst"
README = ROOT / "README.md"

#: A subcommand's section of the CLI reference starts with this title.
SECTION_TITLE = re.compile(r"^``trio-pop3 ([a-z-]+)``\n-+\n", re.MULTILINE)
#: An option's entry: a definition-list term naming it, then its indented definition.
ENTRY = re.compile(r"^``--.*\n(?:(?:   .*)?\n)*", re.MULTILINE)
OPTION = re.compile(r"``(--[a-z0-9-]+)")


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """Return the parser of each ``trio-pop3`` subcommand, by name."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("trio-pop3 has no subcommands")


def documented_options(name: str) -> dict[str, str]:
    """Return each option documented in subcommand ``name``'s section, with its entry."""
    text = CLI_REFERENCE.read_text()
    titles = list(SECTION_TITLE.finditer(text))
    sections = {
        match.group(1): text[match.end() : end.start() if end else len(text)]
        for match, end in zip(titles, [*titles[1:], None], strict=True)
    }
    assert name in sections, f"no section for trio-pop3 {name}"
    options: dict[str, str] = {}
    for entry in ENTRY.finditer(sections[name]):
        term = entry.group().partition("\n")[0]
        for option in OPTION.findall(term):
            options[option] = entry.group()
    return options


def default_text(default: object) -> str:
    """Return how a default value reads in the reference (600.0 reads "600", [] "none")."""
    if isinstance(default, list) and not default:
        return "none"
    return f"{default:g}" if isinstance(default, float) else str(default)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_cli_reference_documents_every_option(name: str) -> None:
    documented = documented_options(name)
    actual: set[str] = set()
    for action in subcommands()[name]._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue  # --help, and options internal to the program
        for option in action.option_strings:
            actual.add(option)
            assert option in documented, f"trio-pop3 {name} {option} is not documented"
            entry = documented[option]
            for choice in action.choices or ():
                assert f"``{choice}``" in entry, f"{option}: choice {choice} not documented"
            default = action.default
            if default is not None and not isinstance(default, bool):
                text = default_text(default)
                assert re.search(rf"\b{re.escape(text)}\b", entry), (
                    f"{option}: default {text} not documented"
                )
    assert set(documented) <= actual, f"documented but not options: {set(documented) - actual}"


def test_cli_reference_mentions_version() -> None:
    assert "``trio-pop3 --version``" in CLI_REFERENCE.read_text()


# -- the README's "server in 30 lines" --------------------------------------------------------


def readme_handler() -> type[POP3Handler]:
    """Run the README's 20-line server up to, not including, its ``trio.run`` line."""
    text = README.read_text()
    start = text.index("```python\n", text.index("## A server in 30 lines")) + 10
    source = text[start : text.index("\n```", start)]
    module = ast.parse(source)
    *body, last = module.body
    assert ast.unparse(last).startswith("trio.run("), "the example ends by serving"
    namespace: dict[str, object] = {}
    exec(compile(ast.Module(body, type_ignores=[]), "README.md", "exec"), namespace)
    handler = namespace["Handler"]
    assert isinstance(handler, type)
    assert issubclass(handler, POP3Handler)
    return handler


@pytest.mark.rfc("1939", "7")
@pytest.mark.parametrize("user", ["nobody", "alice"])
async def test_readme_server_refuses_pass_without_a_password(user: str) -> None:
    # The example had "USERS.get(user) != arg": for an unknown user and a bare PASS
    # that compared None with None and logged the client in.
    async with memory_session(readme_handler()) as session:
        client = session.client
        assert (await client.command(f"USER {user}")).startswith("+OK")
        assert (await client.command("PASS")).startswith("-ERR [AUTH]")
        assert (await client.command("STAT")).startswith("-ERR")


@pytest.mark.rfc("1939", "5")
async def test_readme_server_refuses_bad_message_numbers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RETR needs the number of an existing message: else -ERR, and the session goes on."""
    caplog.set_level(logging.ERROR)
    async with memory_session(readme_handler()) as session:
        client = session.client
        await client.login("alice", "wonderland")
        for line in ["RETR 0", "RETR", "RETR 2", "RETR x", "RETR -1", "RETR \u00b2"]:
            reply = await client.command(line)
            assert reply.startswith("-ERR"), (line, reply)
        first, lines = await client.multi("RETR 1")
        assert first.startswith("+OK"), first
        assert lines == [b"Subject: hello", b"", b"Generated just now."]
        assert (await client.command("QUIT")).startswith("+OK")
    assert not caplog.records, "a bad argument is a client error, not a server failure"
