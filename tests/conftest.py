"""Shared fixtures: tiny Hugging Face models (BERT-like encoder, GPT-2-like decoder) with real fast
tokenizers, built and saved inside the tests, so nothing is downloaded."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", category=UserWarning)

CORPUS_WORDS = (
    "the a an cat dog sat on mat hello world quick brown fox jumps over lazy order refund price battery "
    "sound great terrible late shipping login password help thanks please my your is was not very "
    "good bad and or but with for to of in it this that i you we they billing account review stars"
).split()


def _bert_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    vocab = specials + CORPUS_WORDS + chars + ["##" + c for c in chars]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(dict.fromkeys(vocab))}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=64,
    )


def _gpt2_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([" ".join(CORPUS_WORDS)] * 20, trainer)
    # Like Llama-family tokenizers: a BOS token in front of every sequence (excluded from pooling).
    tok.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", tok.token_to_id("<|endoftext|>"))]
    )
    t = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", model_max_length=64
    )
    t.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] | trim }}<|end|>{% endfor %}"
    )
    return t


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_bert")
    tok = _bert_tokenizer()
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_gpt2")
    tok = _gpt2_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=3, n_head=2, n_positions=64,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    GPT2Model(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_sae(d_in: int, d_sae: int = 64, *, architecture: str = "topk", k: int | None = 8, seed: int = 0,
             hook: str | None = "layers.1", model: str | None = None):
    """A random SAE whose latents fire on typical activations (TopK, ReLU or JumpReLU)."""
    from saeembed.sae.model import SAE, SAEConfig

    g = torch.Generator().manual_seed(seed)
    W_enc = torch.randn(d_in, d_sae, generator=g) / d_in**0.5
    W_dec = torch.randn(d_sae, d_in, generator=g) / d_sae**0.5
    b_enc = torch.randn(d_sae, generator=g) * 0.1
    cfg = SAEConfig(d_in, d_sae, architecture, k=k if architecture == "topk" else None, hook=hook, model=model)
    threshold = torch.full((d_sae,), 0.2) if architecture == "jumprelu" else None
    return SAE(cfg, W_enc, b_enc, W_dec, torch.zeros(d_in), threshold)


@pytest.fixture
def store(tmp_path):
    from saeembed.store import Store

    st = Store(tmp_path / "test.duckdb")
    yield st
    st.close()
