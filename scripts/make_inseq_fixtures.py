#!/usr/bin/env python3
"""Reference fixtures made by inseq 0.7.1 itself (fixtures/inseq/).

Writes

  fixtures/inseq/contrast_<model>.json   for the tiny models llama_tied, gpt2, gemma3
      (HF folders under fixtures/models): contrastive attributions, inseq's
      ``attributed_fn="contrast_prob_diff"``, i.e. the attributed function is
      p(target | context) - p(contrast | context), both read at the same (last) position with
      the original context (inseq's default ``contrast_force_inputs=False``: the contrastive
      text only supplies the contrast token id). Methods saliency, input_x_gradient,
      integrated_gradients, occlusion, with inseq's defaults; per method the per-context-token
      scores of the one generated step after inseq's default aggregation (``out.aggregate()``,
      what ``.show()`` displays). The first case also carries ``methods_plain``: the same methods
      with inseq's default attributed function ``probability`` (no contrast).

  fixtures/inseq/saved_occlusion.json
      inseq's occlusion on llama_tied, context "The cat sat on", generated_texts
      "The cat sat on the mat" (3 generated tokens), step_scores=["probability"], saved with
      ``FeatureAttributionOutput.save(path, overwrite=True)`` and inseq's defaults
      (``__instance_type__`` class markers, base64 safetensors arrays); ``info["exec_time"]``
      is set to 0.0 so the file is reproducible. For a schema comparison with reagent's writer.

Cases: context "The cat sat on the mat." plus the first two contexts of CANDIDATES whose two most
likely next tokens both round-trip. A (target, contrast) pair is only taken if tokenizing
context + token text gives exactly context_ids + [token id] (and the token is printable and not
special); for "The cat sat on the mat." the argmax token of these random models is a partial
UTF-8 byte that does not round-trip, so the best-ranked tokens that do are used there
(``target_rank`` / ``contrast_rank``, 0 = argmax, record which). These tokenizers add no BOS.

Integrated gradients with a contrast: inseq 0.7.1 runs Captum's 50 steps as one batch of 50 by
default, and its contrastive step function then raises ("Contrastive batch size (1) must match
candidate batch size (50) ..."). The contrastive integrated_gradients entry is therefore
computed with ``internal_batch_size=1`` (same result up to float rounding; recorded as
``attribution_args``), and the default's error message is recorded once per file.

Everything float32 on CPU, one thread, eager attention, ``torch.manual_seed(0)`` before every
attribution. Floats are the exact float64 widening of the float32 values.

Usage:

    PYTHONPATH=/path/to/inseq-0.7.1 python scripts/make_inseq_fixtures.py
    PYTHONPATH=/path/to/inseq-0.7.1 python scripts/make_inseq_fixtures.py --check-load FILE
        # load FILE with inseq.FeatureAttributionOutput.load, print what it holds, render it
        # (HTML and terminal); exit status 1 on any error. For files reagent writes.

Reference environment: inseq 0.7.1, torch 2.15.0, transformers 5.24.0, captum 0.9.0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

warnings.filterwarnings("ignore", message="Contrastive inputs do not match original inputs")
warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = Path("fixtures") / "inseq"  # relative to ROOT (paths inside the files stay relative)
MODELS = ["llama_tied", "gpt2", "gemma3"]
FIRST_CONTEXT = "The cat sat on the mat."
CANDIDATES = [
    "He said that",
    "The quick brown fox",
    "She went to the store and",
    "The dog ran",
    "My name is",
    "A bird in the hand",
]
METHODS = ["saliency", "input_x_gradient", "integrated_gradients", "occlusion"]
IG_CONTRAST_ERROR = (
    "Contrastive batch size (1) must match candidate batch size (50). Multi-sentence attribution "
    "and methods expanding inputs to multiple steps (e.g. Integrated Gradients) are not yet "
    "supported for contrastive attribution."
)
SAVED_CONTEXT = "The cat sat on"
SAVED_GENERATED = "The cat sat on the mat"


def f32(x) -> float:
    """Exact float64 widening of a float32 value; refuses NaN / inf."""
    v = float(torch.as_tensor(x, dtype=torch.float32))
    if math.isnan(v) or math.isinf(v):
        raise ValueError("non-finite value in fixture")
    return v


def load_hf(name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(Path("fixtures") / "models" / name)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(
        path, attn_implementation="eager", dtype=torch.float32
    ).eval()
    return model, tok


def next_token_probs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids))).logits
    return logits[0, -1].softmax(-1)


def round_trip_tokens(tok, context: str, ids: list[int], probs: torch.Tensor, want: int = 2):
    """The best-ranked tokens whose text round-trips: [(rank, id, text)]."""
    special = set(tok.all_special_ids)
    out = []
    for rank, i in enumerate(probs.argsort(descending=True).tolist()):
        text = tok.decode([i])
        if i in special or not text or not text.isprintable():
            continue
        if tok(context + text)["input_ids"] != ids + [i]:
            continue
        out.append((rank, i, text))
        if len(out) == want:
            break
    return out


def pick_cases(model, tok) -> list[dict]:
    cases = []
    for context in [FIRST_CONTEXT] + CANDIDATES:
        ids = tok(context)["input_ids"]
        assert tok.decode(ids) == context, context
        probs = next_token_probs(model, ids)
        pair = round_trip_tokens(tok, context, ids, probs)
        if context != FIRST_CONTEXT and [r for r, _, _ in pair] != [0, 1]:
            continue
        (tr, t, ttext), (cr, c, ctext) = pair
        cases.append({
            "name": f"ctx{len(cases)}",
            "context_text": context,
            "context_ids": ids,
            "target_text": ttext,
            "target_id": t,
            "target_rank": tr,
            "contrast_text": ctext,
            "contrast_id": c,
            "contrast_rank": cr,
            "p_target": f32(probs[t]),
            "p_contrast": f32(probs[c]),
        })
        if len(cases) == 3:
            break
    assert len(cases) == 3, "not enough contexts whose top-2 next tokens round-trip"
    return cases


def attribute(am, case: dict, contrast: bool, **kw):
    """inseq's attribution of the one generated step; returns (scores, inseq target ids, label)."""
    context = case["context_text"]
    if contrast:
        kw.update(attributed_fn="contrast_prob_diff",
                  contrast_targets=context + case["contrast_text"])
    torch.manual_seed(0)
    out = am.attribute(input_texts=context, generated_texts=context + case["target_text"],
                       show_progress=False, **kw)
    sa = out.sequence_attributions[0]
    L = len(case["context_ids"])
    target_ids = [t.id for t in sa.target]
    # What inseq attributed: the context, then the generated token (id -1 and the label
    # "contrast → target" when attributing with a contrast).
    assert target_ids[:L] == case["context_ids"], (target_ids, case["context_ids"])
    assert len(target_ids) == L + 1, target_ids
    if contrast:
        assert target_ids[L] == -1, target_ids
    else:
        assert target_ids[L] == case["target_id"], target_ids
    agg = out.aggregate().sequence_attributions[0].target_attributions
    assert agg.shape == (L + 1, 1), agg.shape
    col = agg[:, 0]
    assert torch.isfinite(col[:L]).all(), col
    assert torch.isnan(col[L]), col  # the generated token's own entry
    return [f32(v) for v in col[:L]], target_ids, sa.target[L].token


