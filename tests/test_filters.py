import datetime as dt

import duckdb
import polars as pl
import pytest

from saeembed.errors import FilterError
from saeembed.store.filters import parse_filter

FRAME = pl.DataFrame({
    "source": ["curated", "web", None, "it's"],
    "stars": [5, 2, 4, 1],
    "when": [dt.date(2024, 1, 1), dt.date(2023, 1, 1), None, dt.date(2025, 5, 5)],
    "toxic": [False, True, False, True],
})

HOSTILE = [
    "source = 'x'; DROP TABLE t",
    "source = 'x' -- comment",
    "source = 'x' UNION SELECT * FROM read_csv('/etc/passwd')",
    "ATTACH '/tmp/evil.db'",
    "COPY t TO '/tmp/out.csv'",
    "read_csv('/etc/passwd') = 1",
    "source = 'a' OR 1=1",
    "stars = 1 /* */",
    "source = x'00'",
]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("source = 'curated' and stars >= 4", [True, False, False, False]),
        ("source == 'web' OR stars < 2", [False, True, False, True]),
        ("not (source in ('web', null))", [True, False, False, True]),
        ("source not in ('web')", [True, False, False, True]),
        ("when >= '2024-01-01'", [True, False, False, True]),
        ("source like 'cur%'", [True, False, False, False]),
        ("source like 'it''s'", [False, False, False, True]),
        ("stars between 2 and 4", [False, True, True, False]),
        ("source is null or stars > 4", [True, False, True, False]),
        ("source is not null and toxic = true", [False, True, False, True]),
        ('"stars" != 5 and `toxic` = false', [False, False, True, False]),
        ("stars >= 1.5e0", [True, True, True, False]),
    ],
)
def test_filters_select_the_right_rows(text, expected):
    assert parse_filter(text, FRAME.columns).mask(FRAME).to_list() == expected


@pytest.mark.parametrize("text", ["source = 'curated' and stars >= 4", "source not in ('web')", "source like 'cur%'",
                                  "stars between 2 and 4", "source is null or stars > 4", "not toxic = true"])
def test_sql_form_agrees_with_polars_form(text):
    f = parse_filter(text, FRAME.columns)
    sql, params = f.to_sql(lambda c: '"' + c + '"')
    con = duckdb.connect()
    con.register("t", FRAME.with_row_index("i").to_arrow())
    got = [r[0] for r in con.execute(f"SELECT i FROM t WHERE {sql} ORDER BY i", params).fetchall()]
    assert got == [i for i, m in enumerate(f.mask(FRAME).to_list()) if m]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_filters_are_refused(text):
    with pytest.raises(FilterError):
        parse_filter(text, FRAME.columns)


def test_sql_looking_values_are_data():
    frame = pl.DataFrame({"source": ["x'; DROP TABLE t; --", "ok"]})
    f = parse_filter("source = 'x''; DROP TABLE t; --'", frame.columns)
    assert f.mask(frame).to_list() == [True, False]
    sql, params = f.to_sql(lambda c: '"' + c + '"')
    assert "DROP" not in sql and params == ["x'; DROP TABLE t; --"]


def test_errors_say_what_is_wrong():
    with pytest.raises(FilterError, match="unknown column 'nope'.*source, stars"):
        parse_filter("nope = 1", FRAME.columns)
    with pytest.raises(FilterError, match="is null"):
        parse_filter("source = null", FRAME.columns)
    with pytest.raises(FilterError, match="expected"):
        parse_filter("(stars = 1", FRAME.columns)
    with pytest.raises(FilterError, match="empty"):
        parse_filter("  ", FRAME.columns)
    with pytest.raises(FilterError, match="'stars' holds numbers.*without quotes"):
        parse_filter("stars = 'five'", FRAME.columns).mask(FRAME)
    with pytest.raises(FilterError, match="limit"):
        parse_filter("stars = 1 or " * 2000 + "stars = 2", FRAME.columns)


# --- issue 19: deep nesting and mixed-type value lists are one clear FilterError, never a traceback ----


@pytest.mark.parametrize("text", ["(" * 330 + "stars = 1" + ")" * 330, "not " * 495 + "stars = 1",
                                  "(not " * 40 + "stars = 1" + ")" * 40, "(" * 65 + "stars = 1" + ")" * 65])
