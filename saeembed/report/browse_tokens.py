"""Where one feature fires in one document, token by token, for the browser's document page.

The model and SAE of the document's encoding are loaded on the first request and kept warm. When they
cannot be loaded (the store does not say where the SAE came from, the model is not available offline,
...) the page falls back to the one span the store keeps, the feature's strongest token, and says so.
"""

from __future__ import annotations

import json
import threading

from saeembed.errors import SaeembedError
from saeembed.report.highlight import Span


def stored_spans(store, corpus: str, sae, doc_idx: int, feature: int) -> list[tuple] | None:
    """(start, end, value) of every token of the document where `feature` fires, from the stored token rows
    (encode --keep-tokens); None when the encoding has none (the highlighter then recomputes). Put it in the
    setup as setup["token_spans"]."""
    info = store.corpus(corpus)
    if not store.has_token_rows(info, sae):
        return None
    rows = store.doc_token_rows(info, sae, doc_idx, [feature])
    return list(zip(rows["start"].to_list(), rows["end"].to_list(), rows["value"].to_list()))


class TokenHighlighter:
    """One loaded (model, SAE, hook, pooling) per encoding setup, shared by every request of a server."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self._lock = threading.Lock()
        self._loaded: dict[str, object] = {}  # setup key -> DocTokens, or the reason it cannot load

    def _scorer(self, setup: dict | None):
        if setup is None:
            return "the document is not encoded with this SAE"
        if not setup.get("sae_source"):
            return "the store does not record where its SAE was loaded from"
        key = json.dumps([setup["model"], setup["sae_source"], setup["hook"], setup["params"]], sort_keys=True,
                         default=str)
        with self._lock:  # load once, even when several pages ask at the same moment
            if key not in self._loaded:
                from saeembed.encode.doc_tokens import DocTokens  # torch and transformers: only when needed

                try:
                    self._loaded[key] = DocTokens(setup["model"], setup["sae_source"], setup["hook"],
                                                  setup["params"], device=self.device)
                except (SaeembedError, OSError, RuntimeError, ValueError) as e:
                    self._loaded[key] = f"cannot load the model or SAE ({str(e).splitlines()[0][:200]})"
            return self._loaded[key]

    def spans(self, setup: dict | None, text: str, feature: int, stored: dict) -> tuple[list[Span], str, str | None]:
        """(spans of every token where `feature` fires, 'tokens' (recomputed) or 'stored tokens' (the encoding's
        token rows), a warning or None); or, when the model cannot
        run, ([the stored strongest-token span], 'strongest token', why). `stored` is the document's stored
        row for the feature (value, span_start, span_end). With setup["token_spans"] (see stored_spans) the
        stored token rows are shown as they are, nothing is recomputed."""
        if setup is not None and setup.get("token_spans") is not None:
            return [Span(s, e, float(v), feature) for s, e, v in setup["token_spans"]], "stored tokens", None
        scorer = self._scorer(setup)
        if isinstance(scorer, str):
            start, end = stored.get("span_start"), stored.get("span_end")
            found = [Span(start, end, stored["value"], feature)] if start is not None and end is not None else []
            return found, "strongest token", f"token-level activations unavailable: {scorer}; showing the stored strongest token only"
        try:
            tokens = scorer.feature_tokens(text, feature)
        except (SaeembedError, RuntimeError, ValueError) as e:
            start, end = stored.get("span_start"), stored.get("span_end")
            found = [Span(start, end, stored["value"], feature)] if start is not None and end is not None else []
            return found, "strongest token", f"token-level activations failed ({str(e).splitlines()[0][:200]})"
        warning = None
        peak = max((t.value for t in tokens if t.pooled), default=0.0)  # the tokens the stored max-pool took
        if abs(peak - stored["value"]) > 1e-3 * max(1.0, abs(stored["value"])):
            warning = (f"recomputed peak {peak:.4g} differs from the stored {stored['value']:.4g}: the model or SAE "
                       "may have changed since encoding")
        return [Span(t.start, t.end, t.value, feature) for t in tokens], "tokens", warning
