"""The SAE itself: encode activations into sparse latents and decode them back.

One class covers every architecture we read, because they differ only in the activation function:
ReLU, TopK (ReLU then keep the k largest), JumpReLU (keep a latent only above its threshold;
BatchTopK SAEs are saved as JumpReLU with the learned threshold) and gated (a gate decides which latents
fire, a rescaled copy of the same encoder gives their size). Weights are always held in the SAELens
orientation: W_enc [d_in, d_sae], W_dec [d_sae, d_out] where d_out = d_in except for transcoders, whose
decoder writes another hook; embeddings read only their encoder.

Inputs pass through SAELens's `process_sae_in` order: per-token normalisation (`normalize`), the
dataset-wide input scale, then minus b_dec when `apply_b_dec_to_input`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import torch

from saeembed.errors import SAEError

ARCHITECTURES = ("relu", "topk", "jumprelu", "gated")
# per-token input normalisations SAELens applies at run time (sae_lens/saes/sae.py _setup_activation_normalization)
NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm")

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
    hook: str | None = None  # saeembed hook name, e.g. "layers.3" (or the file's own name when unsupported)
    prepend_bos: bool | None = None  # trained with a BOS token in front of each context; None: not said
    context_size: int | None = None  # tokens per training context; windows are kept no longer
    normalize: str = "none"  # per-token input normalisation, one of NORMALIZATIONS
    d_out: int | None = None  # transcoders: width of the hook the decoder writes (None: d_in)
    hook_out: str | None = None  # transcoders: the hook the decoder writes; `hook` is the one it reads
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
        if self.normalize not in NORMALIZATIONS:
            raise SAEError(f"unknown input normalisation {self.normalize!r}; expected one of {', '.join(NORMALIZATIONS)}")

    @property
    def transcoder(self) -> bool:
        return self.d_out is not None or self.hook_out is not None

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
        *,
        r_mag: torch.Tensor | None = None,
        b_mag: torch.Tensor | None = None,
    ) -> None:
        """For a gated SAE, `b_enc` is the gate's bias (SAELens b_gate) and r_mag, b_mag its magnitude path."""
        super().__init__()
        d_in, d_sae = cfg.d_in, cfg.d_sae
        d_out = cfg.d_out or d_in
        _check_shape("W_enc", W_enc, (d_in, d_sae))
        _check_shape("b_enc", b_enc, (d_sae,))
        _check_shape("W_dec", W_dec, (d_sae, d_out))
        _check_shape("b_dec", b_dec, (d_out,))
        if cfg.apply_b_dec_to_input and d_out != d_in:
            raise SAEError("a transcoder's b_dec lives in its output space; it cannot be subtracted from the input")
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
        if cfg.architecture == "gated":
            if r_mag is None or b_mag is None:
                raise SAEError("a gated SAE needs r_mag and b_mag")
            _check_shape("r_mag", r_mag, (d_sae,))
            _check_shape("b_mag", b_mag, (d_sae,))
            self.register_buffer("r_mag", r_mag.detach().float().contiguous())
            self.register_buffer("b_mag", b_mag.detach().float().contiguous())
        else:
            self.r_mag = self.b_mag = None
        self._norm_state: tuple | None = None  # SAELens keeps the last encode's per-token statistics for decode
        self._identity: str | None = None

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    # --- encoding -------------------------------------------------------------------------

    def sae_input(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input, as SAELens's process_sae_in makes it."""
        x = x.to(self.W_enc.dtype)
        x, _ = normalize_input(x, self.cfg.normalize)
        if self.cfg.input_scale != 1.0:
            x = x * self.cfg.input_scale
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """x W_enc + b_enc of the processed input (for a gated SAE: the gate's pre-activation)."""
        return torch.addmm(self.b_enc, self.sae_input(x), self.W_enc)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Dense latents from pre-activations."""
        arch = self.cfg.architecture
        if arch == "relu":
            return torch.relu(pre)
        if arch == "jumprelu":
            return torch.where(pre > self.threshold, torch.relu(pre), torch.zeros_like(pre))
        if arch == "gated":  # from the gate's pre-activation; _dense avoids the rounding of taking b_gate back out
            return (pre > 0).to(pre.dtype) * torch.relu((pre - self.b_enc) * self.r_mag.exp() + self.b_mag)
        values, indices = self._topk(pre)
        return torch.zeros_like(pre).scatter_(-1, indices, values)

    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.architecture != "gated":
            return self.activate(self.pre_activations(x))
        # SAELens GatedSAE.encode: gate = x W_enc + b_gate; magnitude = x (W_enc e^r_mag) + b_mag, and
        # x W_enc e^r_mag == (x W_enc) e^r_mag column by column, so one product serves both paths
        xw = self.sae_input(x) @ self.W_enc
        gate = (xw + self.b_enc) > 0
        return gate.to(xw.dtype) * torch.relu(xw * self.r_mag.exp() + self.b_mag)

    def _topk(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = min(self.cfg.k, pre.shape[-1])
        values, indices = pre.topk(k, dim=-1, sorted=False)
        return torch.relu(values), indices

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latents [n, d_sae] for activations [n, d_in]. Use encode_coo for large inputs.

        Like SAELens, it keeps the per-token normalisation statistics for the next `decode`."""
        if self.cfg.normalize != "none":
            self._norm_state = normalize_input(x.to(self.W_enc.dtype), self.cfg.normalize)[1]
        return self._dense(x)

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
            if self.cfg.architecture == "topk":
                pre = self.pre_activations(x[start : start + chunk])
                values, indices = self._topk(pre)
                r = torch.arange(pre.shape[0], device=pre.device).unsqueeze(1).expand_as(indices)
                keep = values > 0
                rows.append(r[keep] + start)
                feats.append(indices[keep])
                vals.append(values[keep])
            else:
                dense = self._dense(x[start : start + chunk])
                r, f = dense.nonzero(as_tuple=True)
                rows.append(r + start)
                feats.append(f)
                vals.append(dense[r, f])
        if not rows:
            empty = torch.empty(0, dtype=torch.long, device=x.device)
            return empty, empty, torch.empty(0, device=x.device)
        return torch.cat(rows), torch.cat(feats), torch.cat(vals)

    # --- decoding -------------------------------------------------------------------------

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction of latents z. With a per-token normalisation SAELens undoes it with the statistics
        of the input: those of `x` when given, else of the last `encode` (SAELens's own rule). A transcoder's
        output is another hook's, so nothing is undone there (SAELens Transcoder.decode)."""
        out = z.to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        scale = self.cfg.output_scale if self.cfg.output_scale is not None else 1.0 / self.cfg.input_scale
        out = out * scale if scale != 1.0 else out
        if self.cfg.normalize == "none" or self.cfg.transcoder:
            return out
        state = normalize_input(x.to(self.W_enc.dtype), self.cfg.normalize)[1] if x is not None else self._norm_state
        if state is None or state[0].shape[0] != out.shape[0]:
            raise SAEError(f"decoding a {self.cfg.normalize} SAE needs the input it encoded (decode(z, x))")
        return denormalize_output(out, self.cfg.normalize, state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x)

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
            if self.cfg.normalize != "none":  # only then: SAEs hashed before the key existed keep their id
                rule["normalize"] = self.cfg.normalize
            h.update(json.dumps(rule, sort_keys=True).encode())
            for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "r_mag", "b_mag"):
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


def normalize_input(x: torch.Tensor, mode: str) -> tuple[torch.Tensor, tuple | None]:
    """(normalised x, the statistics decode needs) by SAELens's run_time_activation_norm_fn_in.

    constant_norm_rescale: x * sqrt(d_in) / |x|; layer_norm: (x - mean) / (std + 1e-5) with torch's
    unbiased std. A zero row stays zero under constant_norm_rescale (SAELens would divide by 0 there).
    """
    if mode == "none":
        return x, None
    if mode == "constant_norm_rescale":
        norm = x.norm(dim=-1, keepdim=True)
        coeff = torch.where(norm > 0, x.shape[-1] ** 0.5 / norm.clamp_min(torch.finfo(x.dtype).tiny), torch.ones_like(norm))
        return x * coeff, (coeff,)
    mu = x.mean(dim=-1, keepdim=True)
    centred = x - mu
    std = centred.std(dim=-1, keepdim=True)
    return centred / (std + 1e-5), (std, mu)


def denormalize_output(out: torch.Tensor, mode: str, state: tuple) -> torch.Tensor:
    """SAELens's run_time_activation_norm_fn_out: x / coeff, or x * std + mean (the eps is not undone)."""
    if mode == "constant_norm_rescale":
        return out / state[0]
    std, mu = state
    return out * std + mu


def _check_shape(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != shape:
        raise SAEError(f"SAE tensor {name} has shape {tuple(t.shape)}, expected {shape}")
