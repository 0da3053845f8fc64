"""Hook-point names.

`layers.N` is the output of block N (0-indexed), i.e. HF `hidden_states[N+1]`; `layers.N.pre` is the
input of block N (`hidden_states[N]`). TransformerLens names are accepted too:
`blocks.N.hook_resid_post` = `layers.N`, `blocks.N.hook_resid_pre` = `layers.N.pre`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from saeembed.errors import ModelError

_PATTERNS = (
    (re.compile(r"^(?:model\.)?layers\.(\d+)$"), "post"),
    (re.compile(r"^(?:model\.)?layers\.(\d+)\.(?:pre|input)$"), "pre"),
    (re.compile(r"^blocks\.(\d+)\.hook_resid_post$"), "post"),
    (re.compile(r"^blocks\.(\d+)\.hook_resid_pre$"), "pre"),
    # sparsify names hookpoints after the module path, e.g. "layers.3" or "h.3" / "encoder.layer.3"
    (re.compile(r"^(?:transformer\.)?h\.(\d+)$"), "post"),
    (re.compile(r"^(?:bert\.)?encoder\.layer\.(\d+)$"), "post"),
)


@dataclass(frozen=True)
class HookPoint:
    layer: int
    position: str = "post"  # "post": output of the block; "pre": its input

    @property
    def name(self) -> str:
        return f"layers.{self.layer}" if self.position == "post" else f"layers.{self.layer}.pre"

    @property
    def hidden_states_index(self) -> int:
        """Index into HF `output_hidden_states` holding the same tensor (except after the last block)."""
        return self.layer + 1 if self.position == "post" else self.layer

    def __str__(self) -> str:
        return self.name


def parse_hook(name: str) -> HookPoint:
    """Parse a hook name in any accepted spelling; raise ModelError naming the accepted forms."""
    text = str(name).strip()
    for pattern, position in _PATTERNS:
        m = pattern.match(text)
        if m:
            return HookPoint(int(m.group(1)), position)
    raise ModelError(
        f"unknown hook point {name!r}: use layers.N (output of block N), layers.N.pre (its input), "
        "or blocks.N.hook_resid_post / blocks.N.hook_resid_pre"
    )


def try_parse_hook(name: str | None) -> HookPoint | None:
    if not name:
        return None
    try:
        return parse_hook(name)
    except ModelError:
        return None
