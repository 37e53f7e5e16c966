"""The Solr query syntax users can write, what each form means, and how mistakes are reported."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from m1lite.errors import BadRequest
from m1lite.query.ast import (
    And,
    BoolQuery,
    Exists,
    MatchAll,
    Node,
    Not,
    Or,
    Range,
    Term,
    Wildcard,
)
from m1lite.query.parser import (
    QuerySyntaxError,
    QueryTooComplex,
    parse,
    parse_fl,
    parse_sort,
)


def T(field: str, value: str, phrase: bool = False) -> Term:
    return Term(field, value, phrase)


A, B, C, D = T("a", "1"), T("b", "2"), T("c", "3"), T("d", "4")

# ----------------------------------------------------------------------------- forms

FORMS: list[tuple[str, Node]] = [
    # everything
    ("", MatchAll()),
    ("   \t\n", MatchAll()),
    ("*", MatchAll()),
    ("*:*", MatchAll()),
    (" ( * ) ", MatchAll()),
    # field:value, values kept as written
    ("a:1", A),
    ("event.type:heartbeat", T("event.type", "heartbeat")),
    ("_m1.geo.country_iso_code:US", T("_m1.geo.country_iso_code", "US")),
    ("_m1.ip:128.218.229.26", T("_m1.ip", "128.218.229.26")),
    (
        "session.id:0295aed9-5872-4586-8086-57d3d8c40fb8",
        T("session.id", "0295aed9-5872-4586-8086-57d3d8c40fb8"),
    ),
    ("n:-5", T("n", "-5")),
    ("n:-2.5e3", T("n", "-2.5e3")),
    ("n:5+", T("n", "5+")),
    ("flag:true", T("flag", "true")),
    ("f:and", T("f", "and")),  # lowercase keywords are plain values
    ("f:TO", T("f", "TO")),
    ("f:a&&b", T("f", "a&&b")),
    ("f:a/b", T("f", "a/b")),
    ("page:a/b/c", T("page", "a/b/c")),
    ("a : 1", A),
    ("a: 1", A),
    ("type:sessionTimeout", T("type", "sessionTimeout")),
    # quoted values keep their exact text
    ('f:"hello world"', T("f", "hello world", True)),
    ('f:"2021-02-23T19:18:04.399Z"', T("f", "2021-02-23T19:18:04.399Z", True)),
    ('f:"say \\"hi\\" \\\\ ok"', T("f", 'say "hi" \\ ok', True)),
    ('f:""', T("f", "", True)),
    ('f:"AND"', T("f", "AND", True)),
    ('f:"a*"', T("f", "a*", True)),
    ('f:"  spaced  "', T("f", "  spaced  ", True)),
    # escapes
    ("f:a\\:b", T("f", "a:b")),
    ("f:a\\ b", T("f", "a b")),
    ("f:2021-02-23T19\\:18\\:04.399Z", T("f", "2021-02-23T19:18:04.399Z")),
    ("f:\\*", T("f", "*")),
    ("f:\\-5", T("f", "-5")),
    ("f:\\(x\\)", T("f", "(x)")),
    ("f:\\/home", T("f", "/home")),
    ("f:\\AND", T("f", "AND")),
    ("my\\ field:x", T("my field", "x")),
    ("a\\:b:c", T("a:b", "c")),
    # existence and wildcards
    ("f:*", Exists("f")),
    ("f:**", Exists("f")),
    ("f:ab*", Wildcard("f", "ab*")),
    ("f:a?c", Wildcard("f", "a?c")),
    ("f:ab*c?", Wildcard("f", "ab*c?")),
    ("f:a\\ b*", Wildcard("f", "a b*")),
    ("f:(*)", Exists("f")),
    # ranges
    ("f:[1 TO 5]", Range("f", "1", "5", True, True)),
    ("f:{1 TO 5}", Range("f", "1", "5", False, False)),
    ("f:[1 TO 5}", Range("f", "1", "5", True, False)),
    ("f:{1 TO 5]", Range("f", "1", "5", False, True)),
    ("f:[* TO 5]", Range("f", None, "5", True, True)),
    ("f:{5 TO *}", Range("f", "5", None, False, False)),
    ("f:[* TO *]", Range("f", None, None, True, True)),
    ("n:[-5 TO -1]", Range("n", "-5", "-1")),
    ("f:[  a   TO   b  ]", Range("f", "a", "b")),
    ('f:["*" TO "a b"]', Range("f", "*", "a b")),
    ('f:["" TO z]', Range("f", "", "z")),
    ("f:[a\\ b TO c\\]]", Range("f", "a b", "c]")),
    ("d:[NOW-7DAYS TO NOW/DAY+1DAY]", Range("d", "NOW-7DAYS", "NOW/DAY+1DAY")),
    (
        "d:[2021-02-23T19:18:04.399Z TO *]",
        Range("d", "2021-02-23T19:18:04.399Z", None),
    ),
    ("f:[a TO b]^2", Range("f", "a", "b")),
    # boosts are accepted and ignored
    ("f:abc^2", T("f", "abc")),
    ("f:abc^0.5", T("f", "abc")),
    ('f:"x y"^3', T("f", "x y", True)),
    ("(a:1 b:2)^2", Or((A, B))),
    ("*^2", MatchAll()),
    # field groups
    ("f:(a OR b)", Or((T("f", "a"), T("f", "b")))),
    ("f:(a b)", Or((T("f", "a"), T("f", "b")))),
    ("f:(a AND b)", And((T("f", "a"), T("f", "b")))),
    (
        "f:(+a -b c)",
        BoolQuery(must=(T("f", "a"),), should=(T("f", "c"),), must_not=(T("f", "b"),)),
    ),
    ("f:(NOT a)", Not(T("f", "a"))),
    ('f:("x y" OR z*)', Or((T("f", "x y", True), Wildcard("f", "z*")))),
    ("f:([1 TO 2] OR 5)", Or((Range("f", "1", "2"), T("f", "5")))),
    ("f:(a OR (b AND c))", Or((T("f", "a"), And((T("f", "b"), T("f", "c")))))),
    ("f:(a g:b)", Or((T("f", "a"), T("g", "b")))),  # an explicit field wins, as in Lucene
    ("f:(-5)", Not(T("f", "5"))),  # inside a group, - is an operator again
    (
        '_m1.ip:("128.218.229.26" OR "72.200.1.74")',
        Or((T("_m1.ip", "128.218.229.26", True), T("_m1.ip", "72.200.1.74", True))),
    ),
]


@pytest.mark.parametrize(("q", "expected"), FORMS, ids=[q or "<empty>" for q, _ in FORMS])
def test_each_form_parses_to_its_meaning(q: str, expected: Node) -> None:
    assert parse(q) == expected


# ----------------------------------------------------------------------------- operators

OPERATORS: list[tuple[str, Node]] = [
    ("a:1 AND b:2", And((A, B))),
    ("a:1 && b:2", And((A, B))),
    ("a:1 OR b:2", Or((A, B))),
    ("a:1 || b:2", Or((A, B))),
    ("a:1 b:2", Or((A, B))),  # default operator OR
    ("NOT a:1", Not(A)),
    ("!a:1", Not(A)),
    ("! a:1", Not(A)),
    ("-a:1", Not(A)),
    ("+a:1", A),
    ("NOT(a:1)", Not(A)),
    # precedence: NOT > AND > OR
    ("a:1 OR b:2 AND c:3", Or((A, And((B, C))))),
    ("a:1 AND b:2 OR c:3", Or((And((A, B)), C))),
    ("NOT a:1 AND b:2", And((Not(A), B))),
    ("a:1 AND NOT b:2", And((A, Not(B)))),
    ("NOT a:1 OR b:2", Or((Not(A), B))),
    ("a:1 && b:2 || !c:3", Or((And((A, B)), Not(C)))),
    ("(a:1 OR b:2) AND c:3", And((Or((A, B)), C))),
    ("a:1 AND b:2 AND c:3", And((A, B, C))),
    ("a:1 AND (b:2 AND c:3)", And((A, B, C))),  # same-kind nesting is flattened
    ("(a:1 OR b:2) OR (c:3 OR d:4)", Or((A, B, C, D))),
    ("(a:1 b:2) c:3", Or((A, B, C))),
    ("a:1 b:2 AND c:3", Or((A, And((B, C))))),
    ("a:1 OR b:2 c:3", Or((A, B, C))),
    # juxtaposition with prefixes: a BoolQuery
    ("+a:1 -b:2 c:3", BoolQuery(must=(A,), should=(C,), must_not=(B,))),
    ("+a:1 +b:2", BoolQuery(must=(A, B))),
    ("a:1 NOT b:2", BoolQuery(should=(A,), must_not=(B,))),
    ("a:1 !b:2", BoolQuery(should=(A,), must_not=(B,))),
    ("a:1 - b:2", BoolQuery(should=(A,), must_not=(B,))),
    ("-a:1 -b:2", BoolQuery(must_not=(A, B))),
    ("NOT a:1 NOT b:2", BoolQuery(must_not=(A, B))),
    ("a:1 -(b:2 c:3)", BoolQuery(should=(A,), must_not=(Or((B, C)),))),
    ("+(a:1 OR b:2) -c:3", BoolQuery(must=(Or((A, B)),), must_not=(C,))),
    ("a:1 OR b:2 -c:3", BoolQuery(should=(Or((A, B)),), must_not=(C,))),
    # inside AND/OR a prefix is just NOT (or nothing)
    ("a:1 AND -b:2", And((A, Not(B)))),
    ("a:1 AND +b:2", And((A, B))),
    ("a:1 OR -b:2", Or((A, Not(B)))),
    ("-a:1 AND b:2", And((Not(A), B))),
    ("NOT (NOT a:1)", Not(Not(A))),
    ("-*:*", Not(MatchAll())),
    ("* -a:1", BoolQuery(should=(MatchAll(),), must_not=(A,))),
    # whitespace is optional around parentheses
    ("(a:1)AND(b:2)", And((A, B))),
    ("a:1(b:2)", Or((A, B))),
    ('a:"x"b:2', Or((T("a", "x", True), B))),
]


@pytest.mark.parametrize(("q", "expected"), OPERATORS, ids=[q for q, _ in OPERATORS])
def test_operators_and_precedence(q: str, expected: Node) -> None:
    assert parse(q) == expected


def test_the_guides_queries() -> None:
    assert parse("*") == MatchAll()
    assert parse("event.type:heartbeat") == T("event.type", "heartbeat")
    assert parse("type:sessionTimeout") == T("type", "sessionTimeout")
    assert parse('_m1.ip:("128.218.229.26" OR "72.200.1.74") AND time.utc.month:3') == And(
        (
            Or((T("_m1.ip", "128.218.229.26", True), T("_m1.ip", "72.200.1.74", True))),
            T("time.utc.month", "3"),
        )
    )


# ----------------------------------------------------------------------------- errors

# (query, 1-based character the message points at, words the message must contain)
ERRORS: list[tuple[str, int, str]] = [
    ("a:1 AND (b:2", 13, "expected ')' to close the '(' at character 9"),
    ("(a:1", 5, "expected ')'"),
    ("f:(a", 5, "expected ')'"),
    ("a:1)", 4, "unexpected ')'"),
    (")", 1, "unexpected ')'"),
    ("()", 1, "empty parentheses"),
    ("f:()", 3, "empty parentheses"),
    ("a:1 AND", 8, "expected a clause after AND"),
    ("a:1 OR", 7, "expected a clause after OR"),
    ("a:1 AND )", 9, "expected a clause after AND, found ')'"),
    ("AND a:1", 1, "expected a clause, found AND"),
    ("a:1 OR OR b:1", 8, "expected a clause, found OR"),
    ("a:1 AND || b:1", 9, "expected a clause, found ||"),
    ("-", 2, "expected a clause after -"),
    ("a:1 NOT", 8, "expected a clause after NOT"),
    ("NOT NOT a:1", 5, "two operators in a row"),
    ("+-a:1", 2, "two operators in a row"),
    ("!!a:1", 2, "two operators in a row"),
    ("foo", 1, "'foo' has no field; write field:foo"),
    ("a:1 bar", 5, "'bar' has no field"),
    ("a:1 and b:2", 5, "operators are uppercase: AND"),
    ("a:1 or b:2", 5, "operators are uppercase: OR"),
    ('"quoted"', 1, '"quoted" has no field'),
    ("[1 TO 5]", 1, "a range needs a field"),
    ("f:", 3, "expected a value after f:"),
    ("f:   ", 6, "expected a value after f:"),
    ("f:AND", 3, 'found AND (quote it: "AND")'),
    ("f:)", 3, "expected a value after f:, found ')'"),
    ("field:2021-02-23T19:18:04.399Z", 20, "quote a value that contains ':'"),
    ("f:a:b", 4, "unexpected ':'"),
    (":x", 1, "unexpected ':'"),
    ("*:foo", 3, "only *:* can use the field name *"),
    ("f*:x", 1, "field names cannot contain * or ?"),
    ("f:*abc", 3, "leading wildcards (f:*abc) are not supported"),
    ("f:?bc", 3, "leading wildcards"),
    ("f:(a OR *b)", 9, "leading wildcards"),
    ("f:a\\*b*", 3, "cannot also contain an escaped *"),
    ("f:/re.*/", 3, "regular expressions (/.../) are not supported"),
    ("f:abc~", 6, "fuzzy and proximity searches (~) are not supported"),
    ("f:abc~2", 6, "fuzzy"),
    ('f:"a b"~3', 8, "proximity"),
    ("f:abc^", 6, "expected a number after ^"),
    ("f:abc^x", 6, "expected a number after ^"),
    ("^2", 1, "unexpected '^'"),
    ("a:1 \\", 5, "escapes nothing"),
    ('f:"abc', 3, "unterminated quote"),
    ('f:"abc\\"', 3, "unterminated quote"),
    ("f:[1 5]", 6, "expected TO"),
    ("f:[1 to 5]", 6, "expected TO"),
    ("f:[1 TO", 8, "expected the end of the range"),
    ("f:[", 4, "expected the start of the range"),
    ("f:[1 TO 5", 10, "expected ']' or '}' to close the range at character 3"),
    ("f:[1 TO 5)", 11, "expected ']' or '}'"),
    ("f:[1 TO 5 6]", 11, "expected ']' or '}'"),
    ("a:1 ] b:2", 5, "unexpected ']'"),
    ("{", 1, "a range needs a field"),
    ("{!lucene}a:1", 1, "local parameters ({!...}) are not supported"),
]


@pytest.mark.parametrize(("q", "position", "words"), ERRORS, ids=[q for q, _, _ in ERRORS])
def test_syntax_errors_say_what_and_where(q: str, position: int, words: str) -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        parse(q)
    error = caught.value
    assert error.message.startswith(f"at character {position}: "), error.message
    assert words in error.message
    assert error.position == position
    assert (error.status, error.code) == (400, "query_syntax")
    assert isinstance(error, BadRequest)


# ----------------------------------------------------------------------------- limits


def nested(depth: int, inner: str = "a:1") -> str:
    return "(" * depth + inner + ")" * depth


def test_nesting_up_to_the_limit_is_fine() -> None:
    assert parse(nested(32)) == A
    assert parse("f:" + nested(32, "x")) == T("f", "x")
    assert parse(nested(3), max_depth=3) == A


@pytest.mark.parametrize(
    "q",
    [nested(33), "f:" + nested(33, "x"), "(" * 33, nested(31, "f:((x))"), nested(33, "NOT a:1")],
    ids=["parens", "field-group", "unclosed", "mixed", "with-not"],
)
def test_nesting_past_the_limit_is_too_complex(q: str) -> None:
    with pytest.raises(QueryTooComplex) as caught:
        parse(q)
    assert (caught.value.status, caught.value.code) == (400, "query_too_complex")
    assert "nested deeper than 32 levels" in caught.value.message


def test_a_custom_depth_limit() -> None:
    with pytest.raises(QueryTooComplex, match="deeper than 2 levels"):
        parse(nested(3), max_depth=2)


@pytest.mark.parametrize(
    "q",
    [
        nested(10_000),
        "(" * 10_000,
        "f:(" * 10_000,
        "NOT (" * 10_000,
        "(a:1 AND " * 10_000,
        nested(10_000, "x"),
    ],
    ids=["balanced", "open-only", "field-groups", "not", "and-chain", "balanced-bad-inner"],
)
def test_ten_thousand_parentheses_are_refused_not_recursed(q: str) -> None:
    # Must return at all (no RecursionError, no hang): the depth is checked as each '('
    # is read, before the parser descends.
    with pytest.raises(QueryTooComplex):
        parse(q)


def test_clause_limit() -> None:
    values = " ".join(f"v{i}" for i in range(1024))
    parsed = parse(f"f:({values})")
    assert isinstance(parsed, Or) and len(parsed.clauses) == 1024
    with pytest.raises(QueryTooComplex) as caught:
        parse(f"f:({values} one_more)")
    assert "more than 1024 clauses" in caught.value.message
    assert caught.value.code == "query_too_complex"


def test_every_leaf_kind_counts_towards_the_clause_limit() -> None:
    q = 'a:1 f:* f:a* f:[1 TO 2] f:"x" *'
    assert isinstance(parse(q, max_terms=6), Or)
    with pytest.raises(QueryTooComplex):
        parse(q, max_terms=5)


def test_huge_inputs_fail_or_parse_without_blowing_up() -> None:
    n = 200_000
    assert parse("f:" + "a" * n) == T("f", "a" * n)
    assert parse('f:"' + "a b " * n + '"') == T("f", "a b " * n, True)
    with pytest.raises(QueryTooComplex):
        parse("f:a " * n)
    with pytest.raises(QuerySyntaxError):
        parse('f:"' + "\\x" * n)
    with pytest.raises(QuerySyntaxError):
        parse("-" * n)


# ----------------------------------------------------------------------------- sort and fl


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        (None, []),
        ("", []),
        ("_m1.receivedUTC desc", [("_m1.receivedUTC", True)]),
        ("_m1key asc", [("_m1key", False)]),
        ("f1 desc, f2 asc", [("f1", True), ("f2", False)]),
        ("f1 DESC,f2   Asc", [("f1", True), ("f2", False)]),
        ("f1", [("f1", False)]),
        ("f1 desc,", [("f1", True)]),
        ("score desc, f1 asc", [("f1", False)]),
        ("f1 desc, f1 asc", [("f1", True)]),
    ],
)
def test_sort(sort: str | None, expected: list[tuple[str, bool]]) -> None:
    assert parse_sort(sort) == expected


@pytest.mark.parametrize(
    ("sort", "words"),
    [
        ("f1 down", "direction must be asc or desc"),
        ("f1 desc f2 asc", "separate sort fields with commas"),
        ("sum(a,b) desc", "not a field name"),
    ],
)
def test_bad_sort_is_a_400(sort: str, words: str) -> None:
    with pytest.raises(BadRequest, match=words) as caught:
        parse_sort(sort)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("fl", "expected"),
    [
        (None, None),
        ("", None),
        (" , ", None),
        ("*", None),
        ("a,*", None),
        ("time.utc.month", ["time.utc.month"]),
        ("a,b", ["a", "b"]),
        ("a b", ["a", "b"]),
        (" a , b  c,,", ["a", "b", "c"]),
        ("a,score,b", ["a", "b"]),
        ("score", []),
        ("a,a,b", ["a", "b"]),
        ("_m1.*", ["_m1.*"]),
    ],
)
def test_fl(fl: str | None, expected: list[str] | None) -> None:
    assert parse_fl(fl) == expected


@pytest.mark.parametrize("fl", ["alias:field", "sum(a,b)", "[docid]"])
def test_fl_refuses_aliases_functions_and_transformers(fl: str) -> None:
    with pytest.raises(BadRequest, match="not a field name"):
        parse_fl(fl)


# ----------------------------------------------------------------------------- properties

# Every character a bare word must escape, plus whitespace (checked with isspace()).
_SPECIAL = set('\\+-!():^[]"{}~*?/')
_KEYWORDS = {"AND", "OR", "NOT", "&&", "||"}


def escape_word(text: str) -> str:
    out = "".join("\\" + c if c in _SPECIAL or c.isspace() else c for c in text)
    return "\\" + out if out in _KEYWORDS else out


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def escape_range_end(text: str) -> str:
    if text == "*":
        return "\\*"
    return "".join("\\" + c if c in '\\]}"' or c.isspace() else c for c in text)


def render(node: Node, draw_choice) -> str:
    """Query text for a node; every compound child is parenthesised."""

    def child(n: Node) -> str:
        return "(" + render(n, draw_choice) + ")"

    match node:
        case MatchAll():
            return draw_choice(["*:*", "*"])
        case Term(field, value, phrase):
            shown = quote(value) if phrase else escape_word(value)
            return f"{escape_word(field)}:{shown}"
        case Wildcard(field, pattern):
            shown = "".join(c if c in "*?" else escape_word(c) for c in pattern)
            return f"{escape_word(field)}:{shown}"
        case Exists(field):
            return f"{escape_word(field)}:*"
        case Range(field, low, high, include_low, include_high):

            def end(value: str | None) -> str:
                if value is None:
                    return "*"
                if value == "":
                    return quote(value)
                return draw_choice([quote(value), escape_range_end(value)])

            opening = "[" if include_low else "{"
            closing = "]" if include_high else "}"
            return f"{escape_word(field)}:{opening}{end(low)} TO {end(high)}{closing}"
        case Not(clause):
            return draw_choice(["NOT ", "!", "-", "NOT"]) + child(clause)
        case And(clauses):
            op = draw_choice([" AND ", " && ", " AND"])
            return op.join(child(c) for c in clauses)
        case Or(clauses):
            op = draw_choice([" OR ", " || ", " "])
            return op.join(child(c) for c in clauses)
        case BoolQuery(must, should, must_not):
            parts = [("+", c) for c in must] + [("", c) for c in should]
            parts += [(draw_choice(["-", "NOT ", "!"]), c) for c in must_not]
            return " ".join(prefix + child(c) for prefix, c in parts)
    raise AssertionError(node)


def normal(node: Node) -> Node:
    """The tree the parser builds for a rendering of node: flattened, single clauses unwrapped."""
    match node:
        case Not(clause):
            return Not(normal(clause))
        case And(clauses) | Or(clauses):
            kind = type(node)
            flat: list[Node] = []
            for c in map(normal, clauses):
                flat.extend(c.clauses if isinstance(c, kind) else (c,))
            return kind(tuple(flat))
        case BoolQuery(must, should, must_not):
            if not must and not must_not:
                return normal(Or(should)) if len(should) > 1 else normal(should[0])
            if len(must) + len(should) + len(must_not) == 1:
                return normal(must[0]) if must else Not(normal(must_not[0]))
            return BoolQuery(
                tuple(map(normal, must)), tuple(map(normal, should)), tuple(map(normal, must_not))
            )
    return node


def depth(node: Node) -> int:
    match node:
        case Not(clause):
            return 1 + depth(clause)
        case And(clauses) | Or(clauses):
            return 1 + max(map(depth, clauses))
        case BoolQuery(must, should, must_not):
            return 1 + max(map(depth, must + should + must_not))
    return 0


_text = st.text(min_size=1, max_size=8)
_fields = st.one_of(
    st.sampled_from(["a", "event.type", "_m1.geo.country_iso_code", "x-y", "AND", "or"]),
    _text,
)


@st.composite
def wildcard_patterns(draw) -> str:
    no_wild = st.text(min_size=1, max_size=5).filter(lambda s: "*" not in s and "?" not in s)
    pattern = draw(no_wild)
    for _ in range(draw(st.integers(1, 3))):
        pattern += draw(st.sampled_from("*?")) + draw(st.one_of(st.just(""), no_wild))
    return pattern


_leaves = st.one_of(
    st.builds(Term, _fields, _text, st.just(False)),
    st.builds(Term, _fields, st.text(max_size=8), st.just(True)),
    st.builds(Wildcard, _fields, wildcard_patterns()),
    st.builds(Exists, _fields),
    st.builds(
        Range,
        _fields,
        st.none() | st.text(max_size=8),
        st.none() | st.text(max_size=8),
        st.booleans(),
        st.booleans(),
    ),
    st.just(MatchAll()),
)


def _compound(children):
    some = st.lists(children, min_size=2, max_size=4).map(tuple)
    few = st.lists(children, max_size=2).map(tuple)
    one_or_more = st.lists(children, min_size=1, max_size=2).map(tuple)
    # A BoolQuery of only should clauses is an Or; these always have a must or must_not.
    return st.one_of(
        children.map(Not),
        some.map(And),
        some.map(Or),
        st.builds(BoolQuery, one_or_more, few, few),
        st.builds(BoolQuery, few, few, one_or_more),
    )


queries = st.recursive(_leaves, _compound, max_leaves=12)


@settings(max_examples=400)
@given(queries, st.data())
def test_parse_of_render_is_the_same_query(node: Node, data) -> None:
    assume(depth(node) <= 15)  # each level adds one '(' when rendered
    choice = data.draw(st.randoms(use_true_random=False))
    text = render(node, choice.choice)
    assert parse(text) == normal(node), text


_ALPHABET = st.sampled_from(
    [*'ab1.:*?"\\()[]{}+-!^~/ &|', "AND", "OR", "NOT", "TO", " TO ", "f:", "\t", "é"]
)


@settings(max_examples=600)
@given(st.one_of(st.text(), st.lists(_ALPHABET, max_size=40).map("".join)))
def test_any_text_gives_a_query_or_a_400(text: str) -> None:
    try:
        node = parse(text, max_depth=4, max_terms=16)
    except BadRequest as error:
        assert error.status == 400
        assert error.code in ("query_syntax", "query_too_complex")
        assert error.message.startswith("at character ")
    else:
        assert isinstance(node, (MatchAll, Term, Wildcard, Exists, Range, Not, And, Or, BoolQuery))


_TOKENS = st.sampled_from(
    [
        "a:1",
        "f:x*",
        'f:"q"',
        "f:[1 TO *}",
        "f:*",
        "*",
        "AND",
        "OR",
        "NOT",
        "&&",
        "||",
        "!",
        "+",
        "-",
        "(",
        ")",
        "f:(",
        "^2",
        "x",
    ]
)


@settings(max_examples=600)
@given(st.lists(_TOKENS, max_size=25), st.sampled_from([" ", ""]))
def test_any_token_soup_gives_a_query_or_a_400(tokens: list[str], sep: str) -> None:
    try:
        parse(sep.join(tokens))
    except BadRequest as error:
        assert error.code in ("query_syntax", "query_too_complex")


# ----------------------------------------------------------------------------- docs

DOCS = Path(__file__).resolve().parent.parent / "docs" / "query.md"
_EXAMPLE_BLOCK = re.compile(r"^```query\n(.*?)^```", re.MULTILINE | re.DOTALL)


def doc_examples() -> list[str]:
    blocks = _EXAMPLE_BLOCK.findall(DOCS.read_text())
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_the_docs_have_examples() -> None:
    assert len(doc_examples()) >= 10


@pytest.mark.parametrize("q", doc_examples())
def test_every_example_in_the_docs_parses(q: str) -> None:
    parse(q)