def test_deep_nesting_is_refused_before_the_stack_runs_out(text):
    assert len(text) < 10_000  # the length limit does not catch these: the depth limit must
    with pytest.raises(FilterError, match="nests.*64 levels"):
        parse_filter(text, FRAME.columns)


@pytest.mark.parametrize("text", ["(" * 64 + "stars = 5" + ")" * 64, "not " * 64 + "stars = 5"])
def test_nesting_up_to_the_limit_still_works(text):
    assert parse_filter(text, FRAME.columns).mask(FRAME).to_list() == [True, False, False, False]


def test_long_flat_chains_evaluate():
    text = " or ".join(["stars = 9"] * 700 + ["stars = 5"])
    f = parse_filter(text, FRAME.columns)
    assert f.mask(FRAME).to_list() == [True, False, False, False]
    sql, params = f.to_sql(lambda c: '"' + c + '"')
    con = duckdb.connect()
    con.register("t", FRAME.with_row_index("i").to_arrow())
    assert con.execute(f"SELECT i FROM t WHERE {sql}", params).fetchall() == [(0,)]


@pytest.mark.parametrize("text, bad", [
    ("source in ('curated', 1)", "mixes text \\('curated'\\) with numbers \\(1\\)"),
    ("stars in (1, 'two')", "mixes numbers \\(1\\) with text \\('two'\\)"),
    ("toxic in (true, 1)", "mixes true/false \\(true\\) with numbers \\(1\\)"),
    ("stars between 1 and 'z'", "BETWEEN of 'stars' mixes numbers"),
    ("source not in (null, 'a', 2.5)", "mixes text \\('a'\\) with numbers \\(2.5\\)"),
])
def test_mixed_type_lists_are_a_clear_error(text, bad):
    with pytest.raises(FilterError, match=bad):
        parse_filter(text, FRAME.columns)


FLOATS = pl.DataFrame({"n_chars": [50, 60, 70], "score": [1.0, 2.0, 2.5]})


@pytest.mark.parametrize("text, expected", [
    ("n_chars in (50, 60.5)", [True, False, False]),  # ints and floats together are numbers
    ("n_chars in (60, 70)", [False, True, True]),
    ("n_chars not in (50.0, null)", [False, True, True]),
    ("score in (1, 2)", [True, True, False]),  # int values against a float column
    ("score in (2.5, 7)", [False, False, True]),
    ("n_chars between 50 and 60.5", [True, True, False]),
])
def test_numeric_lists_match_int_and_float_columns(text, expected):
    f = parse_filter(text, FLOATS.columns)
    assert f.mask(FLOATS).to_list() == expected
    sql, params = f.to_sql(lambda c: '"' + c + '"')
    con = duckdb.connect()
    con.register("t", FLOATS.with_row_index("i").to_arrow())
    got = [r[0] for r in con.execute(f"SELECT i FROM t WHERE {sql} ORDER BY i", params).fetchall()]
    assert got == [i for i, m in enumerate(expected) if m]


def test_a_list_of_the_wrong_kind_for_the_column_is_a_filter_error():
    with pytest.raises(FilterError, match="'n_chars' holds numbers"):
        parse_filter("n_chars in ('a', 'b')", FLOATS.columns).mask(FLOATS)


# --- text tests: contains / like / ilike / regex, on `text` and any other column ----------------------

TEXTS = pl.DataFrame({
    "text": ["Please REFUND my double charge", "refunded already, thanks", "the cat sat", None, "50% off: it's a deal"],
    "lang": ["en", "en", "en", "de", "fr"],
    "stars": [1, 5, 3, 2, 4],
})


