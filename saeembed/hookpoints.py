"""Hook-point names.

`layers.N` is the output of block N (0-indexed), i.e. HF `hidden_states[N+1]`; `layers.N.pre` is the
input of block N (`hidden_states[N]`). Inside a block: `layers.N.mid` (residual after attention, before
the MLP), `layers.N.mlp_out` (the MLP's output, before it is added to the residual), `layers.N.attn_z`
(per-head attention outputs before the output projection, heads concatenated; `.headH` after it keeps
head H's slice alone, as SAELens's hook_head_index), `layers.N.ln2` (output of the pre-MLP norm).
TransformerLens loads models with norm weights and value biases folded into the next layer by default,
which changes two of these: `layers.N.ln2.folded` is the norm without its weight and
bias, `layers.N.attn_z.folded` is z without the value bias (attention rows sum to 1, so TransformerLens
moves it into the output bias).

TransformerLens names are accepted too: `blocks.N.hook_resid_post` / `_pre` / `_mid`, `blocks.N.hook_mlp_out`,
and `blocks.N.attn.hook_z` / `blocks.N.ln2.hook_normalized`, read as the folded forms (its defaults; the
SAELens loader picks the unfolded ones when the SAE's config says the model was loaded without folding).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from saeembed.errors import ModelError

# position -> saeembed suffix after "layers.N"
_SUFFIX = {"post": "", "pre": ".pre", "mid": ".mid", "mlp_out": ".mlp_out", "attn_z": ".attn_z",
           "attn_z_folded": ".attn_z.folded", "ln2": ".ln2", "ln2_folded": ".ln2.folded"}
# position -> TransformerLens name after "blocks.N." (ln2 with and without the affine share one TL name)
_TL = {"post": "hook_resid_post", "pre": "hook_resid_pre", "mid": "hook_resid_mid", "mlp_out": "hook_mlp_out",
       "attn_z": "attn.hook_z", "attn_z_folded": "attn.hook_z", "ln2": "ln2.hook_normalized", "ln2_folded": "ln2.hook_normalized"}

_PATTERNS = (
    (re.compile(r"^(?:model\.)?layers\.(\d+)$"), "post"),
    (re.compile(r"^(?:model\.)?layers\.(\d+)\.(?:pre|input)$"), "pre"),
    *((re.compile(rf"^layers\.(\d+){re.escape(s)}$"), p) for p, s in _SUFFIX.items() if p not in ("post", "pre")),
    (re.compile(r"^blocks\.(\d+)\.hook_resid_post$"), "post"),
    (re.compile(r"^blocks\.(\d+)\.hook_resid_pre$"), "pre"),
    (re.compile(r"^blocks\.(\d+)\.hook_resid_mid$"), "mid"),
    (re.compile(r"^blocks\.(\d+)\.hook_mlp_out$"), "mlp_out"),
    (re.compile(r"^blocks\.(\d+)\.attn\.hook_z$"), "attn_z_folded"),
    (re.compile(r"^blocks\.(\d+)\.ln2\.hook_normalized$"), "ln2_folded"),
    # sparsify names hookpoints after the module path, e.g. "layers.3" or "h.3" / "encoder.layer.3"
    (re.compile(r"^(?:transformer\.)?h\.(\d+)$"), "post"),
    (re.compile(r"^(?:bert\.)?encoder\.layer\.(\d+)$"), "post"),
    (re.compile(r"^(?:model\.|transformer\.)?(?:layers|h)\.(\d+)\.mlp$"), "mlp_out"),
)
_HEAD = re.compile(r"^(.+)\.head(\d+)$")  # one head of an attention z hook: layers.3.attn_z.head5

SUPPORTED = (
    "layers.N (output of block N), layers.N.pre (its input), or the TransformerLens names "
    "blocks.N.hook_resid_pre / hook_resid_mid / hook_resid_post / hook_mlp_out, blocks.N.attn.hook_z, "
    "blocks.N.ln2.hook_normalized"
)


@dataclass(frozen=True)
class HookPoint:
    layer: int
    position: str = "post"  # one of _SUFFIX: "post" output of the block, "pre" its input, ...
    head: int | None = None  # attn_z only: that head's slice of z alone

    @property
    def name(self) -> str:
        return f"layers.{self.layer}{_SUFFIX[self.position]}" + (f".head{self.head}" if self.head is not None else "")

    @property
    def tl_name(self) -> str:
        return f"blocks.{self.layer}.{_TL[self.position]}"

    @property
    def residual(self) -> bool:
        return self.position in ("post", "pre", "mid")

    @property
    def hidden_states_index(self) -> int:
        """Index into HF `output_hidden_states` holding the same tensor (except after the last block)."""
        if self.position not in ("post", "pre"):
            raise ModelError(f"hook {self.name} is inside a block; no hidden_states entry holds it")
        return self.layer + 1 if self.position == "post" else self.layer

    def __str__(self) -> str:
        return self.name


def parse_hook(name: str) -> HookPoint:
    """Parse a hook name in any accepted spelling; raise ModelError naming the accepted forms."""
    text = str(name).strip()
    head = _HEAD.match(text)
    if head:
        base = parse_hook(head.group(1))
        if base.position not in ("attn_z", "attn_z_folded") or base.head is not None:
            raise ModelError(f"hook point {name!r}: only attention z (layers.N.attn_z, blocks.N.attn.hook_z) "
                             "can be read one head at a time")
        return HookPoint(base.layer, base.position, int(head.group(2)))
    for pattern, position in _PATTERNS:
        m = pattern.match(text)
        if m:
            return HookPoint(int(m.group(1)), position)
    raise ModelError(f"unknown hook point {name!r}: use {SUPPORTED}")


def try_parse_hook(name: str | None) -> HookPoint | None:
    if not name:
        return None
    try:
        return parse_hook(name)
    except ModelError:
        return None
