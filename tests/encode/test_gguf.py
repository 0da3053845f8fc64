"""GGUF models (llama.cpp/ollama files): a tiny Llama written as GGUF inside the test loads through saeembed
and gives the activations of the same model loaded from safetensors; a missing `gguf` package is one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import _gpt2_tokenizer

gguf = pytest.importorskip("gguf")

N_HEAD, N_KV = 4, 2


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf layout for q/k rows (rotary halves interleaved per head)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_gguf(path, model, tok, dtype=np.float32) -> None:
    """What llama.cpp's converter writes for a Llama with a GPT-2-style BPE tokenizer (F32/F16 tensors)."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    vocab = tok.backend_tokenizer.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert len(tokens) == cfg.vocab_size
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    special = set(tok.all_special_ids)
    w.add_token_types([3 if i in special else 1 for i in range(len(tokens))])  # 3 = control
    import json

    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_add_bos_token(True)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    names = {"embed_tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight"}
    per_layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                 "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                 "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down"}
    for key, value in sd.items():
        key = key.removeprefix("model.")
        if key.startswith("layers."):
            _, i, rest = key.split(".", 2)
            module, _, param = rest.rpartition(".")
            name = f"blk.{i}.{per_layer[module]}.{param}"
            if module == "self_attn.q_proj":
                value = _permute(value, N_HEAD)
            elif module == "self_attn.k_proj":
                value = _permute(value, N_KV)
        else:
            name = names[key]
        # norms stay F32 as llama.cpp writes them; matrices in the dtype asked for
        w.add_tensor(name, np.ascontiguousarray(value.astype(dtype if value.ndim == 2 else np.float32)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """(safetensors folder, GGUF F32 file, GGUF F16 file) of one tiny random Llama."""
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    tok = _gpt2_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=N_HEAD, num_key_value_heads=N_KV, max_position_embeddings=64,
                      rms_norm_eps=1e-5, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaModel(cfg).eval()
    folder = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(folder / "hf")
    tok.save_pretrained(folder / "hf")
    gdir = folder / "gguf"
    gdir.mkdir()
    _write_gguf(gdir / "tiny-F32.gguf", model, tok, np.float32)
    _write_gguf(gdir / "tiny-F16.gguf", model, tok, np.float16)
    return folder / "hf", gdir / "tiny-F32.gguf", gdir / "tiny-F16.gguf"


TEXTS = ["the cat sat on the mat", "hello world, my order was late and the refund not good", "a quick brown fox"]


def _activations(loaded, hook="layers.1"):
    from saeembed.encode.activations import iter_activations

    return torch.cat(list(iter_activations(loaded, hook, TEXTS)))


def test_gguf_f32_matches_safetensors(tiny_llama):
    from saeembed.encode.gguf import with_gguf
    from saeembed.encode.models import load_model

    hf_dir, f32, _ = tiny_llama
    ref = load_model(str(hf_dir), device="cpu")
    got = load_model(with_gguf(str(f32.parent), f32.name), device="cpu")
    assert got.n_layers == 3 and got.hidden_size == 32
    # the name records the file, so a store or SAE card says which GGUF (and quantisation) was used
    assert got.name.endswith("tiny-F32.gguf")
    for text in TEXTS:
        assert got.tokenizer(text)["input_ids"] == ref.tokenizer(text)["input_ids"]
    a, b = _activations(ref), _activations(got)
    assert a.shape == b.shape and a.shape[0] > 10
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_gguf_f16_within_half_precision(tiny_llama):
    from saeembed.encode.models import load_model

    hf_dir, _, f16 = tiny_llama
    a = _activations(load_model(str(hf_dir), device="cpu"), "layers.2")
    b = _activations(load_model(str(f16), device="cpu"), "layers.2")  # --gguf alone, as a path
    rel = (a - b).norm(dim=1) / a.norm(dim=1)
    assert 0 < rel.max() < 5e-3  # half-precision weights: close, yet not bit-equal (so both were really read)


def test_with_gguf_names():
    from saeembed.encode.gguf import with_gguf

    assert with_gguf("some/dir", None) == "some/dir"
    assert with_gguf(None, "/x/m.gguf") == "/x/m.gguf"
    assert with_gguf("owner/repo-GGUF", "m.Q4_0.gguf") == "owner/repo-GGUF/m.Q4_0.gguf"


def test_missing_gguf_package_is_one_line(tiny_llama, monkeypatch):
    import importlib.util

    from saeembed.encode.models import load_model
    from saeembed.errors import ModelError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ModelError) as e:
        load_model(str(tiny_llama[1]), device="cpu")
    assert "pip install gguf" in str(e.value) and "\n" not in str(e.value)
    # transformers also needs accelerate for GGUF: said before it fails deep inside
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else real(name, *a))
    with pytest.raises(ModelError) as e:
        load_model(str(tiny_llama[1]), device="cpu")
    assert str(e.value).endswith("needs the accelerate package: pip install accelerate")


