"""Test, lint, type-check and benchmark sessions.  ``nox`` alone runs the CI set."""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["tests", "interop", "lint", "typecheck", "docs"]
nox.options.error_on_missing_interpreters = True

PYPROJECT = nox.project.load_toml("pyproject.toml")

#: The real clients the interop tests run (Debian packages curl, fetchmail, mpop and
#: getmail6; .ci/run installs them).
INTEROP_CLIENTS = ("curl", "fetchmail", "mpop", "getmail")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (interop tests with external clients are skipped here)."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "test"))
    session.run("pytest", "-m", "not interop", *session.posargs)


@nox.session
def interop(session: nox.Session) -> None:
    """Run the interop tests: curl, fetchmail, mpop and getmail against a real server.

    Under CI a missing client is a failure, not a skip.
    """
    missing = [tool for tool in INTEROP_CLIENTS if shutil.which(tool) is None]
    if missing and os.environ.get("CI"):
        session.error(f"interop clients missing: {', '.join(missing)} (see .ci/run)")
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "test"))
    session.run("pytest", "-m", "interop", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and the examples."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "typecheck"))
    session.run("mypy", "trio_pop3", "tests", "examples", "benchmarks", "noxfile.py")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the HTML documentation (docs/_build/html), warnings as errors.

    Then run the tutorial's tests, so that the code the tutorial shows still works.
    """
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "docs"))
    shutil.rmtree(os.path.join("docs", "_build"), ignore_errors=True)  # no stale pages
    session.run(
        "sphinx-build", "-W", "-n", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )
    session.run("pytest", "-p", "no:cacheprovider", "docs/tutorial", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Micro-benchmarks of the core, then the end-to-end comparison if possible."""
    session.install("-e", ".")
    session.run("python", "benchmarks/micro.py", *session.posargs)
    session.run("python", "benchmarks/bigmessage.py")
    if os.path.exists("benchmarks/compare.sh"):
        session.run("bash", "benchmarks/compare.sh", external=True)
