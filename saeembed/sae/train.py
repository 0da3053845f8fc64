"""Train a TopK or BatchTopK sparse autoencoder on a stream of activations.

The recipe follows EleutherAI's sparsify and OpenAI's TopK SAEs (Gao et al. 2024):

* latents = top-k of ReLU(W_enc^T (x - b_dec) + b_enc); reconstruction = latents @ W_dec + b_dec;
* BatchTopK (Bussmann et al. 2024) keeps the batch's k x n_tokens largest latents instead, so a token
  with more to say takes more than k and a token with less takes fewer (each token's candidates are its
  own top 4k, which bounds any one token); inference then uses one threshold, the recent batches'
  average smallest kept value, and the SAE is saved as JumpReLU with it (as dictionary_learning does);
* loss = FVU (squared error over the batch's variance about its mean) + auxk_alpha * AuxK, where AuxK
  asks the top-`auxk_k` *dead* latents (by pre-activation) to reconstruct the residual error, normalised
  by the same batch variance and scaled down by min(n_dead / auxk_k, 1) when few latents are dead
  (sparsify's form);
* decoder rows are kept at unit norm: the gradient component parallel to each row is removed before
  the step and the rows are renormalised after it;
* the encoder starts as the decoder's transpose (random unit directions), b_enc at zero, and b_dec at
  the per-dimension **mean** of the first full shuffle buffer (sparsify uses the first batch's mean,
  OpenAI the geometric median; the mean of a whole buffer is cheap, deterministic and close enough);
* Adam with a linear learning-rate warm-up, lr defaulting to sparsify's 2e-4 / sqrt(d_sae / 16384);
  a short run (max_tokens) scales the warm-up and the dead-latent window to itself unless they are
  given (TrainConfig, in saeembed.config);
* weights in fp32; on CUDA the dense encoder matmul runs under bf16 autocast.

Speed on CPU: the only dense work per step is the encoder matmul (tokens x d_in x d_sae) and the
top-k over its output. The backward pass and the decoder never touch a dense tokens x d_sae matrix:
gradients flow only through the k (+ auxk) selected latents per token, via sparse matmuls
(saeembed.sae.sparse_grad).

Activations come through a shuffle buffer (saeembed.sae.shuffle): it holds `shuffle_buffer` tokens;
when full, a random half is emitted as minibatches and the freed slots are refilled from the stream; at
the end of the stream the rest is drained. Only the buffer is ever in memory.

Resuming: with `checkpoint_dir` set, the full training state (weights, Adam state, step, tokens,
the per-latent tokens-since-fired counters, the shuffle RNG state, the progress window) is written
atomically (temp file + os.replace) to checkpoint_dir/checkpoint.pt every `checkpoint_every` steps and
at the end. A resumed run must be given the same stream from its start:
the trainer re-runs the shuffle buffer (same seed, so the same batches) over the part already trained
on without taking optimizer steps, then continues. Training state, batches and RNG therefore line up
exactly with an uninterrupted run; on the same machine and thread count the resumed weights are
bit-identical to an uninterrupted run's (see tests/sae/test_train.py).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import torch

from saeembed.config import TrainConfig
from saeembed.errors import InputError
from saeembed.sae.model import SAE, SAEConfig
from saeembed.sae.shuffle import ShuffleBuffer
from saeembed.sae.sparse_grad import SelectedPreActs, SparseDecode

CHECKPOINT_NAME = "checkpoint.pt"
_CHECKPOINT_VERSION = 1

# Fields that define a run: a checkpoint written under other values cannot be resumed.
_RUN_FIELDS = (
    "d_sae", "k", "architecture", "lr", "warmup_steps", "batch_size", "auxk_alpha", "auxk_k",
    "dead_tokens_threshold", "shuffle_buffer", "seed",
)


# --- trainer -----------------------------------------------------------------------------------


class _Trainer:
    def __init__(self, d_in: int, cfg: TrainConfig, init_sae: SAE | None):
        self.d_in = d_in
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        d_sae = cfg.d_sae
        g = torch.Generator().manual_seed(cfg.seed)
        if init_sae is not None:
            if init_sae.d_in != d_in or init_sae.d_sae != d_sae:
                raise InputError(
                    f"initial SAE is {init_sae.d_in} -> {init_sae.d_sae}, the run wants {d_in} -> {d_sae}"
                )
            W_dec = init_sae.W_dec.detach().float().cpu().clone()
            W_encT = init_sae.W_enc.detach().float().cpu().T.contiguous()
            b_enc = init_sae.b_enc.detach().float().cpu().clone()
            b_dec = init_sae.b_dec.detach().float().cpu().clone()
            self.b_dec_initialised = True
            self.b_dec_init = "from init_sae"
        else:
            W_dec = torch.randn(d_sae, d_in, generator=g)
            W_dec /= W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
            W_encT = W_dec.clone()
            b_enc = torch.zeros(d_sae)
            b_dec = torch.zeros(d_in)
            self.b_dec_initialised = False
            self.b_dec_init = "mean of the first shuffle buffer"
        # Unit-norm decoder rows; an initial SAE's encoder is rescaled so that its output is unchanged
        # (only the top-k ranking can move).
        norms = W_dec.norm(dim=1).clamp_min(1e-12)
        W_dec = W_dec / norms[:, None]
        W_encT = W_encT * norms[:, None]
        b_enc = b_enc * norms
        P = torch.nn.Parameter
        self.W_encT = P(W_encT.to(self.device))  # [d_sae, d_in]: the sparse backward writes rows
        self.b_enc = P(b_enc.to(self.device))
        self.W_dec = P(W_dec.to(self.device))
        self.b_dec = P(b_dec.to(self.device))
        self.params = [self.W_encT, self.b_enc, self.W_dec, self.b_dec]
        fused = self.device.type in ("cpu", "cuda")
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, fused=fused)
        self.since_fired = torch.zeros(d_sae, dtype=torch.long, device=self.device)
        self.step = 0
        self.tokens_seen = 0
        self.batch_topk = cfg.architecture == "batchtopk"
        # BatchTopK: a token's candidates are its own top 4k (the cap keeps the sparse backward small)
        self.k_row = min(cfg.d_sae, 4 * cfg.k) if self.batch_topk else cfg.k
        self.threshold: float | None = None  # BatchTopK's inference threshold, a running average
        self._pre_buf: torch.Tensor | None = None
        self.window = {"n": 0, "loss": 0.0, "fvu": 0.0, "l0": 0.0}
        self.last_record: dict | None = None

    # --- one optimizer step ---

    def init_b_dec(self, filled: torch.Tensor) -> None:
        if not self.b_dec_initialised:
            with torch.no_grad():
                self.b_dec.copy_(filled.double().mean(0).float())
            self.b_dec_initialised = True

    def _dense_pre(self, xc: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return torch.addmm(self.b_enc, xc, self.W_encT.T).relu_()
        n = xc.shape[0]
        if self._pre_buf is None or self._pre_buf.shape[0] != n:
            self._pre_buf = torch.empty(n, self.cfg.d_sae, device=self.device)  # reused: no page faults
        return torch.addmm(self.b_enc, xc, self.W_encT.T, out=self._pre_buf).relu_()

    def train_step(self, x: torch.Tensor) -> dict:
        cfg = self.cfg
        n = x.shape[0]
        k = self.k_row
        with torch.no_grad():
            xc = x - self.b_dec
            pre = self._dense_pre(xc)
            top_vals, top_idx = pre.topk(k, dim=1, sorted=False)
            top_idx, order = top_idx.sort(dim=1)  # the sparse decoder wants sorted rows
            top_vals = top_vals.gather(1, order)
            kept = self._batch_keep(top_vals) if self.batch_topk else None
            dead = self.since_fired >= cfg.dead_tokens_threshold
            n_dead = int(dead.sum())
            use_aux = cfg.auxk_alpha > 0 and n_dead > 0
            if use_aux:
                k_aux = min(cfg.auxk_k, n_dead)
                dead_idx = dead.nonzero().squeeze(1)
                _, loc = pre.index_select(1, dead_idx).topk(k_aux, dim=1, sorted=False)
                all_idx = torch.cat([top_idx, dead_idx[loc.sort(dim=1).values]], dim=1)
            else:
                all_idx = top_idx

        vals = SelectedPreActs.apply(pre, all_idx, xc, self.W_encT, self.b_enc, self.b_dec)
        codes = vals[:, :k] if kept is None else vals[:, :k] * kept  # dropped latents get no gradient
        recon = SparseDecode.apply(codes, top_idx, self.W_dec) + self.b_dec
        err = x - recon
        total_var = (x - x.mean(0)).pow(2).sum().clamp_min(1e-30)
        fvu = err.pow(2).sum() / total_var
        loss = fvu
        if use_aux:
            e_hat = SparseDecode.apply(vals[:, k:], all_idx[:, k:], self.W_dec)
            scale = min(n_dead / cfg.auxk_k, 1.0)
            auxk_loss = scale * (e_hat - err.detach()).pow(2).sum() / total_var
            loss = fvu + cfg.auxk_alpha * auxk_loss
        loss_value = loss.detach().item()
        if not math.isfinite(loss_value):
            raise InputError(
                f"SAE training diverged at step {self.step + 1} (loss {loss_value}); "
                "check the activations for nan/inf values, or lower the learning rate"
            )
        loss.backward()

        with torch.no_grad():
            # Keep decoder rows unit-norm: drop the gradient along each row, step, renormalise.
            W, gW = self.W_dec, self.W_dec.grad
            gW -= (gW * W).sum(1, keepdim=True) * W
            lr = cfg.lr * min(1.0, (self.step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else cfg.lr
            for group in self.opt.param_groups:
                group["lr"] = lr
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            W /= W.norm(dim=1, keepdim=True).clamp_min(1e-12)

            fired = top_vals > 0 if kept is None else kept.bool()
            self.since_fired += n
            self.since_fired[top_idx[fired]] = 0
            l0 = float(fired.sum()) / n
        self.step += 1
        self.tokens_seen += n
        w = self.window
        w["n"] += 1
        w["loss"] += loss_value
        w["fvu"] += fvu.detach().item()
        w["l0"] += l0
        return w

    def _batch_keep(self, top_vals: torch.Tensor) -> torch.Tensor:
        """0/1 mask of the batch's cfg.k x n_tokens largest positive values; updates the threshold."""
        flat = top_vals.flatten()
        n_keep = min(flat.numel(), self.cfg.k * top_vals.shape[0])
        cut = flat.topk(n_keep, sorted=False).values.min()
        kept = (top_vals >= cut) & (top_vals > 0)
        smallest = float(top_vals[kept].min()) if kept.any() else 0.0
        # Averaged over the last ~10 batches: the one threshold inference uses instead of the batch. The cut
        # falls as training goes on, so a longer average would lag behind the final weights.
        self.threshold = smallest if self.threshold is None else 0.9 * self.threshold + 0.1 * smallest
        return kept.to(top_vals.dtype)

    def dead_fraction(self) -> float:
        """Share of latents silent over the last min(dead_tokens_threshold, tokens_seen) tokens."""
        window = min(self.cfg.dead_tokens_threshold, self.tokens_seen)
        if window == 0:
            return 0.0
        return float((self.since_fired >= window).float().mean())

    def close_window(self) -> dict:
        w = self.window
        rec = {
            "step": self.step,
            "tokens": self.tokens_seen,
            "loss": w["loss"] / w["n"],
            "fvu": w["fvu"] / w["n"],
            "l0": w["l0"] / w["n"],
            "dead_fraction": self.dead_fraction(),
        }
        self.window = {"n": 0, "loss": 0.0, "fvu": 0.0, "l0": 0.0}
        self.last_record = rec
        return rec

    # --- checkpoints ---

    def state(self, stream_tokens: int, buffer_rng: torch.Tensor, checksum: float) -> dict:
        return {
            "version": _CHECKPOINT_VERSION,
            "d_in": self.d_in,
            "config": asdict(self.cfg),
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "stream_tokens": stream_tokens,
            "W_encT": self.W_encT.detach().cpu(),
            "b_enc": self.b_enc.detach().cpu(),
            "W_dec": self.W_dec.detach().cpu(),
            "b_dec": self.b_dec.detach().cpu(),
            "optimizer": self.opt.state_dict(),
            "since_fired": self.since_fired.cpu(),
            "buffer_rng": buffer_rng,
            "b_dec_init": self.b_dec_init,
            "batch_checksum": checksum,
            "window": dict(self.window),
            "last_record": self.last_record,
            "threshold": self.threshold,
        }

    def load(self, state: dict) -> None:
        with torch.no_grad():
            for name in ("W_encT", "b_enc", "W_dec", "b_dec"):
                getattr(self, name).copy_(state[name])
        self.opt.load_state_dict(state["optimizer"])
        self.since_fired.copy_(state["since_fired"])
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        self.window = dict(state["window"])
        self.last_record = state["last_record"]
        self.threshold = state.get("threshold")
        self.b_dec_initialised = True
        self.b_dec_init = state["b_dec_init"]

    def to_sae(self, extra: dict) -> SAE:
        cfg = SAEConfig(
            d_in=self.d_in,
            d_sae=self.cfg.d_sae,
            architecture="jumprelu" if self.batch_topk else "topk",
            k=None if self.batch_topk else self.cfg.k,
            apply_b_dec_to_input=True,
            extra=extra,
        )
        threshold = torch.full((self.cfg.d_sae,), float(self.threshold or 0.0)) if self.batch_topk else None
        return SAE(
            cfg,
            W_enc=self.W_encT.detach().cpu().T.contiguous(),
            b_enc=self.b_enc.detach().cpu(),
            W_dec=self.W_dec.detach().cpu(),
            b_dec=self.b_dec.detach().cpu(),
            threshold=threshold,
        )


