#!/usr/bin/env python3
"""Write reference fixtures for the two real GGUF models under ``models/``.

Outputs (under ``fixtures/real/``):

* ``smollm2.json`` / ``gemma3.json`` -- next-token reference for a handful of
  prompts: the exact input ids, and the top-k next tokens (id, decoded string,
  float32 softmax probability, logit) of the *dequantized* model run in float32
  by HF transformers.  Alongside, for information, llama.cpp's top-k for the
  very same ids (llama.cpp runs the quantized weights and quantizes the
  activations, so its probabilities differ by ~1e-2) and a few agreement
  statistics between the two.
* ``tokenizer_smollm2.json`` / ``tokenizer_gemma3.json`` -- transformers'
  tokenization of ~30 varied strings (ids with and without special tokens,
  character and byte offsets, per-id decoded strings), the tokenizer-level
  facts (vocab size, special ids, BOS policy, model/normalizer/pre-tokenizer/
  decoder of the converted ``tokenizers`` pipeline), and llama.cpp's ids for
  the same strings, with the disagreements listed.

Reference implementation
------------------------
transformers dequantizes every GGUF tensor to float32 (``gguf`` dequantizers,
bit-exact with gguf-py) and runs its own modelling code.  For Gemma 3 the GGUF
loader (transformers 5.24) does, checked by :func:`check_gemma3_config`:

* subtract 1 from every ``*norm.weight`` tensor (llama.cpp's converter stores
  Gemma's ``1 + w`` RMSNorm scale with the +1 already added; transformers'
  Gemma3RMSNorm computes ``x * (1 + w)`` again), q/k norms included;
* build ``Gemma3TextConfig`` with ``head_dim = attention.key_length = 256``,
  ``query_pre_attn_scalar = 256`` (class default; = head_dim for 270m),
  ``sliding_window = 512`` from the GGUF and, from the class defaults, the
  sliding-window pattern 6 (layers 5, 11, 17 global, others local) and the
  local RoPE base 10000 (global base 1e6 from ``rope.freq_base``).

These match google/gemma-3-270m's config.json and llama.cpp's gemma3 graph, so
no correction is applied; the script asserts them so a future transformers
that changes a default fails loudly instead of producing silently wrong
fixtures.

Environments
------------
The main process needs torch + transformers + gguf (``/work/pyref``).  The
llama.cpp part runs in a child process under a Python that has
``llama-cpp-python`` (``/work/pyllama``); the same file serves as the child
(``--llama-worker``), importing only the standard library, numpy and
llama_cpp there.  Override the interpreters with ``$PYLLAMA_PYTHON``;
``--no-llama`` skips llama.cpp entirely.

Usage::

    /work/pyref/bin/python scripts/make_real_fixtures.py [--no-llama]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
OUT = ROOT / "fixtures" / "real"
PYLLAMA = os.environ.get("PYLLAMA_PYTHON", "/work/pyllama/bin/python")
TOP_K = 5
N_GREEDY = 8


def number_words(n: int) -> str:
    """English name of 1 <= n < 1000 ("one hundred twenty-three")."""
    ones = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen " \
           "fifteen sixteen seventeen eighteen nineteen".split()
    tens = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
    parts = []
    if n >= 100:
        parts.append(ones[n // 100] + " hundred")
        n %= 100
        if n == 0:
            return parts[0]
    if n < 20:
        parts.append(ones[n])
    else:
        parts.append(tens[n // 10] + ("-" + ones[n % 10] if n % 10 else ""))
    return " ".join(parts)


# A prompt longer than Gemma 3's 512-token sliding window, so that the
# local/global layer split matters.  The next token should be " one" (of
# "one hundred sixty-one").
LONG_COUNT = ", ".join(number_words(i) for i in range(1, 161)) + ","

MODEL_SPECS = {
    "smollm2": {
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "prompts": [
            "The capital of France is",
            "The Eiffel Tower is located in the city of",
            "Monday, Tuesday, Wednesday,",
            "def fibonacci(n):\n",
            "Water boils at a temperature of 100 degrees",
        ],
    },
    "gemma3": {
        "gguf": "gemma-3-270m-q4_k_m.gguf",
        "prompts": [
            "The capital of France is",
            "The Eiffel Tower is located in the city of",
            "Monday, Tuesday, Wednesday,",
            "def fibonacci(n):\n",
            "Water boils at a temperature of 100 degrees",
            LONG_COUNT,
        ],
    },
}

TOKENIZER_STRINGS = [
    "Hello world",
    "The capital of France is",
    " leading space",
    "trailing space ",
    "multiple   spaces   in  between",
    "  two leading spaces",
    "   ",
    "",
    "line one\nline two",
    "tabs\tand\ttabs",
    "\n\nparagraph\n\n",
    "a\r\nb",
    "12345",
    "3.14",
    "Call 555-0123 at 10:30pm on 2024-01-15.",
    "Hello, world! How are you? (fine); [ok]... \"quoted\" 'single'",
    "don't won't it's I'm we'll they've she'd",
    "DON'T SHOUT",
    "café naïve résumé",
    "Ünïcödé ÀÉÎÕÜ straße ñ ø",
    "日本語",
    "日本語のテキストです。",
    "🙂",
    "emoji 🙂 inside 👍🏽 text",
    'fn main() { println!("hi"); }',
    "    def f(x):\n        return x * 2\n",
    "supercalifragilisticexpialidocious",
    "antidisestablishmentarianism",
    "x  5",
    "  42",
    "a\n\n7",
    "version 2.0  3",
    "ｆｕｌｌｗｉｄｔｈ",
    "<|im_start|>user\nHi<|im_end|>",
    "<start_of_turn>user\nHi<end_of_turn>",
]


# --------------------------------------------------------------------------
# llama.cpp side (runs in a child process under the llama-cpp-python venv)
# --------------------------------------------------------------------------

def llama_worker() -> None:
    """Child process: read a JSON request on stdin, answer JSON on stdout.

    Request: {"model_path", "n_ctx", "eval": [[ids], ...], "tokenize": [str],
    "logits_dir"}.  For every id list, the last-position logits are saved to
    ``logits_dir/<i>.npy`` (float32); for every string, the ids with the
    model's default special-token handling and without, special tokens in
    the text parsed (as transformers does).
    """
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    req = json.load(sys.stdin)
    res = {"llama_cpp_python_version": llama_cpp.__version__, "eval": [], "tokenize": []}
    if req.get("tokenize"):
        vocab = Llama(model_path=req["model_path"], vocab_only=True, verbose=False)
        for s in req["tokenize"]:
            b = s.encode("utf-8")
            res["tokenize"].append({
                "ids": vocab.tokenize(b, add_bos=True, special=True),
                "ids_no_special": vocab.tokenize(b, add_bos=False, special=True),
            })
        del vocab
    if req.get("eval"):
        llm = Llama(model_path=req["model_path"], logits_all=True, n_ctx=req["n_ctx"],
                    n_batch=req["n_ctx"], n_threads=2, seed=0, verbose=False)
        for i, ids in enumerate(req["eval"]):
            llm.reset()
            llm.eval(ids)
            logits = np.asarray(llm.scores[len(ids) - 1], dtype=np.float32)
            np.save(os.path.join(req["logits_dir"], f"{i}.npy"), logits)
            res["eval"].append({"n_tokens": len(ids)})
    json.dump(res, sys.stdout)


def run_llama(model_path: Path, evals, strings, logits_dir: str, n_ctx: int):
    req = {"model_path": str(model_path), "eval": evals, "tokenize": strings,
           "logits_dir": logits_dir, "n_ctx": n_ctx}
    proc = subprocess.run([PYLLAMA, os.path.abspath(__file__), "--llama-worker"],
                          input=json.dumps(req), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"llama.cpp worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------
# transformers side
# --------------------------------------------------------------------------

# google/gemma-3-270m config.json (text part), the values that a GGUF loader
# has to get right and that llama.cpp's gemma3 graph uses.
GEMMA3_270M_EXPECTED = {
    "hidden_size": 640,
    "intermediate_size": 2048,
    "num_hidden_layers": 18,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "sliding_window": 512,
    "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 3,
    "rope_theta_global": 1_000_000.0,
    "rope_theta_local": 10_000.0,
    "hidden_activation": "gelu_pytorch_tanh",
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
    "tie_word_embeddings": True,
    "vocab_size": 262144,
}


def gemma3_effective_config(cfg) -> dict:
    rp = cfg.rope_parameters
    return {
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "query_pre_attn_scalar": cfg.query_pre_attn_scalar,
        "sliding_window": cfg.sliding_window,
        "layer_types": list(cfg.layer_types),
        "rope_theta_global": rp["full_attention"]["rope_theta"],
        "rope_theta_local": rp["sliding_attention"]["rope_theta"],
        "hidden_activation": cfg.hidden_activation,
        "attn_logit_softcapping": cfg.attn_logit_softcapping,
        "final_logit_softcapping": cfg.final_logit_softcapping,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "vocab_size": cfg.vocab_size,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_type_global": rp["full_attention"].get("rope_type"),
        "rope_type_local": rp["sliding_attention"].get("rope_type"),
    }


def check_gemma3_config(model, gguf_path: Path) -> dict:
    """Assert transformers built the real Gemma-3-270m config and un-shifted the norms."""
    import gguf
    import numpy as np

    eff = gemma3_effective_config(model.config)
    bad = {k: (eff[k], v) for k, v in GEMMA3_270M_EXPECTED.items() if eff[k] != v}
    if bad:
        raise SystemExit(f"transformers built an unexpected Gemma 3 config (got, expected): {bad}")
    for attn in (layer.self_attn for layer in model.model.layers):
        assert abs(attn.scaling - 256 ** -0.5) < 1e-12, attn.scaling
    # Norm weights: GGUF stores 1 + w; transformers must hold w.
    reader = gguf.GGUFReader(str(gguf_path))
    raw = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors if t.name.endswith("norm.weight")}
    sd = model.state_dict()
    pairs = {"output_norm.weight": "model.norm.weight"}
    for i in range(model.config.num_hidden_layers):
        for g, h in [("attn_norm", "input_layernorm"), ("post_attention_norm", "post_attention_layernorm"),
                     ("ffn_norm", "pre_feedforward_layernorm"), ("post_ffw_norm", "post_feedforward_layernorm"),
                     ("attn_q_norm", "self_attn.q_norm"), ("attn_k_norm", "self_attn.k_norm")]:
            pairs[f"blk.{i}.{g}.weight"] = f"model.layers.{i}.{h}.weight"
    assert set(pairs) == set(raw), set(raw) ^ set(pairs)
    worst = max(float(np.abs(raw[g] - 1.0 - sd[h].numpy()).max()) for g, h in pairs.items())
    assert worst == 0.0, worst
    return eff


def load_hf(gguf_name: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(MODELS), gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(str(MODELS), gguf_file=gguf_name, dtype=torch.float32)
    return tok, model.eval()


def topk_entries(tok, logits, k):
    import torch

    logits = logits.float()
    probs = torch.softmax(logits, -1)
    p, i = probs.topk(k)
    return [{"id": int(a), "token": tok.decode([int(a)]), "prob": round(float(b), 6),
             "logit": round(float(logits[a]), 4)} for a, b in zip(i.tolist(), p.tolist())]


def compare(ref_logits, ll_logits) -> dict:
    """Agreement statistics between the reference and llama.cpp distributions."""
    import torch

    p = torch.softmax(ref_logits.double(), -1)
    q = torch.softmax(ll_logits.double(), -1)
    top_ref = p.topk(TOP_K).indices
    top_ll = q.topk(TOP_K).indices
    union = torch.unique(torch.cat([top_ref, top_ll]))
    return {
        "top1_agree": bool(top_ref[0] == top_ll[0]),
        "top5_same_set": set(top_ref.tolist()) == set(top_ll.tolist()),
        "max_abs_prob_diff_over_top5_union": round(float((p[union] - q[union]).abs().max()), 6),
        "kl_ref_to_llamacpp": round(float((p * (p.clamp_min(1e-300).log() - q.clamp_min(1e-300).log())).sum()), 6),
        "max_abs_logit_diff_over_top5_union": round(float((ref_logits[union] - ll_logits[union]).abs().max()), 4),
    }


def model_fixture(key: str, use_llama: bool) -> dict:
    import numpy as np
    import torch
    import transformers

    spec = MODEL_SPECS[key]
    gguf_path = MODELS / spec["gguf"]
    tok, model = load_hf(spec["gguf"])
    eff = check_gemma3_config(model, gguf_path) if key == "gemma3" else None

    entries, all_ids, ref_logits = [], [], []
    for prompt in spec["prompts"]:
        ids = tok(prompt).input_ids  # the tokenizer's default add_special_tokens
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].float()
            greedy = model.generate(torch.tensor([ids]), max_new_tokens=N_GREEDY, do_sample=False,
                                    attention_mask=torch.ones(1, len(ids), dtype=torch.long))
        cont = greedy[0, len(ids):].tolist()
        all_ids.append(ids)
        ref_logits.append(logits)
        entries.append({
            "prompt": prompt,
            "bos_prepended": ids == [tok.bos_token_id] + tok(prompt, add_special_tokens=False).input_ids,
            "n_tokens": len(ids),
            "input_ids": ids,
            "top5": topk_entries(tok, logits, TOP_K),
            "greedy_continuation_ids": cont,
            "greedy_continuation": tok.decode(cont),
        })

    if key == "gemma3":
        # Show the sliding window matters for the long prompt: same model, same RoPE bases,
        # but a window too large to mask anything.
        i_long = spec["prompts"].index(LONG_COUNT)
        window = model.config.sliding_window
        model.config.sliding_window = 1 << 20
        for layer in model.model.layers:
            if layer.self_attn.sliding_window is not None:
                layer.self_attn.sliding_window = 1 << 20
        with torch.no_grad():
            no_swa = model(torch.tensor([all_ids[i_long]])).logits[0, -1].float()
        model.config.sliding_window = window
        for layer in model.model.layers:
            if layer.self_attn.sliding_window is not None:
                layer.self_attn.sliding_window = window
        entries[i_long]["note"] = (
            f"{len(all_ids[i_long])} tokens > sliding_window {window}: in the local layers position p attends "
            f"to keys p-{window - 1}..p only. top5_without_sliding_window: the same model with the window "
            "disabled (every layer attending to all previous tokens, RoPE bases unchanged), for contrast.")
        entries[i_long]["top5_without_sliding_window"] = topk_entries(tok, no_swa, TOP_K)

    llama_version = None
    if use_llama:
        n_ctx = 1024 if max(map(len, all_ids)) < 1000 else 4096
        with tempfile.TemporaryDirectory() as d:
            res = run_llama(gguf_path, all_ids, [], d, n_ctx)
            llama_version = res["llama_cpp_python_version"]
            for i, e in enumerate(entries):
                ll = torch.from_numpy(np.load(os.path.join(d, f"{i}.npy")))
                e["llama_cpp_top5"] = topk_entries(tok, ll, TOP_K)
                e["llama_cpp_agreement"] = compare(ref_logits[i], ll)

    reference = {
        "implementation": f"HF transformers {transformers.__version__} (torch {torch.__version__}), "
                          "GGUF dequantized to float32 by transformers, forward pass in float32, "
                          "float32 softmax of the last-position logits",
        "gguf": spec["gguf"],
        "correction": "none",
        "tokenization": "tokenizer(prompt) with its default add_special_tokens; "
                        + ("BOS <bos>=2 is prepended (GGUF add_bos_token=True)" if key == "gemma3"
                           else "no BOS (GGUF add_bos_token=False)"),
        "llama_cpp": (f"llama-cpp-python {llama_version}: same input ids, quantized weights, "
                      "n_threads=2, last-position logits; for information only "
                      "(expect ~1e-2 probability differences)") if use_llama else "not run",
    }
    if key == "gemma3":
        reference["correction"] = (
            "none needed: transformers' GGUF loader subtracts 1 from all norm weights (incl. q/k norms) "
            "and builds the real google/gemma-3-270m config (asserted by the script, see model_config)")
        reference["model_config"] = eff
    out = {"reference": reference, "prompts": entries}
    return out


# --------------------------------------------------------------------------
# tokenizer fixtures
# --------------------------------------------------------------------------

def tokenizer_fixture(key: str, use_llama: bool) -> dict:
    import transformers
    from transformers import AutoTokenizer

    spec = MODEL_SPECS[key]
    tok = AutoTokenizer.from_pretrained(str(MODELS), gguf_file=spec["gguf"])
    backend = json.loads(tok.backend_tokenizer.to_str())
    model_info = {k: v for k, v in backend["model"].items() if k not in ("vocab", "merges")}
    model_info["n_vocab_entries"] = len(backend["model"]["vocab"])
    model_info["n_merges"] = len(backend["model"].get("merges") or [])
    added = backend["added_tokens"]

    probe = tok("a").input_ids
    facts = {
        "tokenizer_class": type(tok).__name__,
        "vocab_size": len(tok),
        "bos_token_id": tok.bos_token_id, "bos_token": tok.bos_token,
        "eos_token_id": tok.eos_token_id, "eos_token": tok.eos_token,
        "pad_token_id": tok.pad_token_id, "pad_token": tok.pad_token,
        "unk_token_id": tok.unk_token_id, "unk_token": tok.unk_token,
        "adds_bos_by_default": bool(tok.bos_token_id is not None and probe[0] == tok.bos_token_id),
        "adds_eos_by_default": bool(tok.eos_token_id is not None and probe[-1] == tok.eos_token_id),
        "model": model_info,
        "normalizer": backend["normalizer"],
        "pre_tokenizer": backend["pre_tokenizer"],
        "post_processor": backend["post_processor"],
        "decoder": backend["decoder"],
        "n_added_tokens": len(added),
        "n_special_added_tokens": sum(1 for a in added if a["special"]),
        "added_tokens_first": added[:8],
    }
    if key == "smollm2":
        facts["pre_tokenizer_regex"] = (
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
        facts["notes"] = (
            "GGUF tokenizer.ggml.pre = 'smollm'. transformers 5.24 has no split regex for 'smollm' "
            "(gguf_tokenizer_mapping.GGUF_PRE_TOKENIZER_SPLITS), so it keeps GPT2Tokenizer's "
            "ByteLevel(use_regex=True) pre-tokenizer, whose regex (from the tokenizers crate) is "
            "pre_tokenizer_regex above. llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM first isolates every "
            r"digit (regex '\p{N}'), then applies the GPT-2 regex to the pieces between -- as does the "
            "original HF SmolLM2 tokenizer.json (Sequence[Digits(individual_digits=true), ByteLevel]). "
            "No merge of this vocabulary involves a digit, so digits always come out one token each "
            "either way; the two pre-tokenizers only differ on a run of >= 2 whitespace characters "
            "directly before a digit: GPT-2 regex alone lets ' ?\\p{N}+' take the last space ('x  5' -> "
            "x, Ġ, Ġ, 5), the digit split first leaves the whole run together (x, ĠĠ, 5). "
            "ids_digits_split: the ids with the original Digits+ByteLevel pre-tokenizer.")
        facts["llama_cpp_pre_tokenizer_regexes"] = [
            r"\p{N}", r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"]
    else:
        facts["notes"] = (
            "GGUF tokenizer.ggml.model = 'llama' (SentencePiece), no merges stored. transformers builds a "
            "tokenizers BPE model with byte_fallback=True, unk '<unk>', fuse_unk=True, its merges "
            "re-derived from the vocabulary with token position in the file (not the score) as the "
            "priority; GGUF tokens consisting only of spaces are respelled with U+2581. Normalizer: "
            "replace ' ' with U+2581 (no prefix space: add_space_prefix=False). Pre-tokenizer: split on "
            "' ' MergedWithPrevious (on the raw text, i.e. a no-op after normalization has removed the "
            "spaces). Decoder: U+2581 -> ' ', ByteFallback, Fuse. Post-processor prepends <bos>.")

    digits_tok = None
    if key == "smollm2":
        from tokenizers import pre_tokenizers
        digits_tok = tok.backend_tokenizer.__class__.from_str(tok.backend_tokenizer.to_str())
        digits_tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
        facts["original_hf_pre_tokenizer"] = json.loads(digits_tok.to_str())["pre_tokenizer"]

    rows = []
    for s in TOKENIZER_STRINGS:
        ids = tok(s).input_ids
        enc = tok(s, add_special_tokens=False, return_offsets_mapping=True)
        offsets = [list(o) for o in enc["offset_mapping"]]
        rows.append({
            "text": s,
            "ids": ids,
            "ids_no_special": enc["input_ids"],
            "tokens": tok.convert_ids_to_tokens(enc["input_ids"]),
            "decoded_per_id": [tok.decode([i]) for i in enc["input_ids"]],
            "offsets": offsets,
            "byte_offsets": [[len(s[:a].encode("utf-8")), len(s[:b].encode("utf-8"))] for a, b in offsets],
            "decode_no_special": tok.decode(enc["input_ids"]),
        })
        if digits_tok is not None:
            rows[-1]["ids_digits_split"] = digits_tok.encode(s, add_special_tokens=False).ids

    out = {
        "reference": {
            "implementation": f"HF transformers {transformers.__version__} AutoTokenizer.from_pretrained(models/, "
                              f"gguf_file='{spec['gguf']}') (tokenizer converted from GGUF metadata)",
            "offsets": "offsets: (start, end) in Unicode code points (Python str indices) of 'text', for the "
                       "add_special_tokens=False encoding; byte_offsets: the same in UTF-8 bytes",
            "decoded_per_id": "tokenizer.decode([id]) for each id of ids_no_special",
        },
        "facts": facts,
        "strings": rows,
    }
    if use_llama:
        res = run_llama(MODELS / spec["gguf"], [], TOKENIZER_STRINGS, "", 0)
        dis = []
        for row, ll in zip(rows, res["tokenize"]):
            row["llama_cpp_ids"] = ll["ids"]
            row["llama_cpp_ids_no_special"] = ll["ids_no_special"]
            if ll["ids"] != row["ids"] or ll["ids_no_special"] != row["ids_no_special"]:
                dis.append({"text": row["text"], "transformers": row["ids"], "llama_cpp": ll["ids"],
                            "transformers_tokens": tok.convert_ids_to_tokens(row["ids"]),
                            "llama_cpp_tokens": tok.convert_ids_to_tokens(ll["ids"])})
            if digits_tok is not None:
                row["ids_digits_split_agrees_with_llama_cpp"] = row["ids_digits_split"] == ll["ids_no_special"]
        out["reference"]["llama_cpp"] = (
            f"llama-cpp-python {res['llama_cpp_python_version']} Llama(vocab_only=True).tokenize(text, "
            "add_bos=True/False, special=True) -> llama_cpp_ids / llama_cpp_ids_no_special")
        out["llama_cpp_disagreements"] = dis
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-llama", action="store_true", help="skip the llama.cpp comparison")
    ap.add_argument("--only", choices=sorted(MODEL_SPECS), help="only this model")
    args = ap.parse_args()
    if args.llama_worker:
        llama_worker()
        return

    use_llama = not args.no_llama
    if use_llama and not Path(PYLLAMA).exists():
        raise SystemExit(f"{PYLLAMA} not found; set $PYLLAMA_PYTHON or pass --no-llama")
    for spec in MODEL_SPECS.values():
        if not (MODELS / spec["gguf"]).exists():
            raise SystemExit(f"missing {MODELS / spec['gguf']}; run scripts/fetch-models.sh")
    OUT.mkdir(parents=True, exist_ok=True)

    import torch
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    for key in ([args.only] if args.only else MODEL_SPECS):
        for name, fn in ((f"tokenizer_{key}.json", tokenizer_fixture), (f"{key}.json", model_fixture)):
            data = fn(key, use_llama)
            path = OUT / name
            path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
