import pytest
import torch

from saeembed.encode.capture import ActivationCapture
from saeembed.encode.models import find_blocks, load_model
from saeembed.errors import ModelError
from saeembed.hookpoints import parse_hook


@pytest.fixture(params=["bert", "gpt2"])
def loaded(request, tiny_bert_dir, tiny_gpt2_dir):
    return load_model(tiny_bert_dir if request.param == "bert" else tiny_gpt2_dir, device="cpu")


def _inputs(loaded):
    if loaded.tokenizer.pad_token is None:  # GPT-2 has none, like the real one
        loaded.tokenizer.pad_token = loaded.tokenizer.eos_token
    enc = loaded.tokenizer(["the cat sat on the mat", "hello world"], padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_layers_n_is_hidden_states_n_plus_one(loaded):
    ids, mask = _inputs(loaded)
    with torch.no_grad():
        hs = loaded.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for n in range(loaded.n_layers - 1):  # the last entry may be after a final norm (GPT-2's ln_f)
        with ActivationCapture(loaded, f"layers.{n}") as cap:
            assert torch.allclose(cap(ids, mask), hs[n + 1], atol=1e-6)
        with ActivationCapture(loaded, f"blocks.{n}.hook_resid_pre") as cap:
            assert torch.allclose(cap(ids, mask), hs[n], atol=1e-6)


def test_last_block_output_is_the_block_not_the_final_norm(loaded):
    ids, mask = _inputs(loaded)
    last = loaded.n_layers - 1
    seen = {}
    handle = loaded.blocks[last].register_forward_hook(
        lambda m, a, out: seen.setdefault("out", out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        loaded.model(input_ids=ids, attention_mask=mask)
    handle.remove()
    with ActivationCapture(loaded, f"layers.{last}") as cap:
        assert torch.allclose(cap(ids, mask), seen["out"], atol=1e-6)


def test_forward_stops_after_the_hooked_block(loaded):
    ids, mask = _inputs(loaded)
    for hook, expected in (("layers.0", [0]), ("layers.1", [0, 1]), ("layers.2.pre", [0, 1, 2])):
        started = []
        handles = [b.register_forward_pre_hook(lambda m, a, i=i: started.append(i)) for i, b in enumerate(loaded.blocks)]
        try:
            with ActivationCapture(loaded, hook) as cap:
                cap(ids, mask)
        finally:
            for h in handles:
                h.remove()
        assert started == expected, hook  # no block after the hooked one ever started


def test_bad_hook_names_list_the_valid_ones(loaded):
    with pytest.raises(ModelError, match=r"valid hooks are layers\.0 … layers\.2"):
        ActivationCapture(loaded, "layers.7")
    with pytest.raises(ModelError, match="unknown hook point 'mlp.3'.*layers.N"):
        ActivationCapture(loaded, "mlp.3")


def test_hook_spellings():
    assert parse_hook("blocks.4.hook_resid_post").name == "layers.4"
    assert parse_hook("blocks.4.hook_resid_pre").name == "layers.4.pre"
    assert parse_hook("layers.4").hidden_states_index == 5
    assert parse_hook("layers.4.pre").hidden_states_index == 4


def test_find_blocks(loaded):
    path, blocks = find_blocks(loaded.model)
    assert len(blocks) == 3 and path in ("encoder.layer", "h")


def test_unloadable_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="cannot load model"):
        load_model(tmp_path, device="cpu")
