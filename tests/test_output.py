"""Output and input as a user meets them through the real entry point: plain tables when piped, --json/--csv
on every table, reports that need --out, honest --store help, `text` in filters, export --with-metadata."""

import csv
import io
import json

import polars as pl
import pytest

from saeembed.cli.app import app
from saeembed.store import Store
from tests.analysis.test_classify import planted
from tests.synthetic import register_sae, write_corpus
from tests.test_cli import run

BOX = set("─│┃━┏┓┗┛┡┩╇╈┼╭╮╰╯║═┌┐└┘├┤┬┴")
N = 60


@pytest.fixture
def proj(tmp_path):
    """Corpus `tox`: 60 documents, every third toxic (features 3 and 7) and saying "refund" in its text,
    metadata toxic (bool), category (text), stars (int) and a column named `value`."""
    path = tmp_path / "p.duckdb"
    docs, labels = planted(N, 0)
    texts = [(f"you idiot, give me my REFUND now, row {i}, " if y else f"thanks friend, all good here, row {i}, ")
             + "and some more words so that the line is long enough to be folded at eighty columns" for i, y in
             enumerate(labels)]
    with Store(path) as st:
        sae = register_sae(st, 40)
        write_corpus(st, sae, "tox", docs, texts=texts, ids=[f"t{i}" for i in range(N)],
                     meta={"toxic": labels, "category": ["insult" if y else "ok" for y in labels],
                           "stars": [i % 5 for i in range(N)], "value": [i * 10 for i in range(N)]})
    return path, tmp_path, labels


# --- piped output ----------------------------------------------------------------------------------


def test_piped_tables_are_plain_unbroken_columns(capsys, monkeypatch, proj):
    path, _, _ = proj
    code, out, err = run(capsys, monkeypatch, "features", "--corpus", "tox", "--top", "5", "--store", path)
    assert code == 0, err
    assert not BOX & set(out)  # capsys is not a terminal: no box drawing
    lines = out.splitlines()
    expected = [k for k in json.loads(run(capsys, monkeypatch, "features", "--corpus", "tox", "--top", "5", "--store",
                                          path, "--json")[1])[0] if k not in ("generic", "generic_reason")]
    assert lines[0] == "features" and lines[1].split() == expected  # every header whole, none folded (`featur e`)
    assert len(lines) == 2 + 5 + 1 and lines[-1] == ""  # one line per row: nothing wrapped
    assert max(map(len, lines)) > 80 and "eighty columns" in out  # full width, the exemplar not cut
    ranks = [int(line.split()[0]) for line in lines[2:7]]
    assert ranks == [1, 2, 3, 4, 5]


def test_explain_table_goes_to_stderr_plain_beside_json(capsys, monkeypatch, proj):
    path, _, _ = proj
    code, out, err = run(capsys, monkeypatch, "search", "-c", "tox", "-f", "3", "--explain", "--json", "--store", path)
    assert code == 0, err
    assert json.loads(out) and "features searched for" in err and not BOX & set(err)


TABLELESS = {"ingest", "encode", "export", "browse", "sae train", "sae eval", "sae atlas", "report", "serve", "show", "sae info"}
PENDING: set = set()


def _commands(group=None, prefix=()):
    """(name, click command) of every command, subcommands as "classify train"."""
    import typer

    group = group or typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a group
            yield from _commands(cmd, (*prefix, name))
        else:
            yield " ".join([*prefix, name]), cmd


def _options(cmd) -> set:
    return {o for p in cmd.params for o in p.opts}


def test_every_command_that_prints_a_table_takes_json_and_csv():
    missing = [name for name, cmd in _commands()
               if name.split()[0] not in TABLELESS and name not in TABLELESS | PENDING
               and not {"--json", "--csv"} <= _options(cmd)]
    assert missing == []


