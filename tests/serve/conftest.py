"""A tiny store with planted embeddings and labels, and a search server for it run in a thread of the
test process (port 0)."""

from __future__ import annotations

import threading

import pytest

from saeembed.store import Store
from tests.synthetic import register_sae, write_corpus

TEXTS = ["On 3 May 2020 we met.", "Bake the bread at 200 degrees.", "The striker scored on 4 June.",
         "Knead the dough.", "Nothing here.", "A refund for the double charge on my card."]
DOCS = [{3: 2.0}, {5: 1.0}, {3: 1.0, 7: 1.0}, {5: 2.0}, {9: 1.0}, {11: 1.5, 3: 0.5}]


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "s.duckdb"
    with Store(p) as st:
        sae = register_sae(st, 16)
        write_corpus(st, sae, "c", DOCS, texts=TEXTS, meta={"src": ["x", "y", "y", "x", "y", "x"]})
        write_corpus(st, sae, "d", [{3: 1.0}, {5: 1.0}, {5: 2.0}], texts=["May 2021.", "Bread.", "Dough rising."])
        st.save_labels(sae.sae_key, "test", [(3, "calendar dates", "manual", None, {}),
                                             (5, "baking bread", "manual", None, {}),
                                             (7, "football", "manual", None, {}),
                                             (11, "billing refunds", "manual", None, {})])
    return p


class Running:
    """A SearchServer answering in a background thread; stop() shuts it down (the rendezvous file goes)."""

    def __init__(self, store, **kw):
        from saeembed.serve.server import SearchServer, serve

        self.server = SearchServer(str(store), **kw)
        ready = threading.Event()
        self.thread = threading.Thread(target=serve, args=(self.server,),
                                       kwargs={"warm": False, "ready": lambda s: ready.set()}, daemon=True)
        self.thread.start()
        assert ready.wait(30), "server did not start"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)


@pytest.fixture
def served(path):
    running = Running(path)
    yield running.server
    running.stop()
