"""With and without the <|im_start|> BOS at layers.9: first-token residual norms and the SAE's EV.

    python benchmarks/smollm2/bos_check.py   (reads /tmp/smol/sae_final, writes /tmp/smol/bos_check.json)
"""
import json
import os
import sys

import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cache_acts import documents  # noqa: E402
from saeembed.encode.models import load_model
from saeembed.encode.capture import ActivationCapture
from saeembed.encode.tokens import BosRule, batches, pad_token_id, tokenize
from saeembed.sae.formats import load_sae
from saeembed.sae.recipe import is_heldout
from saeembed.sae.metrics import evaluate_sae
m = load_model("smollm2", device="cpu")
sae = load_sae("/tmp/smol/sae_final")
docs = [t for t in documents() if is_heldout(t)][:150]
out = {}
for label, bos in (("bos", BosRule(add=int(m.tokenizer.bos_token_id))), ("no_bos", BosRule())):
    first, rest, xs = [], [], []
    with ActivationCapture(m, "layers.9", bos=bos) as cap:
        wins = tokenize(m.tokenizer, docs, window=511)
        for b in batches(wins, pad_id=pad_token_id(m.tokenizer), max_windows=16, max_tokens=4096):
            h = cap(b.input_ids, b.attention_mask)
            n = h.norm(dim=-1)
            c = b.content
            first.append(n[:, 0][c[:, 0]]); rest.append(n[:, 1:][c[:, 1:]])
            xs.append(h[c])
    f, r = torch.cat(first), torch.cat(rest)
    q = evaluate_sae(sae, iter(xs))
    out[label] = {"first_content_token_norm_median": float(f.median()) if len(f) else None, "n_first": len(f),
                  "other_tokens_norm_median": float(r.median()), "sae_ev": q.explained_variance, "tokens": q.n_tokens}
    print(label, out[label], flush=True)
json.dump(out, open("/tmp/smol/bos_check.json", "w"), indent=1)