def test_classify_commands_print_csv(capsys, monkeypatch, proj):
    path, _, labels = proj
    code, out, err = run(capsys, monkeypatch, "classify", "train", "tox", "-l", "toxic", "-n", "tx", "--store", path,
                         "--csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {"feature", "weight"} <= set(rows[0]) and {3, 7} <= {int(r["feature"]) for r in rows if float(r["weight"]) > 0}
    code, out, err = run(capsys, monkeypatch, "classify", "eval", "tx", "-c", "tox", "-l", "toxic", "--store", path, "--csv")
    assert code == 0, err
    ev = list(csv.DictReader(io.StringIO(out)))
    js = json.loads(run(capsys, monkeypatch, "classify", "eval", "tx", "-c", "tox", "-l", "toxic", "--store", path,
                        "--json")[1])
    assert [r["model"] for r in ev] == ["SAE probe"] and float(ev[0]["auroc"]) == pytest.approx(js["auroc"])
    code, out, err = run(capsys, monkeypatch, "classify", "zero-shot", "toxic", "-c", "tox", "--top", "4", "--store", path,
                         "--csv")
    assert code == 0, err
    top = list(csv.DictReader(io.StringIO(out)))
    assert len(top) == 4 and {"doc_id", "text"} <= set(top[0])


# --- reports and the store option ------------------------------------------------------------------


def test_reports_refuse_to_write_without_out(capsys, monkeypatch, proj):
    path, tmp, _ = proj
    monkeypatch.chdir(tmp)
    for args in (["features", "--corpus", "tox"], ["diff", "tox", "--where", "toxic = true"], ["correlate", "tox"]):
        code, _, err = run(capsys, monkeypatch, "report", *args, "--store", path)
        assert code == 1 and f"saeembed report {args[0]} needs --out FILE.html" in err
        assert len(err.strip().splitlines()) == 1
    assert list(tmp.glob("*.html")) == []
    code, _, err = run(capsys, monkeypatch, "report", "features", "--corpus", "tox", "--out", "f.html", "--store", path)
    assert code == 0 and str((tmp / "f.html").resolve()) in err.replace("\n", "")  # the absolute path is said


def test_store_help_says_what_each_command_does_to_the_store(capsys, monkeypatch, tmp_path):
    helps = {name: p.help for name, cmd in _commands() for p in cmd.params if "--store" in p.opts}
    assert [n for n, h in helps.items() if "created when missing" in h] == ["clean", "ingest"]  # the two commands that start from a file
    for name in ("info", "corpora", "features", "export", "similar", "classify list", "shards", "report features",
                 "report diff", "report correlate"):
        assert helps[name] == "Store file (only read).", name
    for name in ("encode", "classify train", "classify apply", "report search", "compact"):
        assert "may write" in helps[name], name
    missing = tmp_path / "none.duckdb"
    for args in (["features", "--corpus", "x"], ["classify", "apply", "m", "--corpus", "x"], ["encode", "x"]):
        code, _, err = run(capsys, monkeypatch, *args, "--store", missing)
        assert code == 1 and "no store at" in err and not missing.exists()


# --- `text` and friendlier errors in --where, through the CLI -------------------------------------


def test_where_on_text_selects_by_content(capsys, monkeypatch, proj):
    path, _, labels = proj
    every = [a for f in range(40) for a in ("-f", str(f))]  # any document with any feature

    def ids(*where):
        code, out, err = run(capsys, monkeypatch, "search", "-c", "tox", *every, "--top", "1000", *where,
                             "--store", path, "--json")
        assert code == 0, (where, err)
        return {r["doc_id"] for r in json.loads(out)}

    everything = ids()
    toxic = {f"t{i}" for i, y in enumerate(labels) if y} & everything
    assert len(everything) >= 50 and len(toxic) >= 15
    for where in ("text contains 'refund'", "text like '%REFUND%'", "text ~ 'REF(UND|OND)'",
                  "text matches '(?i)refund' and toxic = true", "category = 'insult' and text not contains 'thanks'",
                  "text ilike '%idiot%' and not text contains 'friend'"):
        assert ids("--where", where) == toxic, where
    assert ids("--where", "text like '%refund%'") == set()  # LIKE keeps case
    assert ids("--where", "text contains 'row 7,'") == {"t7"} & everything
    code, out, err = run(capsys, monkeypatch, "diff", "tox", "--where", "text contains 'refund'", "--json", "--store", path)
    assert code == 0, err
    top = json.loads(out)[0]
    assert top["feature"] in (3, 7) and top["freq_b"] == 0


@pytest.mark.parametrize("where, message", [
    ("text ~ 'ref(und'", "bad regular expression 'ref(und'"),
    ('category = "insult"', "values take single quotes: write 'insult', not \"insult\""),
    ("toxic = 'yes'", "column 'toxic' is true/false, not 'yes': write `toxic = true` or `toxic = false`"),
    ("stars = 'four'", "column 'stars' holds numbers"),
    ("texts contains 'a'", "unknown column 'texts'"),
])
def test_where_mistakes_say_what_to_write(capsys, monkeypatch, proj, where, message):
    path, _, _ = proj
    code, out, err = run(capsys, monkeypatch, "diff", "tox", "--where", where, "--store", path)
    assert code == 1 and message in err.replace("\n", " ") and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2


# --- export --with-metadata --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_export_with_metadata_and_saved_clusters(capsys, monkeypatch, proj, suffix):
    path, tmp, labels = proj
    code, _, err = run(capsys, monkeypatch, "cluster", "tox", "-f", "3", "-f", "11", "--k", "2", "--name", "tone",
                       "--store", path, "--json")
    assert code == 0, err
    out = tmp / f"emb.{suffix}"
    code, stdout, err = run(capsys, monkeypatch, "export", "tox", "--out", out, "--with-metadata", "--store", path,
                            "--json")
    assert code == 0, err
    res = json.loads(stdout)
    assert res["out"] == str(out.resolve()) and res["with_metadata"] is True
    frame = {"csv": pl.read_csv, "parquet": pl.read_parquet, "jsonl": pl.read_ndjson}[suffix](out)
    assert frame.columns == ["doc_id", "feature", "value", "active_tokens", "toxic", "category", "stars", "value_meta",
                             "cluster.tone"]
    assert frame.height == res["rows"]
    with Store(path, read_only=True) as st:
        plain = st.activations("tox")
        docs = st.documents("tox")
        clusters = st.cluster_columns(st.corpus("tox"))
    assert frame.height == plain.height  # one row per activation, as without --with-metadata
    per_doc = frame.unique("doc_id").sort("doc_id")
    meta = docs.select("doc_id", "toxic", "category", "stars", pl.col("value").alias("value_meta")).sort("doc_id")
    meta = meta.filter(pl.col("doc_id").is_in(per_doc["doc_id"].to_list()))
    for col in ("toxic", "category", "stars", "value_meta"):
        assert per_doc[col].to_list() == meta[col].to_list(), col
    saved = dict(zip(docs["doc_id"].to_list(), [None] * docs.height))
    saved.update({docs["doc_id"][i]: c for i, c in zip(clusters["doc_idx"], clusters["cluster.tone"])})
    got = dict(zip(per_doc["doc_id"].to_list(), per_doc["cluster.tone"].to_list()))
    assert got == {d: saved[d] for d in got}
    # and they are the planted split: toxic rows (feature 3) in one cluster, the rest (feature 11) in the other
    tox = {c for d, c in got.items() if labels[int(d[1:])] and c != -1}
    rest = {c for d, c in got.items() if not labels[int(d[1:])] and c != -1}
    assert len(tox) == len(rest) == 1 and tox != rest


def test_export_streams_in_batches_with_the_same_rows(proj, tmp_path):
    path, _, _ = proj
    with Store(path, read_only=True) as st:
        whole = st.export("tox", tmp_path / "a.parquet", with_metadata=True)
        small = st.export("tox", tmp_path / "b.parquet", with_metadata=True, batch_rows=7)
    a, b = pl.read_parquet(tmp_path / "a.parquet"), pl.read_parquet(tmp_path / "b.parquet")
    assert whole == small == a.height and a.equals(b)
    assert pl.read_parquet(tmp_path / "a.parquet").select("doc_id", "feature").is_duplicated().sum() == 0
