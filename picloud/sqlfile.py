"""Named SQL queries kept in ``.sql`` files.

A file holds queries separated by ``-- name: NAME`` header lines; everything up to the next
header (comments included) is the query. Parameters use psycopg's ``%(name)s`` style.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString, cast

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class Queries:
    """The queries of one ``.sql`` file, as attributes: ``Queries("picloud.events").append``."""

    def __init__(self, package: str, filename: str = "queries.sql") -> None:
        text = (resources.files(package) / filename).read_text(encoding="utf-8")
        self._queries = parse(text)

    def __getattr__(self, name: str) -> LiteralString:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(name) from None

    def names(self) -> list[str]:
        return sorted(self._queries)


def parse(text: str) -> dict[str, LiteralString]:
    parts = _HEADER.split(text)
    queries: dict[str, LiteralString] = {}
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} defined twice")
        queries[name] = cast(LiteralString, body.strip())
    return queries
