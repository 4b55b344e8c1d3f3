"""Folder rules: metadata from where a file sits in the ingested folder, e.g. ``{product}/{version}`` reads
``tv/3.2/setup.md`` as ``{"product": "tv", "version": "3.2"}`` (issue 28: teams keep products and versions in folders).

A rule is a "/"-separated pattern matched against a file's folders, from the top: ``{name}`` takes that folder's
name as the field ``name``, ``*`` skips one folder, anything else must equal the folder's name. A file whose folders
do not match gets no fields from it; one in fewer folders than the rule gets the fields its folders give
(``tv/setup.md``: product only). Values are strings: "3.10" stays
"3.10", which ranges on numbers would misorder. A document's own metadata (front matter, record fields) wins over
its folder's; an upload's metadata part wins over both.
"""
from __future__ import annotations

import re

_CAPTURE = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]{0,63})\}$")
_LITERAL = re.compile(r"^[^{}/*]+$")


class PathRule:
    def __init__(self, pattern: str):
        parts = pattern.strip().strip("/").split("/")
        if not pattern.strip() or any(not p for p in parts):
            raise ValueError(f"folder rule {pattern!r}: empty parts; write it like '{{product}}/{{version}}'")
        self.parts: list[tuple[str, str]] = []   # (kind: capture | any | literal, name or text)
        for part in parts:
            capture = _CAPTURE.match(part)
            if capture:
                self.parts.append(("capture", capture.group(1)))
            elif part == "*":
                self.parts.append(("any", ""))
            elif _LITERAL.match(part):
                self.parts.append(("literal", part))
            else:
                raise ValueError(f"folder rule {pattern!r}: {part!r} is neither {{field}}, * nor a folder name")
        if not any(kind == "capture" for kind, _ in self.parts):
            raise ValueError(f"folder rule {pattern!r} names no field: use {{field}} for at least one folder")

    def fields(self, rel: str) -> dict[str, str]:
        """The fields the folders of ``rel`` (a path relative to the ingested folder) give."""
        folders = rel.split("/")[:-1]
        out: dict[str, str] = {}
        for (kind, text), folder in zip(self.parts, folders):
            if kind == "literal" and folder != text:
                return {}
            if kind == "capture":
                out[text] = folder
        return out
