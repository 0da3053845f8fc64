"""Atlas labels of generic and broad features on planted data: a feature firing on every document is named
"generic:" with the kind of token it peaks on; one firing on many different words of documents about one
topic is named by the topic's words; token kinds and the phrase variants chosen by contrast."""

from __future__ import annotations

import random

import pytest

from saeembed.interp.atlas_build import label_pass, read_checkpoint, CHECKPOINT
from saeembed.interp.choose import choose, contrast_words
from saeembed.interp.examples import Example
from saeembed.interp.generic import generic_label, generic_phrase, token_kinds
from saeembed.interp.offline import OfflineLabel
from saeembed.interp.phrases import what_fires
from saeembed.interp.scoring import EmbeddingScorer
from tests.interp.planted import FILLERS, bag_of_words_embed, write_planted
from tests.synthetic import make_sae

NAMES = ["Anna", "Boris", "Chen", "Dana", "Emil", "Fatima", "Goran", "Hana", "Ivan", "Jana", "Kofi", "Lena",
         "Mateo", "Nora", "Omar", "Petra", "Quinn", "Rosa", "Sami", "Tara"]
INGREDIENTS = ["saffron", "parsnip", "lentils", "cardamom", "shallots", "tarragon", "quinoa", "fennel", "chickpeas",
               "nutmeg", "leeks", "barley", "oregano", "walnuts", "turnips", "paprika", "apricots", "celeriac",
               "sorrel", "millet", "capers", "radishes", "semolina", "juniper", "kohlrabi"]


