"""Token-level activations of one document, computed on demand.

The store keeps one row per (document, feature): the max over tokens and the strongest token's span.
To show every token where a feature fires, the document is run again through the same model, hook,
windows, special-token rules and SAE as its encoding. The model and SAE are loaded once and kept.
Every token where a feature fires is returned; `pooled` says whether the encoding's max-pool took it
(not when it skipped function tokens), so a check against the stored value compares like with like.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import torch

from saeembed.encode.capture import ActivationCapture
from saeembed.encode.token_kinds import pooled_masks
from saeembed.encode.tokens import batches, bos_rule, pad_token_id, tokenize
from saeembed.errors import InputError


class TokenValue(NamedTuple):
    start: int  # character span of the token in the document's text
    end: int
    value: float
    pooled: bool = True  # the encoding's max-pool took this token


class DocTokens:
    """A loaded (model, SAE, hook) with an encoding's pooling settings; thread-safe, one document at a time."""

    def __init__(self, model: str, sae_source: str, hook: str, params: dict, *, device: str = "cpu"):
        if params.get("chat_template"):
            raise InputError("token-level view is not available for chat-template encodings")
        from saeembed.encode.models import load_model
        from saeembed.encode.pipeline import check_width
        from saeembed.sae.formats import load_sae

        self.loaded = load_model(model, device=device)
        self.sae = load_sae(sae_source).to(self.loaded.device).eval()
        check_width(self.sae, self.loaded, hook)
        self.hook = hook
        self.window = min(int(params.get("window") or self.loaded.max_window), self.loaded.max_window)
        self.exclude_special = bool(params.get("exclude_special", True))
        self.skip_tokens = params.get("skip_tokens") or "none"
        self._lock = threading.Lock()

    def feature_tokens(self, text: str, feature: int) -> list[TokenValue]:
        """Every content token of `text` where `feature` fires (value > 0), in text order; the stored value
        is the max over those with `pooled`."""
        if not 0 <= feature < self.sae.d_sae:
            raise InputError(f"feature {feature} does not exist (the SAE has {self.sae.d_sae} latents)")
        windows = tokenize(self.loaded.tokenizer, [text], window=self.window, exclude_special=self.exclude_special)
        keep = pooled_masks([text], windows, self.skip_tokens)
        out: list[TokenValue] = []
        bos = bos_rule(self.loaded.tokenizer, self.sae.cfg.prepend_bos)  # as the encoding fed the model
        with self._lock, torch.inference_mode(), ActivationCapture(self.loaded, self.hook, bos=bos) as capture:
            for batch in batches(windows, pad_id=pad_token_id(self.loaded.tokenizer), max_windows=16, max_tokens=8192):
                hidden = capture(batch.input_ids, batch.attention_mask)
                content = batch.content.to(hidden.device)
                x = hidden[content]
                if x.shape[0] == 0:
                    continue
                rows, cols = content.nonzero(as_tuple=True)
                r, f, v = self.sae.encode_coo(x)  # the SAE's own rule (TopK competes over all latents)
                hit = f == feature
                for row, value in zip(r[hit].tolist(), v[hit].tolist()):
                    w = batch.windows[int(rows[row])]
                    col = int(cols[row])
                    start, end = (int(o) for o in w.offsets[col])
                    out.append(TokenValue(start, end, float(value), keep is None or bool(keep[id(w)][col])))
        return sorted(out)