@pytest.mark.parametrize("text, expected", [
    ("text contains 'refund'", [True, True, False, False, False]),  # any case
    ("text not contains 'refund'", [False, False, True, False, True]),  # a null text matches neither
    ("text like '%REFUND%'", [True, False, False, False, False]),  # LIKE keeps case
    ("text ilike '%refund %'", [True, False, False, False, False]),
    ("text not like 'the%'", [True, True, False, False, True]),
    ("text ~ 'refund(ed)? al'", [False, True, False, False, False]),
    ("text matches '(?i)^please'", [True, False, False, False, False]),
    ("text !~ 'a'", [False, False, False, False, False]),
    ("text contains '50%'", [False, False, False, False, True]),  # no wildcards in contains
    ("text contains 'it''s'", [False, False, False, False, True]),
    ("lang contains 'E' and text contains 'cat'", [False, False, True, False, False]),
    ("stars contains '4'", [False, False, False, False, True]),  # any column, read as text
    ("text CONTAINS 'cat' or lang MATCHES 'd.'", [False, False, True, True, False]),
])
def test_text_tests_select_the_right_rows(text, expected):
    f = parse_filter(text, TEXTS.columns)
    assert f.mask(TEXTS).to_list() == expected
    sql, params = f.to_sql(lambda c: '"' + c + '"')  # the SQL form agrees, the pattern a bound parameter
    con = duckdb.connect()
    con.register("t", TEXTS.with_row_index("i").to_arrow())
    got = [r[0] for r in con.execute(f"SELECT i FROM t WHERE {sql} ORDER BY i", params).fetchall()]
    assert got == [i for i, m in enumerate(expected) if m]


def test_patterns_are_data_never_sql():
    f = parse_filter("text contains 'x''); DROP TABLE t; --' or text ~ '.*'' OR 1=1'", TEXTS.columns)
    sql, params = f.to_sql(lambda c: '"' + c + '"')
    assert "DROP" not in sql and "1=1" not in sql and params == ["x'); drop table t; --", ".*' OR 1=1"]


@pytest.mark.parametrize("text, message", [
    ("text ~ 'ref(und'", "bad regular expression 'ref\\(und'.*missing \\)"),
    ("text matches '[a-'", "bad regular expression"),
    ("text ~ '(a)\\1'", "back-reference"),
    ("text ~ '(?<=re)fund'", "look-around"),
    ("text contains refund", "pattern in single quotes, e.g. text contains 'refund'"),
    ("text like 5", "LIKE needs a pattern in single quotes"),
    ("text contains '" + "a" * 1001 + "'", "1,001 characters long; the limit is 1,000"),
    ("text not = 'a'", "expected IN, CONTAINS, LIKE, ILIKE or MATCHES after NOT"),
])
def test_bad_patterns_are_one_clear_error(text, message):
    with pytest.raises(FilterError, match=message):
        parse_filter(text, TEXTS.columns)


KINDS = pl.DataFrame({"toxic": [True, False], "category": ["insult", "threat"], "stars": [1.5, 4.0]})


@pytest.mark.parametrize("text, message", [
    ('category = "insult"', "values take single quotes: write 'insult', not \"insult\" \\(double quotes name a column\\)"),
    ("category = insult", "'insult' is not a value: text values take single quotes, e.g. category = 'insult'"),
    ('category in (\'threat\', "insult")', "write 'insult', not \"insult\""),
])
def test_values_written_as_names_say_to_use_single_quotes(text, message):
    with pytest.raises(FilterError, match=message):
        parse_filter(text, KINDS.columns)


@pytest.mark.parametrize("text, message", [
    ("toxic = 'yes'", "column 'toxic' is true/false, not 'yes': write `toxic = true` or `toxic = false` \\(no quotes\\)"),
    ("toxic in (1, 0)", "'toxic' is true/false"),
    ("stars >= '4'", "'stars' holds numbers, not '4': write numbers without quotes, e.g. `stars = 4`"),
    ("stars = true", "'stars' holds numbers, not true"),
    ("category = 3", "'category' holds text: quote the value, e.g. `category = '3'`"),
    ("category between 1 and 2", "'category' holds text"),
])
def test_values_of_the_wrong_kind_say_what_the_column_holds(text, message):
    f = parse_filter(text, KINDS.columns)  # the grammar is fine: the column's kind decides
    with pytest.raises(FilterError, match=message):
        f.mask(KINDS)


def test_right_kinds_still_match():
    assert parse_filter("toxic = true and stars > 1 and category = 'insult'", KINDS.columns).mask(KINDS).to_list() == [
        True, False]
    assert parse_filter("toxic is null or category contains 'EAT'", KINDS.columns).mask(KINDS).to_list() == [
        False, True]
