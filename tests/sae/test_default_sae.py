"""The SAE that ships inside saeembed: loads offline, matches its card, and reconstructs real text."""

import json


from saeembed.sae.default import DEFAULT_SAE_DIR, load_default_sae

TEXTS = [
    "The city council voted on Tuesday to extend the tram line to the airport, a project expected to cost "
    "about 240 million euros and to open in 2029.",
    "To make a quick tomato sauce, warm olive oil with two cloves of garlic, add a tin of chopped tomatoes, "
    "season with salt and simmer for fifteen minutes.",
    "I can't believe the referee missed that handball. Worst match I've watched all season, honestly.",
    "Photosynthesis converts light energy into chemical energy: chloroplasts use sunlight to turn carbon "
    "dioxide and water into glucose, releasing oxygen.",
    "Thanks for reaching out! Your refund for order #48213 has been processed and should appear on your "
    "card within five business days.",
    "def mean(xs):\n    return sum(xs) / len(xs) if xs else 0.0",
    "The novel follows a young lighthouse keeper on a remote Scottish island who begins receiving letters "
    "from a stranger claiming to know her late father.",
    "Shares of the chipmaker fell 7% after it warned that demand from data centres would slow next quarter.",
    "Dear hiring manager, I am writing to apply for the position of junior data analyst advertised on your "
    "website last week.",
    "lol this phone died after 2 hours, battery is a joke",
] * 3


def test_default_sae_loads_and_matches_its_card():
    sae = load_default_sae()
    card = json.loads((DEFAULT_SAE_DIR / "MODEL_CARD.json").read_text())
    assert (sae.d_in, sae.d_sae, sae.cfg.k) == (card["d_in"], card["d_sae"], card["k"]) == (384, card["d_sae"], 32)
    assert sae.cfg.architecture == "topk" and sae.cfg.hook == card["hook"]
    assert sae.cfg.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert card["heldout"]["explained_variance"] >= 0.85 and card["heldout"]["dead_fraction"] <= 0.05
    size = sum(f.stat().st_size for f in DEFAULT_SAE_DIR.iterdir())
    assert size < 15 * 2**20


def test_default_sae_reconstructs_text_written_here():
    from saeembed.encode.models import load_model
    from saeembed.sae.recipe import evaluate_on_texts

    sae = load_default_sae()
    loaded = load_model(None, device="cpu")
    q = evaluate_on_texts(sae, loaded, sae.cfg.hook, TEXTS, max_tokens=None)
    assert q.n_tokens > 500
    assert q.explained_variance >= 0.75  # unseen text of other kinds; the held-out figure is in the card
    assert q.l0 <= 32
