"""Griffe extension for the docs build: two habits of this code base's docstrings, rendered properly.

1. Sphinx roles (:class:`~qwen_embed.Embedder`, :meth:`encode`) would show as written in
   Markdown; each becomes a code span (``~a.b.C`` shows ``C``, anything else the target as written).
2. Parameters documented together (``dim, normalize, long_text: As in encode``) are not Google
   style; each name becomes its own entry with the shared description, so the parser still checks
   every name against the signature (a documented parameter that does not exist fails the build).

Nothing is fetched or imported; only the docstring text griffe read from the source changes.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")
_PARAM_SECTIONS = {"args:", "arguments:", "parameters:", "params:", "keyword args:", "keyword arguments:"}
_NAMES = re.compile(r"^\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)+$")


def _code_span(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def split_grouped_params(text: str) -> str:
    """Rewrite ``a, b: text`` entries of Args-like sections as one ``a: text`` entry per name."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if line.strip().lower() not in _PARAM_SECTIONS:
            continue
        header_indent = _indent(line)
        while i < len(lines) and not lines[i].strip():
            out.append(lines[i])
            i += 1
        if i == len(lines) or _indent(lines[i]) <= header_indent:
            continue
        item_indent = _indent(lines[i])
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) >= item_indent):
            if not lines[i].strip() or _indent(lines[i]) > item_indent:
                out.append(lines[i])
                i += 1
                continue
            item = [lines[i]]
            i += 1
            while i < len(lines) and lines[i].strip() and _indent(lines[i]) > item_indent:
                item.append(lines[i])
                i += 1
            joined = " ".join(part.strip() for part in item)
            names, sep, description = joined.partition(":")
            if sep and _NAMES.match(names.strip()):
                pad = " " * item_indent
                out.extend(f"{pad}{name.strip()}:{description}" for name in names.split(","))
            else:
                out.extend(item)
    return "\n".join(out)


class RstRoles(griffe.Extension):
    """Rewrites Sphinx roles and grouped parameters in every docstring griffe reads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite one object's docstring (runs before any docstring is parsed)."""
        if obj.docstring is not None:
            obj.docstring.value = split_grouped_params(_ROLE.sub(_code_span, obj.docstring.value))
