"""A planted two-corpus store with known answers, and a real headless browser (Debian's chromium driven
by Playwright) for the page tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.synthetic import register_sae, write_corpus

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None) \
    or shutil.which("chromium")
HOSTILE = "<script>alert('pwned')</script>"
LABELS = {1: "asks for a refund <b>", 2: "praise", 3: HOSTILE}


def build_store(store):
    """alpha (10 docs) vs beta (10 docs) over a 16-latent SAE:
    feature 1 fires in all of alpha and 2 of beta, span on the word "refund" (value 1.0 + 0.1 i);
    feature 2 in 1 alpha doc and 8 beta docs; feature 3 in 5 of each (no difference);
    feature 4 in alpha docs 0-5 only (always with feature 1). Labels for features 1-3; label 3 and
    alpha doc 0 hold a <script> tag."""
    sae = register_sae(store, 16)
    alpha_texts = [f"alpha {i}: I want a refund now" for i in range(10)]
    alpha_texts[0] = f"alpha 0: {HOSTILE} refund please"
    alpha = [{1: 1.0 + 0.1 * i, **({4: 0.5} if i < 6 else {}), **({3: 0.3} if i < 5 else {}), **({2: 0.2} if i == 9 else {})}
             for i in range(10)]
    beta = [{**({1: 0.4} if i < 2 else {}), **({2: 1.5} if i < 8 else {}), **({3: 0.3} if i >= 5 else {})}
            for i in range(10)]
    beta_texts = [f"beta {i}: lovely product, great sound" for i in range(10)]
    a = write_corpus(store, sae, "alpha", alpha, texts=alpha_texts)
    b = write_corpus(store, sae, "beta", beta, texts=beta_texts)
    # Narrow feature 1's span in alpha to the word "refund" (write_corpus spans whole texts).
    store.con.execute(
        "UPDATE activations SET span_start = strpos(d.text, 'refund') - 1, span_end = strpos(d.text, 'refund') + 5 "
        "FROM documents d WHERE activations.corpus_id = d.corpus_id AND activations.doc_idx = d.doc_idx "
        "AND activations.corpus_id = ? AND activations.feature = 1", [a.corpus_id])
    store.finish_encoding(a, sae)
    for f, label in LABELS.items():
        store.con.execute("INSERT INTO feature_labels (sae_key, feature, label, source, score) VALUES (?, ?, ?, 'test', 0.9)",
                          [sae.sae_key, f, label])
    return sae, a, b


@pytest.fixture
def planted(store):
    sae, a, b = build_store(store)
    return store, sae


@pytest.fixture
def planted_file(tmp_path):
    """The planted store as a closed file (for the CLI and the browse server)."""
    from saeembed.store import Store

    path = tmp_path / "planted.duckdb"
    with Store(path) as st:
        build_store(st)
    return path


@pytest.fixture(scope="session")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); browser checks skipped")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]'); browser checks skipped")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Loaded:
    """A page opened in the browser with everything it logged and requested."""

    def __init__(self, browser, url: str, screenshot: Path | None = None):
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.console, self.requests, self.dialogs = [], [], []
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.console.append(("pageerror", str(e))))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(url)
        self.page.wait_for_load_state("load")
        if screenshot is not None:
            self.page.screenshot(path=str(screenshot), full_page=True)

    def count(self, selector: str) -> int:
        return self.page.locator(selector).count()

    def texts(self, selector: str) -> list[str]:
        return self.page.locator(selector).all_text_contents()

    def errors(self) -> list:
        return [c for c in self.console if c[0] in ("error", "pageerror", "warning")]

    def close(self):
        self.page.close()


@pytest.fixture
def load(browser):
    opened = []

    def _load(url: str, screenshot: Path | None = None) -> Loaded:
        page = Loaded(browser, url, screenshot)
        opened.append(page)
        return page

    yield _load
    for p in opened:
        p.close()
