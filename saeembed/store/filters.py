"""Filter expressions typed by users (`--where "source = 'curated' and stars >= 4"`), parsed safely.

The text is tokenised and parsed here into a small tree; column names are checked against an
allow-list and values stay values. The tree then becomes a polars expression (or SQL with bound
parameters), so no user text is ever pasted into a query. It lives in the store because it is the
one place that turns user text into SQL.

Grammar (keywords are case-insensitive):

    expr    := and_ ("or" and_)*
    and_    := not_ ("and" not_)*
    not_    := "not" not_ | "(" expr ")" | test
    test    := column op value
             | column ["not"] "in" "(" value ("," value)* ")"
             | column "is" ["not"] "null"
             | column ["not"] "contains" 'text'         (substring, any case)
             | column ["not"] ("like" | "ilike") 'pattern'   (% and _ as in SQL; ilike: any case)
             | column ["not"] "matches" 'regex' | column ("~" | "!~") 'regex'
             | column "between" value "and" value
    op      := = | == | != | <> | < | <= | > | >=
    column  := name | "quoted name" | `quoted name`     (`text` is the document's text)
    value   := 'string' | number | true | false | null  (text in single quotes; '' is a quote)

Limits, each refused with a one-line FilterError: MAX_LENGTH characters, MAX_DEPTH levels of `(`
and `not`, MAX_PATTERN characters per contains/like/regex pattern, and one kind of value per IN list
or BETWEEN (text, numbers or true/false; ints and floats together are numbers). A regex must compile
with Python's `re` and with the matcher (no look-around or back-references: matching stays linear).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import polars as pl

from saeembed.errors import FilterError
from saeembed.store.filter_types import check_regex, check_types

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^']|'')*')
  | (?P<qident>"(?:[^"]|"")*"|`[^`]*`)
  | (?P<num>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))
  | (?P<op><=|>=|!~|!=|<>|==|=|<|>|~)
  | (?P<punct>[(),])
  | (?P<word>[^\W\d][\w.]*)
    """,
    re.VERBOSE | re.UNICODE,
)
_KEYWORDS = {"and", "or", "not", "in", "is", "null", "like", "ilike", "contains", "matches", "between", "true", "false"}
MAX_LENGTH = 10_000
MAX_PATTERN = 1_000  # characters in one contains / like / regex pattern
MAX_DEPTH = 64  # nested "(" and "not"; deeper would exhaust Python's stack in the parser


@dataclass(frozen=True)
class Test:
    column: str
    op: str  # = != < <= > >= in not_in is_null not_null between, and TEXT_OPS (each with a not_ form)
    values: tuple


@dataclass(frozen=True)
class Bool:
    op: str  # and, or, not
    args: tuple


Node = Test | Bool
TEXT_OPS = ("contains", "like", "ilike", "matches")  # tests of a text pattern


class _DoubleQuoted(str):
    """A column name written in double quotes: said in errors, since users often mean a 'value'."""


