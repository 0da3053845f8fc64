"""The SAE itself: encode activations into sparse latents and decode them back.

One class covers every architecture we read, because they differ only in the activation function:
ReLU, TopK (ReLU then keep the k largest), and JumpReLU (keep a latent only above its threshold;
BatchTopK SAEs are saved as JumpReLU with the learned threshold). Weights are always held in the
SAELens orientation: W_enc [d_in, d_sae], W_dec [d_sae, d_in].
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import torch

from saeembed.errors import SAEError

ARCHITECTURES = ("relu", "topk", "jumprelu")

# Above this many (tokens x latents) elements, encode in chunks so memory stays bounded.
_MAX_DENSE_ELEMENTS = 1 << 24
# On CPU, chunks whose pre-activations fit in cache (8 MB) let top-k read them from there: 11 % faster
# encode_coo than 64 MB chunks (16k tokens x 3072 latents, 2 cores: 330 vs 371 ms).
_CPU_CHUNK_ELEMENTS = 1 << 21


@dataclass
class SAEConfig:
    """What an SAE is, beyond its weights. Defaults describe a plain ReLU SAE."""

    d_in: int
    d_sae: int
    architecture: str = "relu"
    k: int | None = None  # TopK only: latents kept per token
    apply_b_dec_to_input: bool = False  # subtract b_dec from the input before encoding
    input_scale: float = 1.0  # inputs are multiplied by this before encoding (Llama Scope norm)
    output_scale: float | None = None  # decoded output is multiplied by this; None = 1 / input_scale
    model: str | None = None  # the model whose activations it was trained on
    hook: str | None = None  # saeembed hook name, e.g. "layers.3"
    format: str | None = None  # file format it was read from
    source: str | None = None  # path or hub id it was read from
    extra: dict = field(default_factory=dict)  # anything else worth keeping (model card, metrics)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise SAEError(
                f"unknown SAE architecture {self.architecture!r}; expected one of {', '.join(ARCHITECTURES)}"
            )
        if self.architecture == "topk" and (self.k is None or self.k < 1):
            raise SAEError("a TopK SAE needs k >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


class SAE(torch.nn.Module):
    def __init__(
        self,
        cfg: SAEConfig,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        W_dec: torch.Tensor,
        b_dec: torch.Tensor,
        threshold: torch.Tensor | float | None = None,
    ) -> None:
        super().__init__()
        d_in, d_sae = cfg.d_in, cfg.d_sae
        _check_shape("W_enc", W_enc, (d_in, d_sae))
        _check_shape("b_enc", b_enc, (d_sae,))
        _check_shape("W_dec", W_dec, (d_sae, d_in))
        _check_shape("b_dec", b_dec, (d_in,))
        self.cfg = cfg
        self.W_enc = torch.nn.Parameter(W_enc.detach().float().contiguous())
        self.b_enc = torch.nn.Parameter(b_enc.detach().float().contiguous())
        self.W_dec = torch.nn.Parameter(W_dec.detach().float().contiguous())
        self.b_dec = torch.nn.Parameter(b_dec.detach().float().contiguous())
        if cfg.architecture == "jumprelu":
            if threshold is None:
                raise SAEError("a JumpReLU SAE needs a threshold")
            threshold = torch.as_tensor(threshold, dtype=torch.float32)
            if threshold.dim() == 0:  # Llama Scope stores one scalar for all latents
                threshold = threshold.expand(d_sae)
            _check_shape("threshold", threshold, (d_sae,))
            self.register_buffer("threshold", threshold.detach().float().contiguous())
        else:
            self.threshold = None
        self._identity: str | None = None

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    # --- encoding -------------------------------------------------------------------------

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.W_enc.dtype)
        if self.cfg.input_scale != 1.0:
            x = x * self.cfg.input_scale
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return torch.addmm(self.b_enc, x, self.W_enc)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Dense latents from pre-activations."""
        arch = self.cfg.architecture
        if arch == "relu":
            return torch.relu(pre)
        if arch == "jumprelu":
            return torch.where(pre > self.threshold, torch.relu(pre), torch.zeros_like(pre))
        values, indices = self._topk(pre)
        return torch.zeros_like(pre).scatter_(-1, indices, values)

    def _topk(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = min(self.cfg.k, pre.shape[-1])
        values, indices = pre.topk(k, dim=-1, sorted=False)
        return torch.relu(values), indices

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latents [n, d_sae] for activations [n, d_in]. Use encode_coo for large inputs."""
        return self.activate(self.pre_activations(x))

    def encode_coo(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sparse latents of activations [n, d_in] as COO triplets (row, feature, value), value > 0.

        Works in chunks of tokens so that no more than ~16M dense latents exist at once.
        """
        if x.dim() != 2 or x.shape[1] != self.d_in:
            raise SAEError(f"SAE expects activations of width {self.d_in}, got shape {tuple(x.shape)}")
        limit = min(_MAX_DENSE_ELEMENTS, _CPU_CHUNK_ELEMENTS) if x.device.type == "cpu" else _MAX_DENSE_ELEMENTS
        chunk = max(1, limit // self.d_sae)
        rows, feats, vals = [], [], []
        for start in range(0, x.shape[0], chunk):
            pre = self.pre_activations(x[start : start + chunk])
            if self.cfg.architecture == "topk":
                values, indices = self._topk(pre)
                r = torch.arange(pre.shape[0], device=pre.device).unsqueeze(1).expand_as(indices)
                keep = values > 0
                rows.append(r[keep] + start)
                feats.append(indices[keep])
                vals.append(values[keep])
            else:
                dense = self.activate(pre)
                r, f = dense.nonzero(as_tuple=True)
                rows.append(r + start)
                feats.append(f)
                vals.append(dense[r, f])
        if not rows:
            empty = torch.empty(0, dtype=torch.long, device=x.device)
            return empty, empty, torch.empty(0, device=x.device)
        return torch.cat(rows), torch.cat(feats), torch.cat(vals)

    # --- decoding -------------------------------------------------------------------------

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = z.to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        scale = self.cfg.output_scale if self.cfg.output_scale is not None else 1.0 / self.cfg.input_scale
        return out * scale if scale != 1.0 else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # --- identity -------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        """Content hash: the same weights and activation rule give the same id wherever they came from."""
        if self._identity is None:
            h = hashlib.sha256()
            rule = {
                k: getattr(self.cfg, k)
                for k in ("d_in", "d_sae", "architecture", "k", "apply_b_dec_to_input", "input_scale", "output_scale")
            }
            h.update(json.dumps(rule, sort_keys=True).encode())
            for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
                t = getattr(self, name)
                if t is not None:
                    h.update(name.encode())
                    h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
            self._identity = h.hexdigest()[:16]
        return self._identity

    def invalidate_identity(self) -> None:
        """Call after changing weights in place (training)."""
        self._identity = None

    def __repr__(self) -> str:
        k = f", k={self.cfg.k}" if self.cfg.k else ""
        return f"SAE({self.cfg.architecture}, d_in={self.d_in}, d_sae={self.d_sae}{k}, id={self.identity})"


def _check_shape(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != shape:
        raise SAEError(f"SAE tensor {name} has shape {tuple(t.shape)}, expected {shape}")