def generic_store(store, n: int = 500, seed: int = 2):
    """feature 0: every document, on its first word (a varied name); feature 1: every document, on its
    final "."; feature 2: one document in 25 is a recipe, and it fires there on the ingredient (a different
    word each time); features 8..15: random words."""
    rng = random.Random(seed)
    sae = store.register_sae(make_sae(8, 16, seed=5))
    texts, acts = [], []
    for i in range(n):
        parts = [f"{rng.choice(NAMES)} said that {rng.choice(FILLERS)}", rng.choice(FILLERS)]
        rows = []
        if i % 25 == 0:
            food = INGREDIENTS[(i // 25) % len(INGREDIENTS)]
            parts.insert(1, f"for this recipe add {food} and bake it in the oven")
        text = ". ".join(parts) + "."
        rows.append((0, 0.5 + rng.random(), 0, text.index(" ")))
        rows.append((1, 0.5 + rng.random(), len(text) - 1, len(text)))
        if i % 25 == 0:
            s = text.index(f" {food} ") + 1
            rows.append((2, 1.0 + rng.random(), s, s + len(food)))
        words = [w for w in text.replace(".", " ").split() if w.isalpha() and len(w) > 3]
        for f in rng.sample(range(8, 16), 3):
            w = rng.choice(words)
            s = text.index(f" {w}") + 1 if f" {w}" in text else text.index(w)
            rows.append((f, rng.random(), s, s + len(w)))
        texts.append(text)
        acts += [(i, f, v, 1, s, e) for f, v, s, e in rows]
    write_planted(store, sae, "mixed", texts, acts)
    return sae


@pytest.fixture
def records(store, tmp_path):
    sae = generic_store(store)
    lp = label_pass(store, sae, tmp_path / "build", chunk=8, background=400,
                    scorer=EmbeddingScorer(bag_of_words_embed))
    assert lp.finished
    return read_checkpoint(tmp_path / "build" / CHECKPOINT, sae.sae_hash)


def test_generic_features_say_so_and_name_their_token_kind(records):
    first, stop = records[0], records[1]
    assert first["density"] == 1.0 and stop["density"] == 1.0
    assert first["label"] == "generic: any text, strongest on the first word" and first["kind"] == "generic"
    assert stop["label"] == 'generic: sentence-final "."'
    # a word list drawn from the top windows (the names) would mislead: none is named
    assert not any(name in first["label"] for name in NAMES)


def test_broad_feature_is_named_by_its_documents_topic(records):
    rec = records[2]
    assert rec["density"] == pytest.approx(20 / 500) and rec["kind"] == "topic"
    assert rec["label"].startswith('words in texts about "')
    topic = rec["label"].split("(")[0]
    said = [w for w in ("recipe", "bake", "oven", "add") if f'"{w}"' in topic]
    assert len(said) == 2, rec["label"]  # two of the words every recipe has, no ingredient in front
    assert not any(f in topic for f in INGREDIENTS)


def _ex(text: str, token: str, kind: str = "top", nth: int = 0) -> Example:
    s = -1
    for _ in range(nth + 1):
        s = text.index(token, s + 1)
    return Example(1, hash(text) % 10_000, 1.0, text, (s, s + len(token)), kind, (s, s + len(token)))


def test_token_kinds():
    assert set(token_kinds(_ex("Hello there. It works.", "Hello"))) >= {"first", "sentence_start"}
    assert token_kinds(_ex("so it ends here. Then more", "."))["mark_end"] == "."
    assert "mark" in token_kinds(_ex("one, two", ","))
    assert token_kinds(_ex("we saw the delegates at noon", "delegates"))["after_det"] == "the"
    assert "word_end" in token_kinds(_ex("we met the delegates. Then", "delegates"))
    assert token_kinds(_ex("it was for them", "for"))["function"] == "for"
    assert "number" in token_kinds(_ex("there were 42 of them", "42"))


def test_generic_phrase_uses_top_and_typical_windows():
    # top windows on "." ending sentences, typical ones too: sentence-final "."
    pos = [_ex(f"line {i} ends here. next", ".", "top") for i in range(10)] + \
          [_ex(f"it stops {i}. again", ".", "quantile") for i in range(10)]
    bg = [_ex("birds sing loudly at dawn", w, "random") for w in ("birds", "sing", "loudly", "at", "dawn") * 6]
    assert generic_phrase(pos, bg) == ('sentence-final "."', "mark_end")
    # strongest on nouns after "the", typical windows as well
    nouns = ["delegates", "castle", "engine", "garden", "harbour", "ledger"]
    pos = [_ex(f"we saw the {w} today", w, "top" if i < 6 else "quantile") for i, w in enumerate(nouns * 2)]
    assert generic_phrase(pos, bg) == ('nouns after "the"', "after_det")
    assert generic_label(('nouns after "the"', "after_det"), ('"castle", "engine"', "words")) == 'nouns after "the"'
    assert generic_label(("content words", "content"), ('"group"', "word")) == 'content words, strongest on "group"'


def test_a_token_inside_many_words_is_named_as_a_piece():
    words = ["dehydration", "carbohydrates", "hydrant", "hydraulic", "hydrogen", "rehydrate"]
    examples = []
    for w in words:
        text = f"we read about {w} today"
        s = text.index(w) + w.index("hy")
        examples.append((text, (s, s + 2), w))
    what, kind = what_fires(examples, {})
    assert kind == "subword" and what.startswith('"hy" inside words (')


def test_contrast_words_and_choice_by_explain_windows():
    pos = [_ex(f"she paid the {w} fee today", w) for w in ("toll", "entry", "late", "entry", "bank")]
    neg = [_ex(f"she paid the {w} bill today", w, "hard") for w in ("phone", "gas", "tax")]
    assert contrast_words(pos, neg, exclude=set()) == ["fee", "entry"]
    lab = OfflineLabel('"toll", "entry"', [], [], [], "toll, entry", "words", '"toll", "entry"')

    def score(text, positives, negatives):  # a label "fits" when it names the word telling them apart
        return 0.9 if "fee" in text else 0.6

    chosen = choose(lab, pos, neg, [], score)
    assert chosen.label == '"toll", "entry" near "fee"' and chosen.text == "toll, entry near fee"
    assert choose(lab, pos, neg, [], lambda *a: 0.7).label == lab.label  # ties keep the label
