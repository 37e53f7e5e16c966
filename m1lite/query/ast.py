"""The query AST: what the parser produces and the executor evaluates.

Solr's standard syntax, reduced to a few node kinds. Values stay as the user wrote
them (strings); the executor decides per field whether a value is a string, a
number, a boolean or a date, because only the index knows the field's kinds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MatchAll:
    """`*`, `*:*`, or an empty query."""


@dataclass(frozen=True, slots=True)
class Term:
    """`field:value` or `field:"quoted value"`; `phrase` is True when it was quoted."""

    field: str
    value: str
    phrase: bool = False


@dataclass(frozen=True, slots=True)
class Wildcard:
    """`field:pre*`, `field:a?c`: `*` any run of characters, `?` exactly one."""

    field: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Exists:
    """`field:*`: the field has any value."""

    field: str


@dataclass(frozen=True, slots=True)
class Range:
    """`field:[a TO b]`, `{a TO b}` and mixes; None is an open (`*`) end.

    Ends are raw text: numbers, dates (with date math such as `NOW-7DAYS`) or strings.
    """

    field: str
    low: str | None
    high: str | None
    include_low: bool = True
    include_high: bool = True


@dataclass(frozen=True, slots=True)
class Not:
    """`NOT x`, `!x`, `-x`: everything visible except x."""

    clause: Node


@dataclass(frozen=True, slots=True)
class And:
    clauses: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    clauses: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class BoolQuery:
    """Lucene's clause list with prefixes, as in `+a -b c`.

    Matches: all of `must`, none of `must_not`, and, when there is no `must`, at least
    one of `should` (if any). With `must` present, `should` clauses only affect scoring
    in Lucene, so they do not restrict the result here either.
    """

    must: tuple[Node, ...] = ()
    should: tuple[Node, ...] = ()
    must_not: tuple[Node, ...] = ()


Node = MatchAll | Term | Wildcard | Exists | Range | Not | And | Or | BoolQuery
