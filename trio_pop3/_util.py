"""Small helpers shared by the package's public modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import trio

__all__ = ["fixup_module_metadata", "run_protected"]


def fixup_module_metadata(module_name: str, namespace: Mapping[str, object]) -> None:
    """Make the public names of ``module_name`` report it as their home.

    Tracebacks, reprs and the documentation then show ``trio_pop3.POP3Server``
    rather than ``trio_pop3._server.POP3Server``.  Only names defined in a private
    module (a dotted path with a part starting with ``_``) are changed.
    """
    names = namespace["__all__"]
    assert isinstance(names, list)
    for name in names:
        obj = namespace[name]
        module = getattr(obj, "__module__", None)
        if not isinstance(module, str) or not module.startswith("trio_pop3."):
            continue
        if any(part.startswith("_") for part in module.split(".")[1:]):
            try:
                obj.__module__ = module_name
            except (AttributeError, TypeError):
                pass


@trio.lowlevel.enable_ki_protection
async def run_protected(hook: Callable[[], Awaitable[None]]) -> None:
    """Await ``hook()`` with KeyboardInterrupt held off until it returns.

    For the clean-up hooks (commit, disconnect), which callers already run in a
    shielded cancel scope: the shield stops cancellation, but a Ctrl-C under a plain
    ``trio.run`` is raised as KeyboardInterrupt wherever the code happens to be,
    possibly half-way through removing messages.  Protected, the interrupt reaches
    the main task once the hook returns, and the sessions end by cancellation.
    Protection covers what the hook calls, too (trio checks the whole stack).
    """
    await hook()