def check_probs(am, case: dict) -> None:
    """inseq's own step scores agree with p_target / p_contrast."""
    context = case["context_text"]
    torch.manual_seed(0)
    out = am.attribute(
        input_texts=context, generated_texts=context + case["target_text"],
        method="dummy", show_progress=False, step_scores=["probability", "contrast_prob"],
        contrast_targets=context + case["contrast_text"],
    )
    s = out.sequence_attributions[0].step_scores
    assert abs(float(s["probability"][0]) - case["p_target"]) < 1e-6, s
    assert abs(float(s["contrast_prob"][0]) - case["p_contrast"]) < 1e-6, s


def run_methods(model, tok, case: dict, contrast: bool) -> tuple[dict, list[int], str]:
    import inseq

    methods = {}
    for method in METHODS:
        am = inseq.load_model(model, method, tokenizer=tok)
        entry = {}
        if method == "integrated_gradients" and contrast:
            try:
                attribute(am, case, True)
            except ValueError as e:
                assert str(e) == IG_CONTRAST_ERROR, str(e)
            else:
                raise AssertionError("inseq's contrastive IG with default batching now works")
            entry["attribution_args"] = {"internal_batch_size": 1}
            scores, ids, label = attribute(am, case, True, internal_batch_size=1)
        else:
            scores, ids, label = attribute(am, case, contrast)
        methods[method] = {"scores": scores, **entry}
    return methods, ids, label


