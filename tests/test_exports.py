"""The public API: complete ``__all__``, docstrings everywhere, public module names."""

from __future__ import annotations

import inspect
import types

import pytest

import trio_pop3
import trio_pop3.mailbox
import trio_pop3.testing

PUBLIC_MODULES = [trio_pop3, trio_pop3.mailbox, trio_pop3.testing]


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_all_names_exist_and_are_documented(module: types.ModuleType) -> None:
    assert module.__doc__
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"
            # Tracebacks and docs show the public home, not a private module.
            assert obj.__module__ == module.__name__, (name, obj.__module__)


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_public_methods_are_documented(module: types.ModuleType) -> None:
    for name in module.__all__:
        obj = getattr(module, name)
        if not inspect.isclass(obj):
            continue
        for attr, member in vars(obj).items():
            if attr.startswith("_") or not callable(member):
                continue
            assert inspect.getdoc(member), f"{module.__name__}.{name}.{attr} has no docstring"


def test_no_public_name_is_missing_from_all() -> None:
    """Every non-underscore, non-module attribute of trio_pop3 is in __all__."""
    exported = set(trio_pop3.__all__)
    for name, value in vars(trio_pop3).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        assert name in exported, name
