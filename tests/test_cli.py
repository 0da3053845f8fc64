"""The CLI as a user runs it: real entry point, real store file, tiny model and SAE saved to disk."""

import json
import sys

import polars as pl
import pytest

from saeembed.cli.app import main
from saeembed.sae.formats import save_sae
from tests.conftest import make_sae


def run(capsys, monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["saeembed", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def project(tmp_path, tiny_bert_dir):
    data = tmp_path / "tickets.jsonl"
    rows = [
        {"ticket_id": f"T{i}", "body": text, "channel": "email" if i % 2 else "chat"}
        for i, text in enumerate([
            "my order was late and the refund never came",
            "please help with my login password",
            "great sound and battery, five stars",
            "terrible shipping, the price was not good",
            "thanks for the quick help with billing",
            "the cat sat on the mat",
        ])
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    sae_dir = save_sae(make_sae(32, 64, hook="layers.1", model=str(tiny_bert_dir)), tmp_path / "sae")
    return {"data": data, "sae": sae_dir, "store": tmp_path / "p.duckdb", "model": tiny_bert_dir, "tmp": tmp_path}


def test_full_flow(capsys, monkeypatch, project):
    p = project
    code, out, err = run(capsys, monkeypatch, "ingest", p["data"], "--corpus", "support", "--text-column", "body",
                         "--id-column", "ticket_id", "--store", p["store"], "--json")
    assert code == 0, err
    assert json.loads(out)["added"] == 6 and json.loads(out)["metadata_columns"] == ["channel"]
    code, out, err = run(capsys, monkeypatch, "encode", "support", "--model", p["model"], "--sae", p["sae"],
                         "--store", p["store"], "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["docs_encoded"] == 6 and res["hook"] == "layers.1" and res["tokens_per_s"] > 0
    code, out, _ = run(capsys, monkeypatch, "encode", "support", "--model", p["model"], "--sae", p["sae"],
                       "--store", p["store"])
    assert code == 0 and "nothing to do" in _.replace("\n", " ")
    code, out, _ = run(capsys, monkeypatch, "info", "--store", p["store"], "--json")
    info = json.loads(out)
    assert info["documents"] == 6 and info["saes"] == 1 and info["activation_rows"] > 6
    code, out, _ = run(capsys, monkeypatch, "corpora", "--store", p["store"], "--json")
    assert json.loads(out)[0]["corpus"] == "support" and json.loads(out)[0]["metadata_columns"] == ["channel"]
    code, out, _ = run(capsys, monkeypatch, "features", "--corpus", "support", "--top", "5", "--store", p["store"], "--json")
    feats = json.loads(out)
    assert len(feats) == 5 and {"feature", "docs", "freq", "label", "top_exemplar"} <= set(feats[0])
    assert [f["docs"] for f in feats] == sorted((f["docs"] for f in feats), reverse=True)
    code, out, _ = run(capsys, monkeypatch, "features", "--corpus", "support", "--top", "3", "--store", p["store"], "--csv")
    assert out.splitlines()[0].startswith("rank,feature,docs")
    out_file = p["tmp"] / "emb.parquet"
    code, _, err = run(capsys, monkeypatch, "export", "support", "--out", out_file, "--store", p["store"])
    assert code == 0, err
    emb = pl.read_parquet(out_file)
    assert set(emb["doc_id"]) == {f"T{i}" for i in range(6)} and info["activation_rows"] == emb.height


@pytest.mark.parametrize(
    "args, message",
    [
        (["ingest", "{data}", "--corpus", "c", "--text-column", "nope"], "nope"),
        (["ingest", "{tmp}/missing.jsonl", "--corpus", "c"], "does not exist"),
        (["encode", "ghost", "--model", "{model}", "--sae", "{sae}"], "unknown corpus 'ghost'"),
        (["export", "ghost", "--out", "{tmp}/x.parquet"], "unknown corpus"),
        (["features", "--corpus", "c"], "unknown corpus"),
    ],
)
def test_user_errors_are_one_line(capsys, monkeypatch, project, args, message):
    run(capsys, monkeypatch, "ingest", project["data"], "--corpus", "support", "--text-column", "body",
        "--store", project["store"])
    args = [a.format(**project) for a in args]
    code, out, err = run(capsys, monkeypatch, *args, "--store", project["store"])
    assert code == 1
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2  # one logical line (rich may wrap a long path)


def test_width_mismatch_from_cli_leaves_store_untouched(capsys, monkeypatch, project):
    wide = save_sae(make_sae(48, 64, hook="layers.1"), project["tmp"] / "wide")
    run(capsys, monkeypatch, "ingest", project["data"], "--corpus", "support", "--text-column", "body",
        "--store", project["store"])
    before = run(capsys, monkeypatch, "info", "--store", project["store"], "--json")[1]
    code, _, err = run(capsys, monkeypatch, "encode", "support", "--model", project["model"], "--sae", wide,
                       "--store", project["store"])
    assert code == 1 and "does not match" in err
    after = run(capsys, monkeypatch, "info", "--store", project["store"], "--json")[1]
    strip = lambda s: {k: v for k, v in json.loads(s).items() if k != "size_bytes"}
    assert strip(before) == strip(after)


def test_help_teaches(capsys, monkeypatch):
    code, out, _ = run(capsys, monkeypatch, "encode", "--help")
    assert code == 0 and "hidden_states" not in out and "layers.N" in out and "--chat-template" in out


def test_ingest_sep_rename_and_drop_column(capsys, monkeypatch, tmp_path):
    """A ';'-separated file with a metadata column named like a built-in one: refused with the fix named,
    then ingested with --rename / --drop-column / --sep, ids and texts exactly as written."""
    f = tmp_path / "semi.csv"
    f.write_text("id;text;n_tokens;lang\n1.10;hello there;3;en\n2.00;1e3;4;de\n")
    store = tmp_path / "s.duckdb"
    code, _, err = run(capsys, monkeypatch, "ingest", f, "-c", "a", "-i", "id", "--store", store)
    assert code == 1 and "--rename n_tokens=" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run(capsys, monkeypatch, "ingest", f, "-c", "a", "-i", "id", "--sep", ";",
                       "--rename", "n_tokens=ntok", "--drop-column", "lang", "--store", store, "--json")
    assert code == 0 and json.loads(out)["metadata_columns"] == ["ntok"]
    code, _, err = run(capsys, monkeypatch, "ingest", f, "-c", "b", "--rename", "n_tokens", "--store", store)
    assert code != 0 and "OLD=NEW" in err
    from saeembed.store import Store

    with Store(store, read_only=True) as st:
        d = st.documents("a")
    assert d["doc_id"].to_list() == ["1.10", "2.00"] and d["text"].to_list() == ["hello there", "1e3"]
    assert d["ntok"].to_list() == [3, 4]


@pytest.mark.parametrize("args, message", [
    (["encode", "nosuch"], "unknown corpus 'nosuch'"),
    (["encode", "support", "--backend", "nope"], "unknown backend 'nope'"),
    (["encode", "support", "--hook", "bogus"], "unknown hook point 'bogus'"),
    (["encode", "support", "--window", "2"], "--window 2 is too small"),
    (["encode", "support", "--chat-template", "--prompt-column", "nope"], "--prompt-column 'nope' is not a column"),
])
def test_encode_checks_its_arguments_before_loading_anything(capsys, monkeypatch, project, args, message):
    """A mistake is said before torch, transformers or a model is loaded (a fresh process shows what loaded)."""
    import subprocess

    run(capsys, monkeypatch, "ingest", project["data"], "--corpus", "support", "--text-column", "body",
        "--store", project["store"])
    script = ("import sys\n"
              f"sys.argv = ['saeembed', *{args!r}, '--store', {str(project['store'])!r}]\n"
              "from saeembed.cli.app import main\n"
              "try:\n    main()\nexcept SystemExit as e:\n    print('exit', e.code)\n"
              "print('loaded', [m for m in ('torch', 'transformers') if m in sys.modules])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.stdout.splitlines() == ["exit 1", "loaded []"], done.stderr
    assert message in done.stderr and done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1