def make_contrast(name: str) -> dict:
    import captum
    import inseq  # noqa: F401
    import transformers

    model, tok = load_hf(name)
    cases = pick_cases(model, tok)
    am = inseq.load_model(model, "saliency", tokenizer=tok)
    for i, case in enumerate(cases):
        check_probs(am, case)
        case["methods"], ids, label = run_methods(model, tok, case, contrast=True)
        case["inseq_target_ids"] = ids
        case["inseq_target_label"] = label
        if i == 0:
            case["methods_plain"], _, _ = run_methods(model, tok, case, contrast=False)
    return {
        "inseq": "0.7.1",
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "captum": captum.__version__,
        "model": name,
        "model_dir": f"fixtures/models/{name}",
        "attributed_fn": "contrast_prob_diff: p(target | context) - p(contrast | context), inseq 0.7.1",
        "notes": [
            "inseq.load_model(hf_model, METHOD, tokenizer=tok).attribute(input_texts=context_text, "
            "generated_texts=context_text + target_text, attributed_fn='contrast_prob_diff', "
            "contrast_targets=context_text + contrast_text, show_progress=False); "
            "contrast_force_inputs=False (inseq default): both probabilities come from the one "
            "forward pass on the original context.",
            "scores: out.aggregate().sequence_attributions[0].target_attributions[:L, 0], inseq's "
            "default aggregation (gradient methods: L2 norm over the hidden dimension, then "
            "divided by the sum over the context; occlusion: |delta| per token, not normalized). "
            "Entry L (the generated token itself) is NaN in inseq and left out.",
            "methods_plain (first case only): the same calls without attributed_fn / "
            "contrast_targets, i.e. inseq's default attributed function p(target | context).",
            "inseq_target_ids: [t.id for t in sequence_attributions[0].target]; with a contrast "
            "inseq labels the generated token 'contrast → target' with id -1 (inseq_target_label).",
            "target_rank / contrast_rank: rank of the token by p(. | context), 0 = argmax; "
            "tokens whose text does not round-trip through the tokenizer are skipped.",
            "integrated_gradients with contrast: inseq 0.7.1's default (50 steps in one batch) "
            "raises integrated_gradients_contrast_default_error; computed with Captum "
            "internal_batch_size=1 instead (the entry's attribution_args).",
            "float32, CPU, 1 thread, eager attention, torch.manual_seed(0) before each call; "
            "floats are the exact float64 widening of float32 values.",
        ],
        "integrated_gradients_contrast_default_error": IG_CONTRAST_ERROR,
        "cases": cases,
    }


def make_saved_occlusion(path: Path) -> None:
    import inseq

    model, tok = load_hf("llama_tied")
    ctx_ids = tok(SAVED_CONTEXT)["input_ids"]
    full_ids = tok(SAVED_GENERATED)["input_ids"]
    assert full_ids[: len(ctx_ids)] == ctx_ids and len(full_ids) == len(ctx_ids) + 3, full_ids
    am = inseq.load_model(model, "occlusion", tokenizer=tok)
    torch.manual_seed(0)
    out = am.attribute(input_texts=SAVED_CONTEXT, generated_texts=SAVED_GENERATED,
                       step_scores=["probability"], show_progress=False)
    assert [t.id for t in out.sequence_attributions[0].target] == full_ids
    out.info["exec_time"] = 0.0
    out.save(str(path), overwrite=True)


def check_load(path: str) -> int:
    try:
        import inseq

        out = inseq.FeatureAttributionOutput.load(path)
        print(f"{type(out).__name__}: {len(out.sequence_attributions)} sequence(s); "
              f"info keys {sorted(out.info)}")
        for i, sa in enumerate(out.sequence_attributions):
            ta = sa.target_attributions
            sa_src = sa.source_attributions
            print(f"[{i}] {type(sa).__name__}: target_attributions "
                  f"{tuple(ta.shape) if ta is not None else None}, source_attributions "
                  f"{tuple(sa_src.shape) if sa_src is not None else None}, "
                  f"source tokens {len(sa.source or [])}, target tokens {len(sa.target or [])}, "
                  f"attr_pos_start {sa.attr_pos_start}, attr_pos_end {sa.attr_pos_end}, "
                  f"step_scores {sorted((sa.step_scores or {}).keys())}, "
                  f"sequence_scores {sorted((sa.sequence_scores or {}).keys())}")
        html = out.show(display=False, return_html=True)
        print(f"HTML: {len(html)} characters")
        out.show()
        return 0
    except Exception:  # noqa: BLE001 - any failure is the answer
        traceback.print_exc()
        return 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", default=MODELS)
    ap.add_argument("--check-load", metavar="FILE",
                    help="load FILE with inseq.FeatureAttributionOutput.load and show it")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.check_load:
        return check_load(args.check_load)
    os.chdir(ROOT)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        fx = make_contrast(name)
        path = OUT_DIR / f"contrast_{name}.json"
        path.write_text(json.dumps(fx, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    path = OUT_DIR / "saved_occlusion.json"
    make_saved_occlusion(path)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
