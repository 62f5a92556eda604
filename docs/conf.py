"""Sphinx configuration of the trio_pop3 documentation.

Build it with ``nox -s docs``, which runs
``sphinx-build -W -n --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import typing
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.ext import napoleon
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

import trio_pop3
import trio_pop3.mailbox
import trio_pop3.testing

logger = logging.getLogger(__name__)

project = "trio_pop3"
author = "The trio_pop3 developers"
copyright = "the trio_pop3 developers"  # noqa: A001 - Sphinx's name for it
version = release = trio_pop3.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_inventories", "README.md"]
default_role = "py:obj"
nitpicky = True

# -- autodoc and napoleon (Google-style docstrings) ------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": True}
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# trio's docstring sections, which this project uses too (see shared/STYLE.md).
napoleon_custom_sections = [
    ("Cancellation", "notes_style"),
    ("Error handling", "notes_style"),
    ("Resource handling", "notes_style"),
]

# -- intersphinx: Python and trio ----------------------------------------------------
# The inventories are kept in docs/_inventories so that the build works offline (CI
# has no access to docs.python.org or readthedocs.io); the URLs are tried when the
# local copy is missing.  See docs/_inventories/README.md to refresh them.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", ("_inventories/python.inv", None)),
    "trio": ("https://trio.readthedocs.io/en/stable", ("_inventories/trio.inv", None)),
}
intersphinx_timeout = 10

# -- HTML ---------------------------------------------------------------------------
html_theme = "furo"
html_title = f"trio_pop3 {release}"
html_static_path: list[str] = []

myst_heading_anchors = 3


# -- Private module paths in type annotations ---------------------------------------
# Public names are defined in private modules (trio_pop3._server, ...).  trio_pop3's
# __init__ rewrites their __module__ to "trio_pop3", but annotations can still name
# the private path, e.g. "trio_pop3._mailbox.MessageInfo".  Resolve such a reference to
# the public name it is documented under, if there is exactly one.
_PUBLIC_MODULES = ("trio_pop3", "trio_pop3.mailbox", "trio_pop3.testing")


def _public_target(env: BuildEnvironment, target: str) -> str | None:
    if not target.startswith("trio_pop3.") or "._" not in target:
        return None
    name = target.rsplit(".", 1)[1]
    objects = env.get_domain("py").objects  # type: ignore[attr-defined]
    matches = [f"{m}.{name}" for m in _PUBLIC_MODULES if f"{m}.{name}" in objects]
    return matches[0] if len(matches) == 1 else None


def _resolve_private(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement
) -> nodes.reference | None:
    if node.get("refdomain") != "py":
        return None
    public = _public_target(env, node["reftarget"])
    if public is None:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], public, node, contnode
    )


# -- Attribute doc-comments of re-exported names --------------------------------------
# autodoc reads ``#:`` comments (on constants, class attributes, enum members) from the
# module named by ``__module__``; for names re-exported by trio_pop3 that is now
# trio_pop3/__init__.py, which has none.  Give the analyser of each public module the
# comments of the private modules it re-exports from, so they are not lost.
#
# trio_pop3.testing is one public module whose code is split, for size (STYLE.md
# section 2.1), into private modules of the package: trio_pop3._testing_client, ...
# Document those names as if their code were still in trio_pop3.testing: its analyser
# also gets their annotations and @final marks, and the string annotations of their
# classes are evaluated where they were written (typing.get_type_hints would look the
# names up in trio_pop3.testing, which imports none of them).
def _split_out_of(public: str, module: Any) -> list[str]:
    """Private modules ``module`` imports from that are outside ``public``'s own
    namespace and whose public names (``__all__``) it re-exports, all of them."""
    tree = ast.parse(ModuleAnalyzer.for_module(public).code)
    package = module.__spec__.parent if module.__spec__ else public
    imported = {
        importlib.util.resolve_name("." * node.level + (node.module or ""), package)
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.level
    }
    found = []
    for name in sorted(imported):
        private = sys.modules.get(name)
        exported = getattr(private, "__all__", None)
        if (
            name.startswith("trio_pop3._")
            and not name.startswith(public + "._")
            and exported
            and all(
                n in module.__all__ and getattr(module, n) is getattr(private, n) for n in exported
            )
        ):
            found.append(name)
    return found


def _merge_split_module(analyzer: ModuleAnalyzer, source: str) -> None:
    private = ModuleAnalyzer.for_module(source)
    private.analyze()
    for key, comment in private.attr_docs.items():
        analyzer.attr_docs.setdefault(key, comment)
    for key, annotation in private.annotations.items():
        analyzer.annotations.setdefault(key, annotation)
    analyzer.finals.extend(f for f in private.finals if f not in analyzer.finals)
    offset = len(analyzer.tagorder)
    for name, order in private.tagorder.items():
        analyzer.tagorder.setdefault(name, offset + order)
    namespace = vars(sys.modules[source])
    for name in namespace["__all__"]:
        obj = namespace[name]
        own = vars(obj).get("__annotations__") if isinstance(obj, type) else None
        if own:
            hints = typing.get_type_hints(obj, namespace)
            obj.__annotations__ = {key: hints[key] for key in own}


def _merge_attribute_docs(app: Sphinx) -> None:
    for public in _PUBLIC_MODULES:
        module = sys.modules.get(public)
        if module is None:
            continue
        analyzer = ModuleAnalyzer.for_module(public)
        analyzer.analyze()
        sources = sorted(
            {
                getattr(obj, "__module__", None) or ""
                for obj in vars(module).values()
                if isinstance(obj, type)
            }
            | {name for name in sys.modules if name.startswith(public + "._")}
        )
        for source in sources:
            if not source.startswith("trio_pop3.") or source == public:
                continue
            private = ModuleAnalyzer.for_module(source)
            private.analyze()
            for key, comment in private.attr_docs.items():
                analyzer.attr_docs.setdefault(key, comment)
            offset = len(analyzer.tagorder)
            for name, order in private.tagorder.items():
                analyzer.tagorder.setdefault(name, offset + order)
        for source in _split_out_of(public, module):
            _merge_split_module(analyzer, source)


# -- No napoleon "type: description" parsing of attribute docs -----------------------
# napoleon reads the first line of an attribute's doc as "type: description", but this
# project's doc-comments are prose that often starts "RFC 1939 section 3: ..." and the
# types come from annotations.  Run napoleon on those as on any other prose.
def _napoleon_without_inline_types(
    app: Sphinx, what: Any, name: str, obj: object, options: Any, lines: list[str]
) -> None:
    if what in ("data", "attribute", "property") and name.startswith("trio_pop3"):
        what = "module"
    napoleon._process_docstring(app, what, name, obj, options, lines)


def _replace_napoleon_listener(app: Sphinx) -> None:
    for listener in list(app.events.listeners["autodoc-process-docstring"]):
        if listener.handler is napoleon._process_docstring:
            app.disconnect(listener.id)
    app.connect("autodoc-process-docstring", _napoleon_without_inline_types)


# -- Every public name is documented ---------------------------------------------------
def _check_public_names(app: Sphinx, env: BuildEnvironment) -> None:
    objects = env.get_domain("py").objects  # type: ignore[attr-defined]
    for public in _PUBLIC_MODULES:
        module = sys.modules.get(public)
        if module is None:
            logger.warning("cannot import %s to check its documentation", public)
            continue
        for name in module.__all__:
            if f"{public}.{name}" not in objects:
                logger.warning("%s.%s is public (in __all__) but not documented", public, name)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("env-check-consistency", _check_public_names)
    _replace_napoleon_listener(app)
    app.connect("builder-inited", _merge_attribute_docs)
    app.connect("missing-reference", _resolve_private)
    return {"parallel_read_safe": True}
