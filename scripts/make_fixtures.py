#!/usr/bin/env python3
"""Generate the tiny reference-model fixtures under ``fixtures/models/``.

Every fixture is a randomly initialised, very small Hugging Face model together with the
outputs that ``transformers`` computes for it, so that the Rust forward passes can be checked
against the reference implementation without downloading anything.

For each model ``<name>`` the script writes ``fixtures/models/<name>/``:

* ``config.json``, ``model.safetensors``, ``generation_config.json`` (causal models),
  ``tokenizer.json``, ``tokenizer_config.json`` ... : a normal ``save_pretrained`` folder that
  loads back with ``AutoModelForCausalLM`` / ``AutoModelForMaskedLM`` and ``AutoTokenizer``.
* ``expected.safetensors``: float32 reference tensors (see ``EXPECTED_DOC`` below).
* ``expected.json``: ids, tokenization offsets, targets, padded batch, and a description of the
  tensors.

Everything is deterministic (fixed seeds, float32, eager attention, one CPU thread), so running
the script twice gives byte-identical files.  Nothing is downloaded: tokenizers are trained with
the ``tokenizers`` library on the small corpus embedded below and the weights are random.

Usage::

    python scripts/make_fixtures.py            # all fixtures
    python scripts/make_fixtures.py gpt2 bert  # only some of them

Reference environment: transformers 5.24.0, torch 2.15.0, tokenizers 0.23.3, safetensors 0.8.0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# One thread and no tokenizer parallelism: results must not depend on the machine's core count.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import (  # noqa: E402
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPTJConfig,
    GPTJForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    RobertaConfig,
    RobertaForMaskedLM,
)

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "fixtures" / "models"

REFERENCE = (
    f"transformers {transformers.__version__} / torch {torch.__version__.split('+')[0]}, "
    "eager attention, float32"
)

# ------------------------------------------------------------------------------------------------
# Text
# ------------------------------------------------------------------------------------------------

# Training corpus for the tiny tokenizers: varied English with punctuation, digits, and a few
# non-ASCII characters (accents, an em dash, curly quotes, an emoji).
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
    "In 1969, two astronauts walked on the Moon; 12 people have done so since.",
    "Please call me at 555-0199 before 9:30 a.m. tomorrow!",
    "The café on the corner serves a naïve but charming crème brûlée.",
    "Wait — did you really say that? Yes, I did.",
    "Attribution methods explain which input tokens matter for a prediction.",
    "Gradients times inputs, integrated gradients, and attention rollout are common choices.",
    "The model reads the sentence, token by token, and predicts what comes next.",
    "It was the best of times, it was the worst of times.",
    "To be, or not to be: that is the question.",
    "He paid $3.50 for coffee and 2 croissants (both were delicious).",
    "Numbers like 3.14159, 2.71828 and 1.41421 show up everywhere in math.",
    "The weather today is sunny 🌞 with a high of 24°C.",
    "Emails such as hello@example.com should not be split strangely.",
    "Rust and Python are both popular languages; Rust is fast, Python is friendly.",
    "\"Quoted text\" and 'single quotes' and “curly quotes” all appear in books.",
    "The children played in the garden while their parents talked.",
    "A neural network is a function with many learnable parameters.",
    "Language models assign probabilities to sequences of words.",
    "Why did the chicken cross the road? To get to the other side!",
    "Über-cool façades in São Paulo and Zürich attract many tourists.",
    "Roses are red, violets are blue, sugar is sweet, and so are you.",
    "The train leaves at 7:45 pm from platform 3b.",
    "Hello, world! Hello again, world. Goodbye, world...",
    "Keep calm and carry on; everything will be fine.",
    "The committee met on 2024-03-15 to discuss the budget of €1,200.",
    "Can you hear the music? It's coming from next door.",
    "   Leading spaces, trailing spaces,   and   multiple   spaces matter.   ",
    "Line one\nLine two\n\nLine four after an empty line.",
    "The dog barked; the cat hissed; the bird simply flew away.",
    "Simple sentences are easy to read, but long ones can be hard to follow.",
    "My favourite fruits are apples, bananas, cherries and dates.",
    "If it rains tomorrow, we will stay inside and read a book.",
    "The end. 🎉",
]

# The three texts every model is run on: a plain sentence, a ~4-token text, and a text of >= 12
# tokens with non-ASCII characters (whose UTF-8 bytes are split across byte-level tokens).  They
# are kept short because the fixture size grows with length * vocab.
TEXTS = [
    "The cat sat on the mat.",
    "Hello world",
    "The café is naïve.",
]

# Extra strings that are only tokenized (ids and offsets recorded, no model outputs).
TRICKY = [
    " leading space and trailing ",
    "multiple   spaces\there",
    "line one\nline two",
    "Zürich — naïve café 🎉!",
    "unseen: 東京 ✓",  # characters absent from the corpus ([UNK] for BERT, raw bytes otherwise)
]


# ------------------------------------------------------------------------------------------------
# Tokenizers
# ------------------------------------------------------------------------------------------------

VOCAB = 352  # target vocabulary size of every tokenizer (specials included)


def train_byte_level_bpe(vocab_size: int, special_tokens: list[str | AddedToken]) -> Tokenizer:
    """GPT-2 style byte-level BPE (no prefix space), special tokens first (ids 0..)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def causal_tokenizer(
    special_tokens: list[str], bos: str | None, eos: str, unk: str | None, pad: str
) -> PreTrainedTokenizerFast:
    tok = train_byte_level_bpe(VOCAB, special_tokens)
    kwargs: dict[str, Any] = {"eos_token": eos, "pad_token": pad}
    if bos is not None:
        kwargs["bos_token"] = bos
    if unk is not None:
        kwargs["unk_token"] = unk
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def wordpiece_vocab(
    normalizer: normalizers.Normalizer,
    pre_tokenizer: pre_tokenizers.PreTokenizer,
    specials: list[str],
    vocab_size: int,
    min_frequency: int = 2,
) -> dict[str, int]:
    """A WordPiece vocabulary learned BPE-style, deterministically.

    ``tokenizers.trainers.WordPieceTrainer`` is not reproducible (it numbers the ``##x``
    continuation pieces in hash-map order, and merge ties are broken by those numbers), so the
    vocabulary is learned here instead: words are split into ``c ##c ##c ...`` and the most
    frequent adjacent pair (ties: lexicographically smallest) is merged until the vocabulary is
    full or no pair occurs ``min_frequency`` times.
    """
    counts: dict[str, int] = {}
    for line in CORPUS:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)):
            counts[word] = counts.get(word, 0) + 1
    words = {w: [w[0]] + ["##" + c for c in w[1:]] for w in counts}

    vocab = list(specials)
    alphabet = {p for pieces in words.values() for p in pieces}
    vocab += sorted(alphabet, key=lambda t: (t.startswith("##"), t))
    while len(vocab) < vocab_size:
        pairs: dict[tuple[str, str], int] = {}
        for w, pieces in words.items():
            for a, b in zip(pieces, pieces[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + counts[w]
        if not pairs:
            break
        (a, b), n = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if n < min_frequency:
            break
        merged = a + b[2:]
        vocab.append(merged)
        for w, pieces in words.items():
            out, i = [], 0
            while i < len(pieces):
                if i + 1 < len(pieces) and pieces[i] == a and pieces[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(pieces[i])
                    i += 1
            words[w] = out
    return {t: i for i, t in enumerate(vocab)}


def bert_tokenizer() -> PreTrainedTokenizerFast:
    """BERT uncased style WordPiece: lowercase + strip accents, [CLS] $A [SEP]."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    vocab = wordpiece_vocab(normalizer, pre_tokenizer, specials, VOCAB)
    tok = Tokenizer(
        models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##",
                         max_input_chars_per_word=100)
    )
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(specials)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )


def roberta_tokenizer() -> PreTrainedTokenizerFast:
    """RoBERTa style byte-level BPE with RobertaProcessing (<s> $A </s>)."""
    # As in roberta-base, <mask> swallows the space before it (lstrip).
    mask = AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", mask]
    tok = train_byte_level_bpe(VOCAB, specials)
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")),
        ("<s>", tok.token_to_id("<s>")),
        trim_offsets=True,
        add_prefix_space=False,
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token=mask,
    )


def tok_gpt2() -> PreTrainedTokenizerFast:
    # gpt2 / gpt-j / gpt-neox: a single <|endoftext|> that is bos, eos, unk and (here) pad.
    return causal_tokenizer(
        ["<|endoftext|>"], bos="<|endoftext|>", eos="<|endoftext|>", unk="<|endoftext|>",
        pad="<|endoftext|>",
    )


def tok_llama() -> PreTrainedTokenizerFast:
    # Llama-2 / Mistral ids: <unk>=0, <s>=1, </s>=2; pad = </s>.
    return causal_tokenizer(
        ["<unk>", "<s>", "</s>"], bos="<s>", eos="</s>", unk="<unk>", pad="</s>"
    )


def tok_smollm2() -> PreTrainedTokenizerFast:
    # SmolLM2: <|endoftext|>=0, <|im_start|>=1 (bos), <|im_end|>=2 (eos and pad).
    return causal_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        bos="<|im_start|>", eos="<|im_end|>", unk="<|endoftext|>", pad="<|im_end|>",
    )


def tok_opt() -> PreTrainedTokenizerFast:
    # OPT ids: <s>=0, <pad>=1, </s>=2 (bos and eos), <unk>=3.
    return causal_tokenizer(["<s>", "<pad>", "</s>", "<unk>"], bos="</s>", eos="</s>", unk="<unk>",
                            pad="<pad>")


def tok_gemma() -> PreTrainedTokenizerFast:
    # Gemma ids: <pad>=0, <eos>=1, <bos>=2, <unk>=3, <mask>=4.
    return causal_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"], bos="<bos>",
                            eos="<eos>", unk="<unk>", pad="<pad>")


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------


@dataclass
class Spec:
    name: str
    kind: str  # "causal" | "masked"
    seed: int
    make_tokenizer: Callable[[], PreTrainedTokenizerFast]
    model_cls: type
    config_cls: type
    # Builds the config kwargs from the tokenizer (vocab size and special ids).
    config: Callable[[PreTrainedTokenizerFast], dict[str, Any]]
    # Gemma applies RMSNorm as x * (1 + w): its norm weights are drawn around 0, everybody
    # else's around 1.
    norm_weight_mean: float = 1.0


def ids_of(tok: PreTrainedTokenizerFast) -> dict[str, Any]:
    return {
        "vocab_size": len(tok),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }


def cfg_llama(tok):
    return dict(
        **ids_of(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        # transformers 5 stores rope_theta and the scaling inside `rope_parameters`.
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    )


def cfg_llama_tied(tok):
    return dict(
        **ids_of(tok),
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=3,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
    )


def cfg_qwen2(tok):
    return dict(
        **ids_of(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_sliding_window=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    )


def cfg_mistral(tok):
    return dict(
        **ids_of(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        sliding_window=None,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )


def cfg_gemma3(tok):
    return dict(
        **ids_of(tok),
        hidden_size=40,  # != heads * head_dim (32), like the real gemma-3-270m (640 vs 4*256)
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=24,  # scaling 24**-0.5, not head_dim**-0.5
        hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        sliding_window=4,
        layer_types=[
            "sliding_attention", "sliding_attention", "full_attention", "sliding_attention"
        ],
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
    )


def cfg_gpt2(tok):
    return dict(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_inner=None,  # 4 * n_embd
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
    )


def cfg_opt(tok):
    return dict(
        **ids_of(tok),
        hidden_size=32,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        do_layer_norm_before=True,
        word_embed_proj_dim=32,
        activation_function="relu",
        dropout=0.0,
        attention_dropout=0.0,
        tie_word_embeddings=True,
    )


def cfg_opt_350m_style(tok):
    return dict(
        **ids_of(tok),
        hidden_size=48,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        do_layer_norm_before=False,  # post-LN; no final_layer_norm
        word_embed_proj_dim=32,  # project_in 32->48, project_out 48->32
        activation_function="relu",
        dropout=0.0,
        attention_dropout=0.0,
        tie_word_embeddings=True,
    )


def cfg_gptj(tok):
    return dict(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,  # head_dim 16
        rotary_dim=8,  # < head_dim: only the first 8 dims of each head rotate
        n_inner=64,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
    )


def _cfg_neox(tok, parallel: bool):
    return dict(
        **ids_of(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 16
        max_position_embeddings=64,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        use_parallel_residual=parallel,
        attention_bias=True,
        tie_word_embeddings=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        # rotary_pct 0.5 (written as rope_parameters.partial_rotary_factor by transformers 5)
        rope_parameters={
            "rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5
        },
    )


def cfg_bert(tok):
    return dict(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_act="gelu",
        max_position_embeddings=64,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        tie_word_embeddings=True,
    )


def cfg_roberta(tok):
    return dict(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_act="gelu",
        max_position_embeddings=64 + 2,  # positions start at pad_token_id + 1 = 2
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        tie_word_embeddings=True,
    )


SPECS = [
    Spec("llama", "causal", 1001, tok_llama, LlamaForCausalLM, LlamaConfig, cfg_llama),
    Spec("llama_tied", "causal", 1002, tok_smollm2, LlamaForCausalLM, LlamaConfig, cfg_llama_tied),
    Spec("qwen2", "causal", 1003, tok_llama, Qwen2ForCausalLM, Qwen2Config, cfg_qwen2),
    Spec("mistral", "causal", 1004, tok_llama, MistralForCausalLM, MistralConfig, cfg_mistral),
    Spec("gemma3", "causal", 1005, tok_gemma, Gemma3ForCausalLM, Gemma3TextConfig, cfg_gemma3,
         norm_weight_mean=0.0),
    Spec("gpt2", "causal", 1006, tok_gpt2, GPT2LMHeadModel, GPT2Config, cfg_gpt2),
    Spec("opt", "causal", 1007, tok_opt, OPTForCausalLM, OPTConfig, cfg_opt),
    Spec("opt_350m_style", "causal", 1008, tok_opt, OPTForCausalLM, OPTConfig, cfg_opt_350m_style),
    Spec("gptj", "causal", 1009, tok_gpt2, GPTJForCausalLM, GPTJConfig, cfg_gptj),
    Spec("gpt_neox", "causal", 1010, tok_gpt2, GPTNeoXForCausalLM, GPTNeoXConfig,
         lambda t: _cfg_neox(t, parallel=True)),
    Spec("gpt_neox_seq", "causal", 1011, tok_gpt2, GPTNeoXForCausalLM, GPTNeoXConfig,
         lambda t: _cfg_neox(t, parallel=False)),
    Spec("bert", "masked", 1012, bert_tokenizer, BertForMaskedLM, BertConfig, cfg_bert),
    Spec("roberta", "masked", 1013, roberta_tokenizer, RobertaForMaskedLM, RobertaConfig,
         cfg_roberta),
]

# Architecture quirks worth knowing when re-implementing each model (copied to expected.json).
NOTES: dict[str, list[str]] = {
    "llama": [
        'rope_parameters.rope_type "llama3": inverse frequencies rescaled (see rope_inv_freq)',
        "GQA: 4 query heads share 2 kv heads (kv head = q head // 2)",
        "untied lm_head",
    ],
    "llama_tied": [
        "tied embeddings: model.safetensors has no lm_head.weight, logits use embed_tokens",
        "GQA: 3 query heads share 1 kv head; rope_theta 100000",
    ],
    "qwen2": ["q/k/v projections have biases, o_proj does not", "tied embeddings"],
    "mistral": ["sliding_window null: plain causal attention", "untied lm_head"],
    "gemma3": [
        "embed_tokens multiplies by sqrt(hidden) (a float32 scalar here); embeds.* include it",
        "RMSNorm is x * (1 + w) computed in float32; norm weights ~ N(0, 0.2)",
        "q_norm / k_norm (RMSNorm over head_dim) applied to q and k before RoPE",
        "attention scale query_pre_attn_scalar**-0.5 = 24**-0.5, not head_dim**-0.5",
        "heads * head_dim (32) != hidden (40)",
        "block: h += post_attention_layernorm(attn(input_layernorm(h))); "
        "h += post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))",
        "mlp: down(gelu_tanh(gate(x)) * up(x))",
        "sliding layers: query i sees key j iff i - sliding_window < j <= i",
        "sliding layers use rope_parameters.sliding_attention.rope_theta (1e4), "
        "full layers rope_parameters.full_attention.rope_theta (1e6)",
        "config.json also has a stale `_sliding_window_pattern: 6`; layer_types is authoritative",
        "tied embeddings",
    ],
    "gpt2": [
        "Conv1D weights are stored [in, out] (transposed w.r.t. nn.Linear); "
        "c_attn output is q | k | v",
        "learned positions wpe; tied lm_head (no lm_head.weight saved); gelu_new (tanh)",
    ],
    "opt": [
        "learned positions looked up at position + 2 (embed_positions has max_pos + 2 rows); "
        "position = cumsum(attention_mask) * attention_mask - 1",
        "pre-LN (do_layer_norm_before), final_layer_norm, relu, tied lm_head",
    ],
    "opt_350m_style": [
        "post-LN (do_layer_norm_before false): self_attn_layer_norm after the attention "
        "residual add, final_layer_norm after the MLP residual add, no decoder final_layer_norm",
        "word_embed_proj_dim 32 < hidden 48: h = project_in(embed_tokens(ids)) + positions; "
        "logits = lm_head(project_out(h)); project_in/out have no bias; lm_head tied",
        "embeds.* and grad.* are 32-dim (before project_in)",
        "positions offset by 2 as in opt",
    ],
    "gptj": [
        "rotary on the first rotary_dim (8) of each head's 16 dims, INTERLEAVED pairs "
        "(2i, 2i+1) (rotate_every_two), base 10000",
        "parallel residual, one LayerNorm: h + attn(ln_1(h)) + mlp(ln_1(h))",
        "q/k/v/out_proj without bias; untied lm_head WITH bias; gelu_new",
    ],
    "gpt_neox": [
        "fused query_key_value: output features are [head0: q k v, head1: q k v, ...] "
        "(head_dim each), not [all q | all k | all v]",
        "rotary on the first partial_rotary_factor * head_dim = 8 dims, rotate_half style "
        "(halves, not interleaved)",
        "use_parallel_residual: h + attn(ln1(h)) + mlp(ln2(h)); untied embed_out; gelu (erf)",
    ],
    "gpt_neox_seq": [
        "as gpt_neox, but use_parallel_residual false: h += attn(ln1(h)); h += mlp(ln2(h))",
    ],
    "bert": [
        "token_type_ids all 0 (token_type_embeddings row 0 added); positions 0..len-1",
        "post-LN encoder, gelu (erf), LayerNorm eps 1e-12",
        "MLM head: dense -> gelu -> LayerNorm -> decoder tied to word_embeddings "
        "+ cls.predictions.bias",
    ],
    "roberta": [
        "position ids = padding_idx + 1 + index for real tokens (start at 2), "
        "padding_idx (1) for pads",
        "MLM head: lm_head.dense -> gelu -> lm_head.layer_norm -> decoder tied to "
        "word_embeddings + lm_head.bias",
        "type_vocab_size 1 (token_type row 0 added); LayerNorm eps 1e-5",
    ],
}

EXPECTED_DOC = {
    "logits.{i}": "[len_i, vocab] logits for text i alone (batch 1, no padding); "
    "MLM logits at every position for masked models",
    "logprobs_last.{i}": "[vocab] log_softmax(logits.{i}[-1])",
    "attn.{i}.{layer}": "[heads, len_i, len_i] attention probabilities (post-softmax) of text i",
    "embeds.{i}": "[len_i, embed_dim] model.get_input_embeddings()(ids_i), "
    "i.e. what is fed as inputs_embeds",
    "grad.{i}": "causal only: [len_i, embed_dim] gradient of "
    "log_softmax(logits[-1])[targets[i]] w.r.t. inputs_embeds",
    "padded_logits": "[batch, max_len, vocab] logits of the right-padded batch "
    "(only attention_mask == 1 positions are meaningful)",
}

STD = 0.2


def is_norm_weight(name: str) -> bool:
    """Weights of LayerNorm / RMSNorm modules (scales, not biases)."""
    leaf = name.rsplit(".", 1)
    if len(leaf) != 2 or leaf[1] != "weight":
        return False
    module = leaf[0].rsplit(".", 1)[-1].lower()
    return "norm" in module or module in ("ln_1", "ln_2", "ln_f")


def randomize(model: torch.nn.Module, spec: Spec) -> None:
    """Redraw every parameter from N(0, STD); norm scales from N(norm_weight_mean, STD).

    Nothing keeps its structured default (zeros/ones), so conventions such as Gemma's
    ``x * (1 + w)`` RMSNorm, biases, or the padding rows of embeddings are all exercised.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            torch.nn.init.normal_(p, mean=0.0, std=STD)
            if is_norm_weight(name):
                p.add_(spec.norm_weight_mean)


# ------------------------------------------------------------------------------------------------
# Reference computation
# ------------------------------------------------------------------------------------------------


def run_model(model, kind, ids=None, embeds=None, attention_mask=None, attentions=False):
    kwargs: dict[str, Any] = {"output_attentions": attentions, "return_dict": True}
    if kind == "causal":
        kwargs["use_cache"] = False
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if embeds is not None:
        return model(inputs_embeds=embeds, **kwargs)
    return model(input_ids=ids, **kwargs)


def masked_ids(tok, text: str) -> tuple[list[int], list[int]]:
    """Normal encoding with special tokens; one or two word tokens replaced by the mask id."""
    ids = tok(text, add_special_tokens=True)["input_ids"]
    specials = set(tok.all_special_ids)
    candidates = [i for i, t in enumerate(ids) if t not in specials]
    positions = [candidates[len(candidates) // 3]]
    if len(candidates) >= 6:
        positions.append(candidates[(2 * len(candidates)) // 3 + 1])
    ids = list(ids)
    for p in positions:
        ids[p] = tok.mask_token_id
    return ids, positions


def tokenization_record(tok, text: str, add_special: bool) -> dict[str, Any]:
    """ids, tokens and offsets; ``offsets`` are Python (character) offsets, ``byte_offsets`` the
    same spans in UTF-8 bytes (what the Rust ``tokenizers`` crate's ``encode`` reports)."""
    enc = tok(text, add_special_tokens=add_special, return_offsets_mapping=True)
    offsets = [list(o) for o in enc["offset_mapping"]]

    def byte(c: int) -> int:
        return len(text[:c].encode("utf-8"))

    return {
        "text": text,
        "ids": list(enc["input_ids"]),
        "tokens": tok.convert_ids_to_tokens(enc["input_ids"]),
        "offsets": offsets,
        "byte_offsets": [[byte(a), byte(b)] for a, b in offsets],
    }


def rope_inv_freq(model: torch.nn.Module) -> dict[str, list[float]]:
    """The rotary inverse frequencies the model actually uses (after llama3 scaling etc.)."""
    return {
        name: [float(x) for x in buf]
        for name, buf in model.named_buffers()
        if name.endswith("inv_freq") and "original" not in name
    }


def build(spec: Spec, out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    tok = spec.make_tokenizer()
    config = spec.config_cls(**spec.config(tok))
    config.architectures = [spec.model_cls.__name__]
    torch.manual_seed(spec.seed)
    model = spec.model_cls._from_config(config, attn_implementation="eager", dtype=torch.float32)
    torch.manual_seed(spec.seed)
    randomize(model, spec)
    model.eval()

    causal = spec.kind == "causal"
    add_special = not causal

    # ---- inputs -------------------------------------------------------------------------------
    all_ids: list[list[int]] = []
    mask_positions: list[list[int]] = []
    for text in TEXTS:
        if causal:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            mask_positions.append([])
        else:
            ids, pos = masked_ids(tok, text)
            mask_positions.append(pos)
        all_ids.append(list(ids))
    assert all(len(ids) <= 60 for ids in all_ids), [len(i) for i in all_ids]
    assert len(all_ids[2]) >= 12 and len(all_ids[1]) <= 6, [len(i) for i in all_ids]

    tensors: dict[str, torch.Tensor] = {}
    targets: list[int] = []
    n_layers = config.num_hidden_layers
    n_heads = config.num_attention_heads
    emb = model.get_input_embeddings()

    for i, ids in enumerate(all_ids):
        x = torch.tensor([ids], dtype=torch.long)
        with torch.no_grad():
            o = run_model(model, spec.kind, ids=x, attentions=True)
            embeds = emb(x)
        logits = o.logits[0]
        tensors[f"logits.{i}"] = logits
        tensors[f"logprobs_last.{i}"] = torch.log_softmax(logits[-1], dim=-1)
        tensors[f"embeds.{i}"] = embeds[0]
        assert len(o.attentions) == n_layers
        for layer, a in enumerate(o.attentions):
            assert a.shape == (1, n_heads, len(ids), len(ids)), a.shape
            tensors[f"attn.{i}.{layer}"] = a[0]
        if causal:
            target = int(logits[-1].argmax())
            targets.append(target)
            e = embeds.detach().clone().requires_grad_(True)
            o2 = run_model(model, spec.kind, embeds=e)
            diff = (o2.logits[0] - logits).abs().max().item()
            assert diff <= 1e-6, f"{spec.name}: inputs_embeds path differs from input_ids by {diff}"
            torch.log_softmax(o2.logits[0, -1], dim=-1)[target].backward()
            tensors[f"grad.{i}"] = e.grad[0]

    # ---- right-padded batch -------------------------------------------------------------------
    pad_id = tok.pad_token_id
    max_len = max(len(ids) for ids in all_ids)
    padded = [ids + [pad_id] * (max_len - len(ids)) for ids in all_ids]
    mask = [[1] * len(ids) + [0] * (max_len - len(ids)) for ids in all_ids]
    with torch.no_grad():
        o = run_model(model, spec.kind, ids=torch.tensor(padded), attention_mask=torch.tensor(mask))
    tensors["padded_logits"] = o.logits
    pad_diff = 0.0
    for i, ids in enumerate(all_ids):
        d = (o.logits[i, : len(ids)] - tensors[f"logits.{i}"]).abs().max().item()
        pad_diff = max(pad_diff, d)
    assert pad_diff < 1e-4, f"{spec.name}: padded logits differ by {pad_diff}"

    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}

    # ---- save ---------------------------------------------------------------------------------
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    save_file(tensors, str(out / "expected.safetensors"))

    # A special token written inside the text must come out as its single id: the mask token
    # for masked LMs (RoBERTa's <mask> also eats the space before it), eos for causal LMs.
    if causal:
        special = f"Hi{tok.eos_token} there"
    else:
        special = f"Paris is the {tok.mask_token} of France."
    tokenized_texts = TEXTS + TRICKY + [special]

    cfg_dict = json.loads((out / "config.json").read_text())
    hidden = getattr(config, "hidden_size", None)
    expected = {
        "reference": REFERENCE,
        "kind": spec.kind,
        "architecture": config.architectures[0],
        "model_type": config.model_type,
        "seed": spec.seed,
        "init": (
            f"all parameters ~ N(0, {STD}); norm scales ~ N({spec.norm_weight_mean}, {STD})"
        ),
        "layers": n_layers,
        "heads": n_heads,
        "kv_heads": getattr(config, "num_key_value_heads", None) or n_heads,
        "head_dim": getattr(config, "head_dim", None) or hidden // n_heads,
        "hidden": hidden,
        "embed_dim": int(tensors["embeds.0"].shape[-1]),
        "vocab_size": config.vocab_size,
        "special_ids": {
            "bos": tok.bos_token_id,
            "eos": tok.eos_token_id,
            "pad": tok.pad_token_id,
            "unk": tok.unk_token_id,
            "mask": tok.mask_token_id,
        },
        "add_special_tokens": add_special,
        "texts": TEXTS,
        "ids": all_ids,
        "tokenization": [tokenization_record(tok, t, add_special) for t in tokenized_texts],
        "padded": {"ids": padded, "attention_mask": mask, "pad_id": pad_id},
        "max_abs_diff_padded_vs_unpadded": pad_diff,
        "notes": NOTES[spec.name],
        "tensors": EXPECTED_DOC,
        "rope_inv_freq": rope_inv_freq(model),
        "config_rope": {
            k: cfg_dict[k]
            for k in ("rope_parameters", "rope_scaling", "rope_theta", "rotary_dim")
            if k in cfg_dict
        },
    }
    if causal:
        expected["targets"] = targets
        expected["targets_rule"] = "argmax of logits at the last position"
    else:
        expected["mask_positions"] = mask_positions
    (out / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n",
                                       encoding="utf-8")

    # ---- verify what was saved ------------------------------------------------------------------
    auto = AutoModelForCausalLM if causal else AutoModelForMaskedLM
    reloaded = auto.from_pretrained(out, attn_implementation="eager", dtype=torch.float32).eval()
    assert type(reloaded) is spec.model_cls, type(reloaded)
    with torch.no_grad():
        o = run_model(reloaded, spec.kind, ids=torch.tensor([all_ids[0]]))
    assert torch.equal(o.logits[0], tensors["logits.0"]), f"{spec.name}: reload changed logits.0"
    tok2 = AutoTokenizer.from_pretrained(out)
    for rec in expected["tokenization"]:
        enc = tok2(rec["text"], add_special_tokens=add_special, return_offsets_mapping=True)
        assert list(enc["input_ids"]) == rec["ids"], (spec.name, rec["text"])
        assert [list(o) for o in enc["offset_mapping"]] == rec["offsets"], (spec.name, rec["text"])
    assert len(tok2) <= config.vocab_size

    n_params = sum(p.numel() for p in model.parameters())
    sizes = {f.name: f.stat().st_size for f in sorted(out.iterdir())}
    return {
        "name": spec.name,
        "params": n_params,
        "vocab": config.vocab_size,
        "lens": [len(i) for i in all_ids],
        "pad_diff": pad_diff,
        "model_kb": sizes["model.safetensors"] / 1024,
        "expected_kb": sizes["expected.safetensors"] / 1024,
        "total_kb": sum(sizes.values()) / 1024,
        "secs": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="fixtures to (re)generate (default: all)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"output folder ({OUT_DIR})")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    known = {s.name: s for s in SPECS}
    assert set(known) == set(NOTES), set(known) ^ set(NOTES)
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown fixture(s) {unknown}; known: {sorted(known)}")
    specs = [known[n] for n in args.names] if args.names else SPECS

    t0 = time.perf_counter()
    rows = [build(spec, args.out / spec.name) for spec in specs]

    print(f"{'name':<16}{'params':>8}{'vocab':>7}  {'lens':<14}{'pad diff':>10}"
          f"{'model KB':>10}{'expect KB':>10}{'total KB':>10}{'s':>6}")
    for r in rows:
        print(f"{r['name']:<16}{r['params']:>8}{r['vocab']:>7}  {str(r['lens']):<14}"
              f"{r['pad_diff']:>10.2e}{r['model_kb']:>10.1f}{r['expected_kb']:>10.1f}"
              f"{r['total_kb']:>10.1f}{r['secs']:>6.1f}")
    total = sum(r["total_kb"] for r in rows)
    print(f"total {total / 1024:.2f} MiB in {args.out}, {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