@dataclass(frozen=True)
class Filter:
    """A parsed filter: the tree, the text it came from, and the columns it reads."""

    text: str
    tree: Node

    @property
    def columns(self) -> set[str]:
        out: set[str] = set()
        _collect(self.tree, out)
        return out

    def to_polars(self, schema: dict | None = None) -> pl.Expr:
        """A polars expression; rows where a compared value is null count as not matching.
        schema (column -> dtype): lets 'YYYY-MM-DD' strings compare with date/datetime columns."""
        return _to_polars(self.tree, schema or {}).fill_null(False)

    def to_sql(self, column_sql) -> tuple[str, list]:
        """SQL text with `?` placeholders and its parameters. column_sql(name) -> the quoted column
        reference to use (the caller's own, already checked identifier)."""
        params: list = []
        return _to_sql(self.tree, column_sql, params), params

    def mask(self, frame: pl.DataFrame) -> pl.Series:
        """Boolean Series: which rows of `frame` match."""
        absent = sorted(self.columns - set(frame.columns))
        if absent:  # the caller did not read it: say so, not a polars message about a missing column
            raise FilterError(f"filter {self.text!r} names column {absent[0]!r}, which this command does not read")
        check_types(self.tree, dict(frame.schema), self.text)
        try:
            return frame.select(self.to_polars(dict(frame.schema)).alias("m"))["m"]
        except (pl.exceptions.PolarsError, TypeError, ValueError) as e:
            raise FilterError(f"filter {self.text!r} does not fit the column types: {str(e).splitlines()[0]}") from None

    def apply(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(self.mask(frame))


def parse_filter(text: str, columns: Iterable[str]) -> Filter:
    """Parse `text` and check every column it names is one of `columns` (the allow-list)."""
    if not isinstance(text, str) or not text.strip():
        raise FilterError("empty filter expression")
    if len(text) > MAX_LENGTH:
        raise FilterError(f"filter expression is {len(text):,} characters long; the limit is {MAX_LENGTH:,}")
    allowed = list(columns)
    flt = Filter(text, _Parser(_tokenize(text), text).parse())
    unknown = sorted(flt.columns - set(allowed))
    if unknown:
        raise FilterError(
            f"unknown column {unknown[0]!r} in filter {text!r}; columns you can filter on: "
            + (", ".join(sorted(allowed)) or "(none)")
        )
    return flt


def _collect(node: Node, out: set[str]) -> None:
    if isinstance(node, Test):
        out.add(node.column)
    else:
        for a in node.args:
            _collect(a, out)


def _tokenize(text: str) -> list[tuple[str, object]]:
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FilterError(f"cannot read filter {text!r} at position {pos}: unexpected {text[pos]!r}")
        pos = m.end()
        kind = m.lastgroup
        raw = m.group()
        if kind == "ws":
            continue
        if kind == "str":
            tokens.append(("value", raw[1:-1].replace("''", "'")))
        elif kind == "qident":
            name = _DoubleQuoted(raw[1:-1].replace('""', '"')) if raw[0] == '"' else raw[1:-1]
            tokens.append(("column", name))
        elif kind == "num":
            tokens.append(("value", float(raw) if any(c in raw for c in ".eE") else int(raw)))
        elif kind == "op":
            tokens.append(("op", {"==": "=", "<>": "!=", "~": "matches", "!~": "not_matches"}.get(raw, raw)))
        elif kind == "punct":
            tokens.append((raw, raw))
        else:
            low = raw.lower()
            if low in ("true", "false"):
                tokens.append(("value", low == "true"))
            elif low in _KEYWORDS:
                tokens.append(("kw", low))
            else:
                tokens.append(("column", raw))
    return tokens


class _Parser:
    def __init__(self, tokens: list, text: str):
        self.tokens, self.text, self.i, self.depth = tokens, text, 0, 0

    def parse(self) -> Node:
        node = self.expr()
        if self.i != len(self.tokens):
            self.fail(f"unexpected {self.show(self.tokens[self.i])}")
        return node

    def fail(self, why: str):
        raise FilterError(f"cannot parse filter {self.text!r}: {why}")

    @staticmethod
    def show(tok) -> str:
        kind, value = tok
        return repr(value) if kind != "kw" else value.upper()

    def peek(self, kind: str, value=None) -> bool:
        if self.i >= len(self.tokens):
            return False
        k, v = self.tokens[self.i]
        return k == kind and (value is None or v == value)

    def take(self, kind: str, value=None, what: str | None = None):
        if not self.peek(kind, value):
            got = self.show(self.tokens[self.i]) if self.i < len(self.tokens) else "the end"
            self.fail(f"expected {what or value or kind}, got {got}")
        self.i += 1
        return self.tokens[self.i - 1][1]

    def expr(self) -> Node:
        args = [self.and_()]
        while self.peek("kw", "or"):
            self.i += 1
            args.append(self.and_())
        return args[0] if len(args) == 1 else Bool("or", tuple(args))

    def and_(self) -> Node:
        args = [self.not_()]
        while self.peek("kw", "and"):
            self.i += 1
            args.append(self.not_())
        return args[0] if len(args) == 1 else Bool("and", tuple(args))

    def not_(self) -> Node:
        if self.peek("kw", "not") or self.peek("("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise FilterError(f"filter expression nests '(' and NOT more than {MAX_DEPTH} levels deep; "
                                  "write it flatter (e.g. `a = 1 or a = 2` needs no brackets)")
            if self.peek("kw", "not"):
                self.i += 1
                node = Bool("not", (self.not_(),))
            else:
                self.i += 1
                node = self.expr()
                self.take(")", what="')'")
            self.depth -= 1
            return node
        return self.test()

    def one_kind(self, column: str, values: list, where: str) -> tuple:
        """The values of an IN list or BETWEEN, all of one kind: text, numbers (ints and floats together
        become floats) or true/false; nulls go with any. Mixed kinds are refused, naming the odd value."""
        kinds = [(_kind(v), v) for v in values if v is not None]
        if kinds and any(k != kinds[0][0] for k, _ in kinds):
            odd = next(v for k, v in kinds if k != kinds[0][0])
            self.fail(f"the {where} of {column!r} mixes {kinds[0][0]} ({_show_value(kinds[0][1])}) with "
                      f"{_kind(odd)} ({_show_value(odd)}); use one kind, e.g. quote every value to compare "
                      "as text")
        if kinds and kinds[0][0] == "numbers" and any(isinstance(v, float) for _, v in kinds):
            values = [float(v) if v is not None else None for v in values]
        return tuple(values)

    def value(self, column: str):
        if self.peek("kw", "null"):
            self.i += 1
            return None
        if self.peek("column"):  # `x = "a"` or `x = a`: a value written as a column name
            name = self.tokens[self.i][1]
            q = "'" + name.replace("'", "''") + "'"
            if isinstance(name, _DoubleQuoted):
                self.fail(f"values take single quotes: write {q}, not \"{name}\" (double quotes name a column)")
            self.fail(f"{name!r} is not a value: text values take single quotes, e.g. {column} = {q}")
        return self.take("value", what="a value ('text', a number, true, false or null)")

    def pattern(self, column: str, op: str) -> Test:
        """The quoted pattern of a contains / like / regex test, checked (a bad regex is said here)."""
        word = "regex" if op == "matches" else op.upper()
        if self.peek("column") or not self.peek("value") or not isinstance(self.tokens[self.i][1], str):
            self.fail(f"{word} needs a pattern in single quotes, e.g. {column} {op} 'refund'")
        text = self.take("value")
        if len(text) > MAX_PATTERN:
            raise FilterError(f"the {word} pattern on {column!r} is {len(text):,} characters long; the limit is "
                              f"{MAX_PATTERN:,}")
        if op == "matches":
            check_regex(text, self.text)
        return text

    def test(self) -> Node:
        column = str(self.take("column", what="a column name"))
        if self.peek("op"):
            op = self.take("op")
            if op in ("matches", "not_matches"):
                return Test(column, op, (self.pattern(column, "matches"),))
            value = self.value(column)
            if value is None:
                self.fail(f"compare with null using `{column} is null` / `is not null`")
            return Test(column, op, (value,))
        negate = False
        if self.peek("kw", "not"):
            self.i += 1
            negate = True
        if self.peek("kw", "in"):
            self.i += 1
            self.take("(", what="'('")
            values = [self.value(column)]
            while self.peek(","):
                self.i += 1
                values.append(self.value(column))
            self.take(")", what="')'")
            return Test(column, "not_in" if negate else "in", self.one_kind(column, values, "IN list"))
        for op in TEXT_OPS:
            if self.peek("kw", op):
                self.i += 1
                return Test(column, ("not_" if negate else "") + op, (self.pattern(column, op),))
        if negate:
            self.fail("expected IN, CONTAINS, LIKE, ILIKE or MATCHES after NOT")
        if self.peek("kw", "is"):
            self.i += 1
            isnot = self.peek("kw", "not")
            if isnot:
                self.i += 1
            self.take("kw", "null", what="NULL")
            return Test(column, "not_null" if isnot else "is_null", ())
        if self.peek("kw", "between"):
            self.i += 1
            lo = self.value(column)
            self.take("kw", "and", what="AND")
            hi = self.value(column)
            return Test(column, "between", self.one_kind(column, [lo, hi], "BETWEEN"))
        got = self.show(self.tokens[self.i]) if self.i < len(self.tokens) else "the end"
        self.fail(f"expected a comparison after {column!r}, got {got}")


def _kind(value) -> str:
    if isinstance(value, bool):
        return "true/false"
    return "numbers" if isinstance(value, (int, float)) else "text"


def _show_value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _like_regex(pattern: str) -> str:
    out = []
    for ch in pattern:
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return "(?s)^" + "".join(out) + "$"


def _lit(value, dtype) -> pl.Expr:
    if isinstance(value, str) and dtype is not None and dtype.is_temporal():
        return pl.lit(value).str.to_datetime().cast(dtype) if dtype != pl.Date else pl.lit(value).str.to_date()
    return pl.lit(value)


def _to_polars(node: Node, schema: dict) -> pl.Expr:
    if isinstance(node, Bool):
        parts = [_to_polars(a, schema) for a in node.args]
        if node.op == "not":
            return ~parts[0]
        # flat, not a chain of thousands of nested & / | (same three-valued logic as & and |)
        return pl.all_horizontal(parts) if node.op == "and" else pl.any_horizontal(parts)
    col, v = pl.col(node.column), node.values
    op, dtype = node.op, schema.get(node.column)
    if op in ("=", "!=", "<", "<=", ">", ">="):
        value = _lit(v[0], dtype)
        return {"=": col == value, "!=": col != value, "<": col < value, "<=": col <= value,
                ">": col > value, ">=": col >= value}[op]
    if op in ("in", "not_in"):
        vals = [x for x in v if x is not None]
        if vals and _kind(vals[0]) == "numbers" and (dtype is None or dtype.is_numeric()) and not (
                dtype is not None and dtype.is_integer() and all(isinstance(x, int) for x in vals)):
            col, vals = col.cast(pl.Float64), [float(x) for x in vals]  # polars' is_in wants one dtype
        expr = col.is_in(vals) if vals else pl.lit(False)
        if None in v:
            expr = expr | col.is_null()
        return ~expr if op == "not_in" else expr
    if op == "is_null":
        return col.is_null()
    if op == "not_null":
        return col.is_not_null()
    if op.removeprefix("not_") in TEXT_OPS:
        text, base = col.cast(pl.Utf8), op.removeprefix("not_")
        if base == "contains":
            expr = text.str.to_lowercase().str.contains(v[0].lower(), literal=True)
        elif base == "matches":
            expr = text.str.contains(v[0])
        else:
            expr = text.str.contains(("(?i)" if base == "ilike" else "") + _like_regex(v[0]))
        return ~expr if op.startswith("not_") else expr
    if op == "between":
        return (col >= _lit(v[0], dtype)) & (col <= _lit(v[1], dtype))
    raise FilterError(f"unsupported operator {op}")  # pragma: no cover - the parser makes only the above


def _to_sql(node: Node, column_sql, params: list) -> str:
    if isinstance(node, Bool):
        parts = [_to_sql(a, column_sql, params) for a in node.args]
        if node.op == "not":
            return f"(NOT {parts[0]})"
        return "(" + f" {node.op.upper()} ".join(parts) + ")"
    c, v, op = column_sql(node.column), node.values, node.op
    if op in ("=", "!=", "<", "<=", ">", ">="):
        params.append(v[0])
        return f"({c} {op} ?)"
    if op in ("in", "not_in"):
        params.append([x for x in v if x is not None])
        if op == "not_in":  # a null value matches neither IN nor NOT IN, as in polars
            return f"({c} NOT IN (SELECT unnest(?))" + (f" AND {c} IS NOT NULL)" if None in v else ")")
        return f"({c} IN (SELECT unnest(?))" + (f" OR {c} IS NULL)" if None in v else ")")
    if op == "is_null":
        return f"({c} IS NULL)"
    if op == "not_null":
        return f"({c} IS NOT NULL)"
    if op.removeprefix("not_") in TEXT_OPS:
        base, neg = op.removeprefix("not_"), "NOT " if op.startswith("not_") else ""
        params.append(v[0].lower() if base == "contains" else v[0])
        if base == "contains":
            return f"({neg}contains(lower({c}::VARCHAR), ?))"
        if base == "matches":
            return f"({neg}regexp_matches({c}::VARCHAR, ?))"
        return f"({c}::VARCHAR {neg}{base.upper()} ?)"
    if op == "between":
        params.extend(v)
        return f"({c} BETWEEN ? AND ?)"
    raise FilterError(f"unsupported operator {op}")  # pragma: no cover
