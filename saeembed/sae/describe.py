"""What an SAE is and how saeembed will run it, as one dict (`saeembed sae info`)."""

from __future__ import annotations

from saeembed.sae.model import SAE


def describe_sae(source: str | SAE | None) -> dict:
    """Load `source` (path, hub id, release:RELEASE/SAE_ID, or None for the embedded default) and say what it
    reads: format, architecture, the hook its encoder reads (for a transcoder also the hook its decoder
    writes, which embeddings never use), input normalisation and the context it was trained with."""
    if isinstance(source, SAE):
        sae = source
    elif source is None:
        from saeembed.sae.default import load_default_sae

        sae = load_default_sae()
    else:
        from saeembed.sae.formats import load_sae

        sae = load_sae(source)
    c = sae.cfg
    return {
        "sae": sae.identity,
        "source": c.source,
        "format": c.format,
        "architecture": c.architecture,
        "k": c.k,
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "model": c.model,
        "hook": c.hook,
        "transcoder": c.transcoder,
        "hook_out": c.hook_out,
        "d_out": c.d_out,
        "normalize": c.normalize,
        "input_scale": c.input_scale,
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "prepend_bos": c.prepend_bos,
        "context_size": c.context_size,
        "release": c.extra.get("release"),
    }