def test_missing_gguf_file(tmp_path):
    from saeembed.encode.models import load_model
    from saeembed.errors import ModelError

    with pytest.raises(ModelError, match="not found"):
        load_model(str(tmp_path / "nope.gguf"), device="cpu")


def test_cli_encode_train_eval_with_gguf(tiny_llama, tmp_path, capsys, monkeypatch):
    """`--model DIR --gguf FILE` on encode, sae train and sae eval; the file name is in what they record."""
    import json

    from saeembed.sae.formats import save_sae
    from saeembed.store import Store
    from tests.conftest import make_sae
    from tests.test_cli import run

    hf_dir, f32, _ = tiny_llama
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS * 4) + "\n")
    sae_dir = save_sae(make_sae(32, 64, hook="layers.1"), tmp_path / "sae")
    rows = {}
    for label, model_args in (("hf", ["--model", hf_dir]), ("gguf", ["--model", f32.parent, "--gguf", f32.name])):
        store = tmp_path / f"{label}.duckdb"
        code, _, err = run(capsys, monkeypatch, "ingest", data, "--corpus", "c", "--store", store)
        assert code == 0, err
        code, out, err = run(capsys, monkeypatch, "encode", "c", *model_args, "--sae", sae_dir, "--store", store,
                             "--json")
        assert code == 0, err
        res = json.loads(out)
        rows[label] = res["activation_rows"]
        with Store(store) as st:
            info = st.corpus("c")
            recorded = st.encoding(info, st.encoded_sae(info))["model"]
        if label == "gguf":
            assert res["model"].endswith("tiny-F32.gguf") and recorded.endswith("tiny-F32.gguf")
    assert rows["gguf"] == rows["hf"] > 0
    out_sae = tmp_path / "trained"
    code, out, err = run(capsys, monkeypatch, "sae", "train", "--model", f32.parent, "--gguf", f32.name,
                         "--hook", "layers.1", "--data", data, "--out", out_sae, "--latents", 64, "--k", 4,
                         "--max-tokens", 2000, "--batch-size", 64, "--device", "cpu", "--json")
    assert code == 0, err
    card = json.loads(out)
    assert card["model"].endswith("tiny-F32.gguf")
    # eval without --model: the SAE's own model, the GGUF file named in its card
    code, out, err = run(capsys, monkeypatch, "sae", "eval", card["path"], "--data", data, "--device", "cpu",
                         "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["model"].endswith("tiny-F32.gguf") and res["n_tokens"] > 0


def test_unreadable_gguf_is_one_line(tmp_path):
    """A GGUF transformers cannot map (an architecture it does not know) is one line naming the file."""
    from saeembed.encode.models import load_model
    from saeembed.errors import ModelError

    path = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(str(path), "nosucharch")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelError) as e:
        load_model(str(path), device="cpu")
    assert "odd.gguf" in str(e.value) and "\n" not in str(e.value)