def _checksum(x: torch.Tensor) -> float:
    return float(x.double().pow(2).sum())


def _save_atomic(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, d_in: int, cfg: TrainConfig) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same problem for the user
        raise InputError(f"cannot read training checkpoint {path}: {e}") from e
    if not isinstance(state, dict) or state.get("version") != _CHECKPOINT_VERSION:
        raise InputError(f"{path} is not a saeembed training checkpoint (version {_CHECKPOINT_VERSION})")
    saved = state["config"]
    diffs = [f"{f}: {saved.get(f)!r} -> {getattr(cfg, f)!r}" for f in _RUN_FIELDS if saved.get(f) != getattr(cfg, f)]
    if state["d_in"] != d_in:
        diffs.insert(0, f"d_in: {state['d_in']} -> {d_in}")
    if diffs:
        raise InputError(
            f"checkpoint {path} was written by a different run ({'; '.join(diffs)}); "
            "use another checkpoint_dir or resume=False"
        )
    return state


def train_sae(
    batches: Iterable[torch.Tensor],
    d_in: int,
    cfg: TrainConfig,
    *,
    progress: Callable[[dict], None] | None = None,
    resume: bool = True,
    init_sae: SAE | None = None,
) -> tuple[SAE, dict]:
    """Train a TopK or BatchTopK SAE on a stream of activation tensors [n_tokens, d_in] (any chunk sizes).

    progress: called every `log_every` steps, and once after the last step, with
        {step, tokens, loss, fvu, l0, dead_fraction} (loss/fvu/l0 averaged over the steps since the
        previous call; dead_fraction = share of latents silent for the last
        min(dead_tokens_threshold, tokens) tokens).
    resume: with cfg.checkpoint_dir set and a checkpoint there, continue that run. Pass the same
        stream from its start: its first part (the tokens the checkpointed run had read, recorded as
        `stream_tokens`) goes through the shuffle buffer again, so the resumed run draws exactly the
        batches the interrupted one would have, but no optimizer step is taken and no progress is
        reported for the `step` batches already trained on. A stream that differs (checked on the last
        trained batch) or a config that differs in a field of _RUN_FIELDS raises InputError.
    init_sae: start from these weights (same d_in/d_sae) instead of a fresh initialisation; its b_dec
        is kept. Ignored when resuming from a checkpoint.

    Returns the SAE (architecture "topk", or "jumprelu" for BatchTopK; apply_b_dec_to_input=True; the stats are also kept in its
    cfg.extra["training"]) and a stats dict: tokens_seen, steps, fvu / l0 / dead_fraction (of the
    last progress window), lr, resumed_from_step, seconds, b_dec_init, config (resolved).
    """
    cfg = cfg.resolved(d_in)
    started = time.perf_counter()
    trainer = _Trainer(d_in, cfg, init_sae)
    ckpt_path = Path(cfg.checkpoint_dir) / CHECKPOINT_NAME if cfg.checkpoint_dir else None
    state = None
    if ckpt_path is not None and resume and ckpt_path.exists():
        state = _load_checkpoint(ckpt_path, d_in, cfg)
        trainer.load(state)
    resumed_from = trainer.step

    buffer = ShuffleBuffer(
        cfg.shuffle_buffer, cfg.batch_size, d_in, trainer.device, torch.Generator().manual_seed(cfg.seed + 1)
    )
    buffer.on_first_fill = trainer.init_b_dec
    batch_iter = buffer.batches(batches)

    # Replay: the batches the checkpointed run already trained on.
    last = None
    for _ in range(resumed_from):
        last = next(batch_iter, None)
        if last is None:
            raise InputError(
                f"the activation stream ended before the {resumed_from} steps recorded in {ckpt_path}; "
                "pass the same stream as the interrupted run, or resume=False"
            )
    if state is not None and resumed_from > 0:
        same = math.isclose(_checksum(last), state["batch_checksum"], rel_tol=1e-2)
        if not same or not torch.equal(buffer.gen.get_state(), state["buffer_rng"]):
            raise InputError(
                f"the activation stream does not match the one checkpoint {ckpt_path} was trained on; "
                "pass the same stream, or resume=False"
            )

    def checkpoint(x: torch.Tensor) -> None:
        _save_atomic(trainer.state(buffer.stream_tokens, buffer.gen.get_state(), _checksum(x)), ckpt_path)

    x = last
    saved_at = trainer.step
    while cfg.max_tokens is None or trainer.tokens_seen < cfg.max_tokens:
        batch = next(batch_iter, None)
        if batch is None:
            break
        x = batch
        trainer.train_step(x)
        record = trainer.close_window() if trainer.step % cfg.log_every == 0 else None
        if ckpt_path is not None and trainer.step % cfg.checkpoint_every == 0:
            checkpoint(x)
            saved_at = trainer.step
        if record is not None and progress is not None:
            progress(record)

    if trainer.step == 0:
        raise InputError("no activations to train the SAE on")
    if trainer.window["n"] > 0:
        record = trainer.close_window()
        if progress is not None and trainer.step > resumed_from:
            progress(record)
    if ckpt_path is not None and saved_at != trainer.step:
        checkpoint(x)

    final = trainer.last_record
    stats = {
        "tokens_seen": trainer.tokens_seen,
        "steps": trainer.step,
        "fvu": final["fvu"],
        "l0": final["l0"],
        "dead_fraction": final["dead_fraction"],
        "lr": cfg.lr,
        "resumed_from_step": resumed_from,
        "seconds": time.perf_counter() - started,
        "b_dec_init": trainer.b_dec_init,
        "config": asdict(cfg),
    }
    extra = {"training": {k: v for k, v in stats.items() if k != "seconds"}}
    return trainer.to_sae(extra), stats
