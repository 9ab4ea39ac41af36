#!/usr/bin/env python3
"""Reference port of the ReAGent paper's faithfulness metrics, and fixture generator.

ReAGent: Zhao & Shan 2024, "ReAGent: A Model-agnostic Feature Attribution Method for
Generative Language Models" (arXiv 2402.00794). The metrics are the soft normalised
sufficiency / comprehensiveness (Soft-NS / Soft-NC) and the hard (top-k) normalised
sufficiency / comprehensiveness used by the paper's evaluation code.

This is an independent port written for testing the Rust implementation. It follows these
files of github.com/casszhao/ReAGent at commit 780977384e4cd9eb53c1093e04643aa0f89d7f81:

  src/evaluation/evaluator/base_masking.py                 forward, masking, top-k mask
  src/evaluation/evaluator/soft_sufficiency.py             SoftSuff = 1 - D(p_s, q)
  src/evaluation/evaluator/soft_comprehensiveness.py       SoftComp = D(p_c, q)
  src/evaluation/evaluator/soft_norm_sufficiency.py        Soft-NS
  src/evaluation/evaluator/soft_norm_comprehensiveness.py  Soft-NC
  src/evaluation/evaluator/sufficiency.py                  hard Suff (and Suff0 = ratio 0)
  src/evaluation/evaluator/comprehensiveness.py            hard Comp (true Hellinger)
  src/evaluation/evaluator/norm_sufficiency.py             hard NS
  src/evaluation/evaluator/norm_comprehensiveness.py       hard NC
  src/evaluation/evaluate_analogies.py                     token-level loop, random baseline
  src/sequence_rationalization.py (l.282-349)              sequence-level loop
  summarise_tokenlevel_log.py, summarise_sequencelevel.py  ln(mean_method / mean_random)
  summarise_all_results_OPT.py                             mean over hard ratios

Every torch operation is the one the original code performs, in the same order and dtype,
so given the same uniforms the port reproduces the original bit for bit (see
``verify-original``). The only difference is where randomness comes from: every
``torch.rand`` of the original is an explicit argument here (uniforms, or the boolean keep
masks derived from them), and the fixtures record the keep masks.

Subcommands (use the project's Python env, e.g. /work/pyref/bin/python):

  fixtures          write fixtures/metrics/*.json from fixtures/models/llama_tied
  selftest          recompute every fixture from its recorded masks and check exact equality
  verify-original   run the paper's own evaluator classes (and evaluate_analogies.py's main)
                    on the tiny model and check that the port agrees exactly; needs the
                    original sources: --original-git-dir (a clone/mirror of casszhao/ReAGent)
                    or --original-src (a folder holding src/evaluation's contents)

Fixture format: see FORMAT_DOC below (also written into every fixture under "doc").
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Callable, Optional, Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "fixtures" / "models" / "llama_tied"
DEFAULT_OUT = ROOT / "fixtures" / "metrics"
DEFAULT_ORIGINAL_GIT = Path("/work/.mirror/casszhao+ReAGent/repo")
PAPER_COMMIT = "780977384e4cd9eb53c1093e04643aa0f89d7f81"
FORMAT = "reagent-metric-fixture/1"

# hard-metric ratios written to the fixtures; the paper's runs use 0.05 0.1 0.2 0.3 (and 1 =
# soft), see runs/eva_analohies_gpt2_inseq_gradient_shap.sh; its "Mean" column averages
# those four (summarise_all_results_OPT.py l.24-44)
HARD_RATIOS = [0.05, 0.1, 0.2, 0.3, 0.5]
PAPER_MEAN_RATIOS = [0.05, 0.1, 0.2, 0.3]
DRAWS = 3
# chosen (by trying seeds 0..39) so that a_peaked has draws on both sides of Soft-NS's
# max(0, .) and the draw-0 dataset means of Soft-NS are > 0 for the method and the random
# baseline (so summary.json's ln ratios are finite); with this tiny random model Soft-NS is
# usually 0
STREAM_SEED = 13

FORMAT_DOC = {
    "shapes": "L = context length, H = hidden size (embedding width), V = vocab size",
    "context_ids": "[L] model input (the context only; the target is NOT part of the input)",
    "target_id": "argmax of q; informational, the metrics never use it",
    "position": "L-1: the position whose next-token distribution is compared",
    "scores.method": "[L] importance scores used as given (no normalisation, no clamping)",
    "scores.random": "[L] random-baseline scores softmax(random_uniforms) over the L positions",
    "random_uniforms": "[L] U[0,1) values behind scores.random",
    "q": "[V] softmax(model(inputs_embeds=E)[0, L-1]) with E = embed(context_ids)",
    "p0": "[V] same with E all zeros (Suff0's distribution)",
    "sqrt2": "torch.sqrt(torch.tensor(2.0)) in the fixture dtype",
    "suff0": "d = D(p0, q); value = 1 - d; one_minus = 1 - value (the Soft-NS/NC denominator)",
    "soft.<method|random>.draws[r]": (
        "one independent draw r: suff_keep_mask / comp_keep_mask [L][H] 0/1 = the Bernoulli "
        "keep masks (uniform[l,h] < keep_prob[l]; suff keep_prob = s, comp keep_prob = 1 - s; "
        "torch draws them as [1, L, H], batch dim dropped here); d_suff = D(p_s, q), "
        "soft_suff = 1 - d_suff, d_comp = D(p_c, q), soft_comp = d_comp, "
        "soft_ns = max(0, soft_suff - suff0) / (1 - suff0), soft_nc = soft_comp / (1 - suff0); "
        "p_suff_top5 / p_comp_top5 = [[id, prob]] of p_s / p_c"),
    "soft.<method|random>.mean": "float64 mean over the draws (fixture convenience; the paper "
                                 "uses a single draw per example)",
    "D": "D(p, q) = sum_v (sqrt(p_v) - sqrt(q_v))^2 / sqrt2 (elementwise division, then sum; "
         "no square root of the sum, no renormalisation)",
    "threshold_check": "uniforms [L][H] behind soft.method.draws[0].suff_keep_mask, to test "
                       "mask = uniforms < keep_prob",
    "hard.<method|random>[i]": (
        "ratio, k = int(ratio * L) (floor), top_k_positions = argsort(scores, descending)[:k] "
        "(torch order), keep_tokens_suff [L] (1 = top-k, kept; the rest zeroed), "
        "keep_tokens_comp [L] (0 = top-k, zeroed); d_suff = D(p_topk, q), suff = 1 - d_suff, "
        "comp = ||sqrt(p/sum p) - sqrt(q/sum q)||_2 / sqrt2 with p = p_without_topk (TRUE "
        "Hellinger, unlike D), norm_suff = max(0, suff - suff0) / (1 - suff0), "
        "norm_comp = comp / (1 - suff0)"),
    "hard.aggregate": "float64 mean of norm_suff / norm_comp over the listed ratios "
                      "(paper: mean over 0.05, 0.1, 0.2, 0.3)",
    "float64": "the same scalars with the model, embeddings and scores in float64 (the paper's "
               "token-level pipeline runs under torch.set_default_dtype(torch.float64)), using "
               "the SAME recorded masks",
    "floats": "float32 values are written as the exact float64 widening (repr round-trips)",
}


# ----------------------------------------------------------------------------------------
# The port (one example, batch 1, exactly the original's tensor operations)
# ----------------------------------------------------------------------------------------


def input_embeddings(model, ids: torch.Tensor) -> torch.Tensor:
    """[1, L] ids -> [1, L, H] token embeddings (base_masking.py l.66-78: the word-token
    embedding table only; GPT-2/OPT add positions inside the model, after masking)."""
    return model.get_input_embeddings().weight[ids, :]


def next_token_probs(model, embeds: torch.Tensor) -> torch.Tensor:
    """base_masking.py l.82-84 / l.92-93: the full sequence through the model with
    inputs_embeds only (no attention_mask, no position_ids), softmax of the logits at the
    last input position L-1. Returns [1, V]."""
    logits = model(inputs_embeds=embeds)["logits"]
    return torch.softmax(logits[:, embeds.shape[1] - 1, :], -1)


def sqrt2(dtype: torch.dtype) -> torch.Tensor:
    # the original writes torch.sqrt(torch.tensor(2.0)): the global default dtype, which is
    # the pipeline dtype in both of the paper's pipelines
    return torch.sqrt(torch.tensor(2.0, dtype=dtype))


def distance_d(prob_original: torch.Tensor, prob_masked: torch.Tensor) -> torch.Tensor:
    """soft_sufficiency.py l.49-67 (same in soft_comprehensiveness.py l.50-61 and
    sufficiency.py l.58-75): sum((sqrt p - sqrt q)^2 / sqrt 2)."""
    p = prob_masked.squeeze()
    q = prob_original.squeeze()
    sqrt_p = torch.sqrt(p)
    sqrt_q = torch.sqrt(q)
    return torch.sum(torch.pow((sqrt_p - sqrt_q), 2) / sqrt2(p.dtype))


def hellinger(prob_original: torch.Tensor, prob_masked: torch.Tensor) -> torch.Tensor:
    """comprehensiveness.py l.60-67 (hard Comp only): renormalise, then the true Hellinger
    distance ||sqrt p - sqrt q||_2 / sqrt 2."""
    p = prob_masked.squeeze()
    q = prob_original.squeeze()
    p = p / torch.sum(p)
    q = q / torch.sum(q)
    sqrt_p = torch.sqrt(p)
    sqrt_q = torch.sqrt(q)
    return torch.norm(sqrt_p - sqrt_q) / sqrt2(p.dtype)


def keep_mask(uniforms: torch.Tensor, keep_prob: torch.Tensor) -> torch.Tensor:
    """base_masking.py l.130-132: uniforms [1, L, H] in [0, 1), keep_prob [1, L] ->
    bool [1, L, H]; an element is kept iff uniform < keep_prob of its token."""
    return uniforms < torch.unsqueeze(keep_prob, 2)


def masked_probs(model, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """base_masking.py l.133 and l.92-93: zero the dropped elements (embedding * bool)."""
    return next_token_probs(model, embeds * mask)


def topk_token_mask(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """base_masking.py l.111-115: 1 at the top-k positions of argsort(descending) (torch's
    tie order), else 0; in the scores' dtype. Returns (mask [1, L], positions [1, k])."""
    ranking = torch.argsort(scores, dim=1, descending=True)
    mask_pos = ranking[:, :k]
    return torch.zeros(scores.shape, dtype=scores.dtype).scatter(-1, mask_pos, 1), mask_pos


def hard_k(ratio: float, length: int) -> int:
    """sufficiency.py l.34-36 / comprehensiveness.py l.35-37: int(ratio * L), float64 product
    truncated (so 0 for small L and ratio)."""
    return int(ratio * length)


def soft_ns(soft_suff: torch.Tensor, suff_0: torch.Tensor):
    """soft_norm_sufficiency.py l.73 verbatim (Python max: the int 0 when the difference is
    <= 0 or NaN)."""
    return max(0, soft_suff - suff_0) / (1 - suff_0)


def soft_nc(soft_comp: torch.Tensor, suff_0: torch.Tensor):
    """soft_norm_comprehensiveness.py l.69."""
    return soft_comp / (1 - suff_0)


class Example:
    """One evaluation example: context ids, its embeddings E and q (computed once, as the
    Normalized evaluators do and pass on to their inner evaluators)."""

    def __init__(self, model, ids: Sequence[int]):
        self.model = model
        self.ids = torch.tensor([list(ids)], dtype=torch.long)
        self.embeds = input_embeddings(model, self.ids)
        self.q = next_token_probs(model, self.embeds)
        self.L = self.ids.shape[1]
        self.H = self.embeds.shape[2]
        self._p0 = None

    # -- Suff0: SufficiencyEvaluator(model, rationale_ratio=0); k = 0, every element dropped
    def p0(self) -> torch.Tensor:
        if self._p0 is None:
            none = torch.zeros(self.embeds.shape, dtype=torch.bool)
            self._p0 = masked_probs(self.model, self.embeds, none)
        return self._p0

    def suff0(self) -> dict:
        d = distance_d(self.q, self.p0())
        return {"d": d, "value": 1 - d}

    # -- soft metrics, given the boolean keep masks [1, L, H]
    def soft_suff(self, mask: torch.Tensor) -> dict:
        p = masked_probs(self.model, self.embeds, mask)
        d = distance_d(self.q, p)
        return {"p": p, "d": d, "value": 1 - d}

    def soft_comp(self, mask: torch.Tensor) -> dict:
        p = masked_probs(self.model, self.embeds, mask)
        d = distance_d(self.q, p)
        return {"p": p, "d": d, "value": d}

    # -- hard metrics (the binary token masks make the Bernoulli draw deterministic:
    #    uniform < 1 always, uniform < 0 never)
    def hard(self, scores: torch.Tensor, ratio: float) -> dict:
        k = hard_k(ratio, self.L)
        rational, pos = topk_token_mask(scores, k)
        keep_suff = rational
        keep_comp = 1 - rational
        p_s = masked_probs(self.model, self.embeds, keep_suff.unsqueeze(2) > 0)
        p_c = masked_probs(self.model, self.embeds, keep_comp.unsqueeze(2) > 0)
        d_s = distance_d(self.q, p_s)
        suff = 1 - d_s
        comp = hellinger(self.q, p_c)
        s0 = self.suff0()["value"]
        return {
            "k": k, "positions": pos[0].tolist(),
            "keep_suff": keep_suff[0], "keep_comp": keep_comp[0],
            "d_suff": d_s, "suff": suff, "comp": comp,
            # norm_sufficiency.py l.69, norm_comprehensiveness.py l.70
            "norm_suff": max(0, suff - s0) / (1 - s0),
            "norm_comp": comp / (1 - s0),
        }


def soft_metrics_from_uniforms(ex: Example, scores: torch.Tensor, u_suff: torch.Tensor,
                               u_comp: torch.Tensor) -> dict:
    """Soft-NS and Soft-NC of one example for one score vector [1, L], given the uniforms of
    the soft-suff and soft-comp draws ([1, L, H] each)."""
    m_s = keep_mask(u_suff, scores)  # soft_sufficiency.py l.30: keep prob = s
    m_c = keep_mask(u_comp, 1 - scores)  # soft_comprehensiveness.py l.31: keep prob = 1 - s
    return soft_metrics_from_masks(ex, m_s, m_c)


def soft_metrics_from_masks(ex: Example, m_s: torch.Tensor, m_c: torch.Tensor) -> dict:
    s = ex.soft_suff(m_s)
    c = ex.soft_comp(m_c)
    s0 = ex.suff0()["value"]
    return {"mask_suff": m_s, "mask_comp": m_c, "suff": s, "comp": c,
            "soft_ns": soft_ns(s["value"], s0), "soft_nc": soft_nc(c["value"], s0)}


def random_baseline_scores(uniforms: torch.Tensor) -> torch.Tensor:
    """evaluate_analogies.py l.120/148 (and sequence_rationalization.py l.220/293):
    softmax(torch.rand(scores.size()), dim=1), i.e. over the L positions of the example."""
    return torch.nn.Softmax(dim=1)(uniforms)


# ----------------------------------------------------------------------------------------
# Dataset-level pipelines (draw order of the original scripts, global torch RNG)
# ----------------------------------------------------------------------------------------


def token_level_pipeline(model, examples: Sequence[tuple[Sequence[int], Sequence[float]]],
                         ratio: float, seed: int = 42) -> tuple[list, list]:
    """evaluate_analogies.py main() for one --rationale_size_ratio, in the current default
    dtype (the paper: float64), drawing from the global RNG after torch.manual_seed(seed)
    in the original's order. Returns (rows [suff, comp, random_suff, random_comp] per
    example, column means)."""
    dtype = torch.get_default_dtype()
    torch.manual_seed(seed)
    rows = []
    for ids, sc in examples:
        ex = Example(model, ids)
        scores = torch.tensor([list(sc)], dtype=dtype)
        rnd = random_baseline_scores(torch.rand(scores.size(), dtype=dtype))
        shape = tuple(ex.embeds.shape)

        def one(kind: str, s: torch.Tensor):
            if ratio == 1:
                u = torch.rand(shape, dtype=dtype)  # soft suff / soft comp draw
                torch.rand(shape, dtype=dtype)  # Suff0's draw (ratio 0: never keeps)
                if kind == "suff":
                    r = ex.soft_suff(keep_mask(u, s))
                    return soft_ns(r["value"], ex.suff0()["value"])
                r = ex.soft_comp(keep_mask(u, 1 - s))
                return soft_nc(r["value"], ex.suff0()["value"])
            torch.rand(shape, dtype=dtype)  # hard suff/comp draw (binary mask: no effect)
            torch.rand(shape, dtype=dtype)  # Suff0's draw
            h = ex.hard(s, ratio)
            return h["norm_suff"] if kind == "suff" else h["norm_comp"]

        # l.150-172: NS(method), NS(random), NC(method), NC(random)
        ns_m = one("suff", scores)
        ns_r = one("suff", rnd)
        nc_m = one("comp", scores)
        nc_r = one("comp", rnd)
        rows.append([float(ns_m), float(nc_m), float(ns_r), float(nc_r)])
    # l.185-187: torch.tensor(rows) in the default dtype, mean over examples
    means = torch.mean(torch.tensor(rows), dim=0).tolist()
    return rows, means


def ln_ratio(mean_method: float, mean_random: float) -> float:
    """summarise_tokenlevel_log.py l.52 / summarise_sequencelevel.py l.46-47."""
    return math.log(mean_method / mean_random)


# ----------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------


def load_model(path: Path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation="eager")
    model.eval()
    return model


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def flist(t) -> object:
    """tensor / number -> Python floats (float32 values widen exactly; repr round-trips)."""
    if isinstance(t, (int, float)):
        return float(t)
    t = t.detach().cpu()
    if t.dim() == 0:
        return float(t.item())
    return [flist(r) for r in t]


def bits(mask: torch.Tensor) -> list:
    return mask.to(torch.int64).tolist()


def top5(p: torch.Tensor) -> list:
    v, i = torch.topk(p.squeeze(), 5)
    return [[int(a), float(b)] for a, b in zip(i.tolist(), v.tolist())]


def expected_ids(model_dir: Path) -> list:
    return json.load(open(model_dir / "expected.json"))["ids"]


def cases(model_dir: Path) -> list[dict]:
    """The fixture cases: context ids (from the model fixture's expected.json) and a score
    vector (float32)."""
    ids = expected_ids(model_dir)
    bos = 1
    peaked_logits = torch.tensor([5.0, 0.4, -0.3, 0.2, 0.0, 0.5, -0.1, 0.9, 0.3, 0.1])
    g = torch.Generator().manual_seed(7)
    u12 = torch.rand([1, 12], generator=g)
    return [
        {"case": "a_peaked",
         "description": "10-token context (texts 1+0 of expected.json, from index 2); "
                        "ReAGent-like scores (softmax over positions, sum 1) peaked on position "
                        "0, the one token that alone brings the prediction closer to q than Suff0",
         "ids": (ids[1] + ids[0])[2:12],
         "scores": torch.softmax(peaked_logits, -1),
         "scores_rule": "softmax([5, 0.4, -0.3, 0.2, 0, 0.5, -0.1, 0.9, 0.3, 0.1]) in float32"},
        {"case": "b_uniform",
         "description": "6-token context; uniform scores 1/L (hard top-k: all tied)",
         "ids": ids[2][:6],
         "scores": torch.full([6], 1.0 / 6.0),
         "scores_rule": "float32(1/6) everywhere"},
        {"case": "c_random_softmax",
         "description": "12-token context starting with BOS (id 1, masked like any token); "
                        "scores softmax(U[0,1)) like the random baseline",
         "ids": [bos] + ids[2][:11],
         "scores": torch.softmax(u12[0], -1),
         "scores_rule": "softmax(torch.rand([1, 12], generator=torch.Generator().manual_seed(7)))"},
        {"case": "d_out_of_range",
         "description": "8-token context; raw scores outside [0, 1] (no clamping in the "
                        "original): the soft keep masks are deterministic (s >= 1 always kept, "
                        "s <= 0 never, for comp 1 - s likewise)",
         "ids": ids[0][:8],
         "scores": torch.tensor([1.5, 0.0, -0.5, 1.0, 0.0, 2.0, -1.0, 1.0]),
         "scores_rule": "literal"},
        {"case": "e_all_zero",
         "description": "6-token context; all-zero scores: soft suff keeps nothing (= Suff0, "
                        "Soft-NS = 0), soft comp keeps everything (p_c = q, SoftComp = 0)",
         "ids": ids[0][:6],
         "scores": torch.zeros([6]),
         "scores_rule": "zeros"},
    ]


SUMMARY_CASES = ["a_peaked", "b_uniform", "c_random_softmax", "d_out_of_range", "e_all_zero"]


def build_case(model, model64, case: dict, gen: torch.Generator, draws: int) -> dict:
    ex = Example(model, case["ids"])
    ex64 = Example(model64, case["ids"])
    L, H = ex.L, ex.H
    s = case["scores"].to(torch.float32).reshape(1, L)
    ru = torch.rand([1, L], generator=gen)
    r = random_baseline_scores(ru)
    s0 = ex.suff0()
    s0_64 = ex64.suff0()

    soft = {}
    soft64 = {}
    threshold = None
    # stream order: per draw, method (suff u, comp u) then random (suff u, comp u); each
    # torch.rand([1, L, H], generator=gen) in float32 (Suff0's own draw is not taken: it
    # cannot change anything)
    draws_raw = {"method": [], "random": []}
    for d in range(draws):
        for name, sc in (("method", s), ("random", r)):
            u_s = torch.rand([1, L, H], generator=gen)
            u_c = torch.rand([1, L, H], generator=gen)
            if d == 0 and name == "method":
                threshold = u_s
            draws_raw[name].append((keep_mask(u_s, sc), keep_mask(u_c, 1 - sc)))
    for name, sc in (("method", s), ("random", r)):
        out, out64 = [], []
        for m_s, m_c in draws_raw[name]:
            res = soft_metrics_from_masks(ex, m_s, m_c)
            res64 = soft_metrics_from_masks(ex64, m_s, m_c)
            out.append({
                "suff_keep_mask": bits(m_s[0]), "comp_keep_mask": bits(m_c[0]),
                "kept_suff": int(m_s.sum()), "kept_comp": int(m_c.sum()),
                "d_suff": flist(res["suff"]["d"]), "soft_suff": flist(res["suff"]["value"]),
                "d_comp": flist(res["comp"]["d"]), "soft_comp": flist(res["comp"]["value"]),
                "soft_ns": flist(res["soft_ns"]), "soft_nc": flist(res["soft_nc"]),
                "p_suff_top5": top5(res["suff"]["p"]), "p_comp_top5": top5(res["comp"]["p"]),
            })
            out64.append({
                "d_suff": flist(res64["suff"]["d"]), "soft_suff": flist(res64["suff"]["value"]),
                "d_comp": flist(res64["comp"]["d"]), "soft_comp": flist(res64["comp"]["value"]),
                "soft_ns": flist(res64["soft_ns"]), "soft_nc": flist(res64["soft_nc"]),
            })
        keys = ["soft_suff", "soft_comp", "soft_ns", "soft_nc"]
        soft[name] = {"draws": out, "mean": {k: sum(o[k] for o in out) / len(out) for k in keys}}
        soft64[name] = {"draws": out64, "mean": {k: sum(o[k] for o in out64) / len(out64) for k in keys}}

    hard, hard64 = {}, {}
    for name, sc in (("method", s), ("random", r)):
        rows, rows64 = [], []
        for ratio in HARD_RATIOS:
            h = ex.hard(sc, ratio)
            h64 = ex64.hard(sc.to(torch.float64), ratio)
            assert h["positions"] == h64["positions"]
            rows.append({
                "ratio": ratio, "k": h["k"], "top_k_positions": h["positions"],
                "keep_tokens_suff": [int(x) for x in h["keep_suff"].tolist()],
                "keep_tokens_comp": [int(x) for x in h["keep_comp"].tolist()],
                "d_suff": flist(h["d_suff"]), "suff": flist(h["suff"]), "comp": flist(h["comp"]),
                "norm_suff": flist(h["norm_suff"]), "norm_comp": flist(h["norm_comp"]),
            })
            rows64.append({"ratio": ratio, "d_suff": flist(h64["d_suff"]), "suff": flist(h64["suff"]),
                           "comp": flist(h64["comp"]), "norm_suff": flist(h64["norm_suff"]),
                           "norm_comp": flist(h64["norm_comp"])})
        hard[name] = rows
        hard64[name] = rows64

    def aggregate(rows_by_name):
        agg = {}
        for label, ratios in (("paper_ratios", PAPER_MEAN_RATIOS), ("all_ratios", HARD_RATIOS)):
            a = {"ratios": ratios}
            for name in ("method", "random"):
                sel = [x for x in rows_by_name[name] if x["ratio"] in ratios]
                a[name] = {k: sum(x[k] for x in sel) / len(sel) for k in ("norm_suff", "norm_comp")}
            agg[label] = a
        return agg

    q = ex.q[0]
    return {
        "context_ids": [int(x) for x in case["ids"]],
        "L": L, "H": H, "V": int(q.shape[0]),
        "target_id": int(torch.argmax(q)), "position": L - 1,
        "scores_rule": case["scores_rule"],
        "scores": {"method": flist(s[0]), "random": flist(r[0])},
        "random_uniforms": flist(ru[0]),
        "sqrt2": flist(sqrt2(torch.float32)),
        "q": flist(q), "q_top5": top5(q), "p0": flist(ex.p0()[0]),
        "suff0": {"d": flist(s0["d"]), "value": flist(s0["value"]),
                  "one_minus": flist(1 - s0["value"])},
        "soft": soft,
        "threshold_check": {"uniforms": flist(threshold[0]), "keep_prob": flist(s[0]),
                            "mask_is": "soft.method.draws[0].suff_keep_mask"},
        "hard": {"ratios": HARD_RATIOS, **hard, "aggregate": aggregate(hard)},
        "float64": {
            "suff0": {"d": flist(s0_64["d"]), "value": flist(s0_64["value"])},
            "soft": soft64,
            "hard": {**hard64, "aggregate": aggregate(hard64)},
        },
    }


def shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def write_fixtures(model_dir: Path, out_dir: Path, draws: int = DRAWS, seed: int = STREAM_SEED):
    import transformers

    model = load_model(model_dir, torch.float32)
    model64 = load_model(model_dir, torch.float64)
    gen = torch.Generator().manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = model_dir / "model.safetensors"
    docs = {}
    for case in cases(model_dir):
        body = build_case(model, model64, case, gen, draws)
        doc = {
            "format": FORMAT,
            "case": case["case"],
            "description": case["description"],
            "reference": {
                "repo": "github.com/casszhao/ReAGent", "commit": PAPER_COMMIT,
                "files": ["src/evaluation/evaluator/base_masking.py",
                          "src/evaluation/evaluator/soft_sufficiency.py",
                          "src/evaluation/evaluator/soft_comprehensiveness.py",
                          "src/evaluation/evaluator/soft_norm_sufficiency.py",
                          "src/evaluation/evaluator/soft_norm_comprehensiveness.py",
                          "src/evaluation/evaluator/sufficiency.py",
                          "src/evaluation/evaluator/comprehensiveness.py",
                          "src/evaluation/evaluator/norm_sufficiency.py",
                          "src/evaluation/evaluator/norm_comprehensiveness.py",
                          "src/evaluation/evaluate_analogies.py"],
                "port": "scripts/make_metric_fixtures.py",
            },
            "generator": {
                "script": "scripts/make_metric_fixtures.py fixtures",
                "torch": torch.__version__, "transformers": transformers.__version__,
                "stream_seed": seed, "draws": draws,
                "stream": "one torch.Generator().manual_seed(stream_seed) shared by the cases in "
                          "file order; per case: random_uniforms torch.rand([1, L]); then per draw "
                          "r: method suff u, method comp u, random suff u, random comp u, each "
                          "torch.rand([1, L, H]) float32",
            },
            "model": {"path": os.path.relpath(model_dir, ROOT),
                      "model_safetensors_sha256": sha256_file(weights) if weights.exists() else None,
                      "dtype": "float32", "attn_implementation": "eager",
                      "call": "model(inputs_embeds=E) with E [1, L, H], no attention_mask"},
            **body,
            "doc": FORMAT_DOC,
        }
        docs[case["case"]] = doc
        path = out_dir / f"{case['case']}.json"
        with open(path, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        sm, rm = doc["soft"]["method"]["mean"], doc["soft"]["random"]["mean"]
        print(f"{shown(path)}: L={body['L']} size={path.stat().st_size // 1024}KB "
              f"suff0={body['suff0']['value']:.6f} NS={sm['soft_ns']:.5f}/{rm['soft_ns']:.5f} "
              f"NC={sm['soft_nc']:.5f}/{rm['soft_nc']:.5f} (method/random, mean of draws)")
    write_summary(docs, out_dir)


def summary_of(docs: dict, names: Sequence[str], pick: Callable[[dict], dict]) -> dict:
    per = {"method": {"soft_ns": [], "soft_nc": []}, "random": {"soft_ns": [], "soft_nc": []}}
    for n in names:
        for who in ("method", "random"):
            v = pick(docs[n]["soft"][who])
            for k in ("soft_ns", "soft_nc"):
                per[who][k].append(v[k])
    mean = {who: {k: sum(v) / len(v) for k, v in d.items()} for who, d in per.items()}
    lr = {}
    for k in ("soft_ns", "soft_nc"):
        m, r = mean["method"][k], mean["random"][k]
        lr[k] = ln_ratio(m, r) if m > 0 and r > 0 else None
    ratio = {k: (mean["method"][k] / mean["random"][k] if mean["random"][k] != 0 else None)
             for k in ("soft_ns", "soft_nc")}
    return {"per_case": per, "mean": mean, "ratio": ratio, "ln_ratio": lr}


def write_summary(docs: dict, out_dir: Path):
    names = SUMMARY_CASES
    hard_rows = []
    for i, ratio in enumerate(HARD_RATIOS):
        row = {"ratio": ratio}
        for who in ("method", "random"):
            vals = [docs[n]["hard"][who][i] for n in names]
            row[who] = {k: sum(v[k] for v in vals) / len(vals) for k in ("norm_suff", "norm_comp")}
        row["ratio_to_random"] = {
            k: (row["method"][k] / row["random"][k] if row["random"][k] != 0 else None)
            for k in ("norm_suff", "norm_comp")}
        hard_rows.append(row)
    sel = [r for r in hard_rows if r["ratio"] in PAPER_MEAN_RATIOS]
    hard_mean = {who: {k: sum(r[who][k] for r in sel) / len(sel) for k in ("norm_suff", "norm_comp")}
                 for who in ("method", "random")}
    doc = {
        "format": FORMAT + "/summary",
        "cases": names,
        "how": {
            "soft": "dataset mean over the cases of Soft-NS / Soft-NC (method and random), then "
                    "ratio = mean_method / mean_random and ln_ratio = ln(ratio) (float64; null "
                    "when a mean is 0). 'draw0' uses each case's soft.*.draws[0] (the paper "
                    "evaluates each example once); 'mean_of_draws' uses soft.*.mean",
            "hard": "per ratio: dataset mean of norm_suff / norm_comp (method and random); "
                    "mean_over_paper_ratios = mean of those over 0.05, 0.1, 0.2, 0.3; the "
                    "paper reports method / random for these without a log",
        },
        "soft": {
            "draw0": summary_of(docs, names, lambda d: d["draws"][0]),
            "mean_of_draws": summary_of(docs, names, lambda d: d["mean"]),
        },
        "hard": {"per_ratio": hard_rows, "mean_over_paper_ratios": {
            "ratios": PAPER_MEAN_RATIOS, **hard_mean,
            "ratio_to_random": {k: (hard_mean["method"][k] / hard_mean["random"][k]
                                    if hard_mean["random"][k] != 0 else None)
                                for k in ("norm_suff", "norm_comp")}}},
    }
    path = out_dir / "summary.json"
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"{shown(path)}: soft ln_ratio draw0={doc['soft']['draw0']['ln_ratio']} "
          f"mean_of_draws={doc['soft']['mean_of_draws']['ln_ratio']}")


# ----------------------------------------------------------------------------------------
# Self-test: replay the recorded masks
# ----------------------------------------------------------------------------------------


def selftest(model_dir: Path, fixture_dir: Path) -> int:
    model = load_model(model_dir, torch.float32)
    model64 = load_model(model_dir, torch.float64)
    bad = 0

    def same(a, b, what):
        nonlocal bad
        if a != b:
            bad += 1
            print(f"  MISMATCH {what}: {a!r} != {b!r}")

    docs = {}
    for path in sorted(fixture_dir.glob("*.json")):
        doc = json.load(open(path))
        if doc.get("format") != FORMAT:
            continue
        docs[doc["case"]] = doc
        ex = Example(model, doc["context_ids"])
        ex64 = Example(model64, doc["context_ids"])
        same(flist(ex.q[0]), doc["q"], "q")
        same(flist(ex.p0()[0]), doc["p0"], "p0")
        same(flist(ex.suff0()["value"]), doc["suff0"]["value"], "suff0")
        scores = {w: torch.tensor([doc["scores"][w]], dtype=torch.float32) for w in ("method", "random")}
        same(flist(random_baseline_scores(torch.tensor([doc["random_uniforms"]]))[0]),
             doc["scores"]["random"], "random scores")
        u = torch.tensor([doc["threshold_check"]["uniforms"]])
        same(bits(keep_mask(u, scores["method"])[0]), doc["soft"]["method"]["draws"][0]["suff_keep_mask"],
             "threshold_check")
        for who in ("method", "random"):
            for i, dr in enumerate(doc["soft"][who]["draws"]):
                m_s = torch.tensor([dr["suff_keep_mask"]], dtype=torch.bool)
                m_c = torch.tensor([dr["comp_keep_mask"]], dtype=torch.bool)
                res = soft_metrics_from_masks(ex, m_s, m_c)
                for k, v in (("soft_suff", res["suff"]["value"]), ("soft_comp", res["comp"]["value"]),
                             ("soft_ns", res["soft_ns"]), ("soft_nc", res["soft_nc"])):
                    same(flist(v), dr[k], f"{doc['case']} {who} draw {i} {k}")
                res64 = soft_metrics_from_masks(ex64, m_s, m_c)
                d64 = doc["float64"]["soft"][who]["draws"][i]
                for k, v in (("soft_ns", res64["soft_ns"]), ("soft_nc", res64["soft_nc"])):
                    same(flist(v), d64[k], f"{doc['case']} {who} draw {i} f64 {k}")
            for i, hr in enumerate(doc["hard"][who]):
                h = ex.hard(scores[who], hr["ratio"])
                same(h["positions"], hr["top_k_positions"], f"{doc['case']} {who} hard positions")
                for k in ("suff", "comp", "norm_suff", "norm_comp"):
                    same(flist(h[k]), hr[k], f"{doc['case']} {who} hard {hr['ratio']} {k}")
                h64 = ex64.hard(scores[who].to(torch.float64), hr["ratio"])
                for k in ("norm_suff", "norm_comp"):
                    same(flist(h64[k]), doc["float64"]["hard"][who][i][k],
                         f"{doc['case']} {who} hard {hr['ratio']} f64 {k}")
        print(f"{path.name}: checked")
    print("selftest:", "OK" if bad == 0 else f"{bad} mismatches")
    return 1 if bad else 0


# ----------------------------------------------------------------------------------------
# Verification against the paper's own code
# ----------------------------------------------------------------------------------------


def original_sources(args) -> Path:
    if args.original_src:
        return Path(args.original_src)
    git_dir = Path(args.original_git_dir)
    dest = Path(tempfile.mkdtemp(prefix="reagent_orig_"))
    archive = subprocess.run(["git", f"--git-dir={git_dir}", "archive", PAPER_COMMIT, "src/evaluation"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src" / "evaluation"


class RandRecorder:
    """Wraps torch.rand: records what the original code draws (or replays a queue)."""

    def __init__(self, replay: Optional[list] = None):
        self.real = torch.rand
        self.calls: list[torch.Tensor] = []
        self.replay = replay

    def __call__(self, *a, **kw):
        if self.replay is not None:
            t = self.replay.pop(0)
            if t is None:  # Suff0's draw: anything works
                shape = a[0] if a and not isinstance(a[0], int) else a
                t = torch.zeros(tuple(shape), dtype=kw.get("dtype") or torch.get_default_dtype())
        else:
            t = self.real(*a, **kw)
        self.calls.append(t)
        return t

    def __enter__(self):
        torch.rand = self
        return self

    def __exit__(self, *exc):
        torch.rand = self.real


def uniforms_for_mask(mask: torch.Tensor, keep_prob: torch.Tensor) -> torch.Tensor:
    """Uniforms in [0, 1) that make `uniforms < keep_prob` equal `mask` (used to push a
    recorded mask through the original mask_zero_embedding): 0 where kept, max(keep_prob, 0)
    where dropped (a dropped element has keep_prob < 1)."""
    kp = torch.unsqueeze(keep_prob, 2).expand(mask.shape)
    u = torch.where(mask, torch.zeros_like(kp), torch.clamp(kp, min=0))
    assert bool((u < 1).all()) and torch.equal(u < kp, mask)
    return u


def verify_original(args) -> int:
    src = original_sources(args)
    sys.path.insert(0, str(src))
    import importlib

    mods = {n: importlib.import_module(f"evaluator.{n}") for n in (
        "base_masking", "soft_sufficiency", "soft_comprehensiveness", "soft_norm_sufficiency",
        "soft_norm_comprehensiveness", "sufficiency", "comprehensiveness", "norm_sufficiency",
        "norm_comprehensiveness")}
    model_dir = Path(args.model)
    bad = 0
    checked = 0

    def eq(a, b, what):
        nonlocal bad, checked
        checked += 1
        a, b = float(a), float(b)
        if not (a == b or (math.isnan(a) and math.isnan(b))):
            bad += 1
            print(f"  MISMATCH {what}: original {a!r} port {b!r}")

    # 1) evaluator classes, seeded: the original draws from the global RNG, the port replays
    #    what it drew; float32 and float64 pipelines
    for dtype in (torch.float32, torch.float64):
        torch.set_default_dtype(dtype)
        try:
            model = load_model(model_dir, dtype)
            for ci, case in enumerate(cases(model_dir)):
                ex = Example(model, case["ids"])
                ids = ex.ids
                wte = ex.embeds
                scores = case["scores"].to(dtype).reshape(1, -1)
                for si, sc in enumerate((scores, random_baseline_scores(torch.rand(scores.shape)))):
                    tag = f"{dtype} {case['case']} {'method' if si == 0 else 'random'}"
                    # Soft-NS: draws soft-suff u then Suff0 u
                    torch.manual_seed(1000 + ci)
                    with RandRecorder() as rec:
                        o = mods["soft_norm_sufficiency"].SoftNormalizedSufficiencyEvaluator(model).evaluate(
                            ids, None, sc, wte, None)
                    assert len(rec.calls) == 2 and rec.calls[0].shape == wte.shape
                    assert rec.calls[0].dtype == dtype
                    p = soft_ns(ex.soft_suff(keep_mask(rec.calls[0], sc))["value"], ex.suff0()["value"])
                    eq(o, p, f"{tag} Soft-NS")
                    # Soft-NC: draws soft-comp u then Suff0 u
                    torch.manual_seed(2000 + ci)
                    with RandRecorder() as rec:
                        o = mods["soft_norm_comprehensiveness"].SoftNormalizedComprehensivenessEvaluator(
                            model).evaluate(ids, None, sc, wte, None)
                    p = soft_nc(ex.soft_comp(keep_mask(rec.calls[0], 1 - sc))["value"], ex.suff0()["value"])
                    eq(o, p, f"{tag} Soft-NC")
                    # plain SoftSuff / SoftComp / Suff0
                    torch.manual_seed(3000 + ci)
                    with RandRecorder() as rec:
                        o = mods["soft_sufficiency"].SoftSufficiencyEvaluator(model).evaluate(ids, None, sc, wte)
                        o2 = mods["soft_comprehensiveness"].SoftComprehensivenessEvaluator(model).evaluate(
                            ids, None, sc, wte)
                        o3 = mods["sufficiency"].SufficiencyEvaluator(model, rationale_ratio=0).evaluate(
                            ids, None, sc, wte)
                    eq(o, ex.soft_suff(keep_mask(rec.calls[0], sc))["value"], f"{tag} SoftSuff")
                    eq(o2, ex.soft_comp(keep_mask(rec.calls[1], 1 - sc))["value"], f"{tag} SoftComp")
                    eq(o3, ex.suff0()["value"], f"{tag} Suff0")
                    # hard metrics at every ratio (the binary masks make the draws irrelevant)
                    for ratio in HARD_RATIOS:
                        h = ex.hard(sc, ratio)
                        o = mods["norm_sufficiency"].NormalizedSufficiencyEvaluator(
                            model, -1, ratio).evaluate(ids, None, sc, wte)
                        eq(o, h["norm_suff"], f"{tag} hard NS {ratio}")
                        o = mods["norm_comprehensiveness"].NormalizedComprehensivenessEvaluator(
                            model, -1, ratio).evaluate(ids, None, sc, wte)
                        eq(o, h["norm_comp"], f"{tag} hard NC {ratio}")
                        o = mods["sufficiency"].SufficiencyEvaluator(model, -1, ratio).evaluate(ids, None, sc, wte)
                        eq(o, h["suff"], f"{tag} hard Suff {ratio}")
                        o = mods["comprehensiveness"].ComprehensivenessEvaluator(model, -1, ratio).evaluate(
                            ids, None, sc, wte)
                        eq(o, h["comp"], f"{tag} hard Comp {ratio}")
        finally:
            torch.set_default_dtype(torch.float32)
    print(f"[1] evaluator classes vs port (seeded, both dtypes): {checked} values, {bad} mismatches")

    # 2) the fixtures' recorded masks pushed through the original classes (float32)
    n0, b0 = checked, bad
    fixture_dir = Path(args.fixtures)
    model = load_model(model_dir, torch.float32)
    for path in sorted(fixture_dir.glob("*.json")):
        doc = json.load(open(path))
        if doc.get("format") != FORMAT:
            continue
        ex = Example(model, doc["context_ids"])
        for who in ("method", "random"):
            sc = torch.tensor([doc["scores"][who]], dtype=torch.float32)
            for i, dr in enumerate(doc["soft"][who]["draws"]):
                m_s = torch.tensor([dr["suff_keep_mask"]], dtype=torch.bool)
                m_c = torch.tensor([dr["comp_keep_mask"]], dtype=torch.bool)
                with RandRecorder(replay=[uniforms_for_mask(m_s, sc), None]):
                    o = mods["soft_norm_sufficiency"].SoftNormalizedSufficiencyEvaluator(model).evaluate(
                        ex.ids, None, sc, ex.embeds, None)
                eq(o, dr["soft_ns"], f"fixture {doc['case']} {who} draw {i} Soft-NS")
                with RandRecorder(replay=[uniforms_for_mask(m_c, 1 - sc), None]):
                    o = mods["soft_norm_comprehensiveness"].SoftNormalizedComprehensivenessEvaluator(
                        model).evaluate(ex.ids, None, sc, ex.embeds, None)
                eq(o, dr["soft_nc"], f"fixture {doc['case']} {who} draw {i} Soft-NC")
                with RandRecorder(replay=[uniforms_for_mask(m_s, sc), uniforms_for_mask(m_c, 1 - sc)]):
                    o = mods["soft_sufficiency"].SoftSufficiencyEvaluator(model).evaluate(ex.ids, None, sc, ex.embeds)
                    o2 = mods["soft_comprehensiveness"].SoftComprehensivenessEvaluator(model).evaluate(
                        ex.ids, None, sc, ex.embeds)
                eq(o, dr["soft_suff"], f"fixture {doc['case']} {who} draw {i} SoftSuff")
                eq(o2, dr["soft_comp"], f"fixture {doc['case']} {who} draw {i} SoftComp")
            for hr in doc["hard"][who]:
                o = mods["norm_sufficiency"].NormalizedSufficiencyEvaluator(model, -1, hr["ratio"]).evaluate(
                    ex.ids, None, sc, ex.embeds)
                eq(o, hr["norm_suff"], f"fixture {doc['case']} {who} hard NS {hr['ratio']}")
                o = mods["norm_comprehensiveness"].NormalizedComprehensivenessEvaluator(
                    model, -1, hr["ratio"]).evaluate(ex.ids, None, sc, ex.embeds)
                eq(o, hr["norm_comp"], f"fixture {doc['case']} {who} hard NC {hr['ratio']}")
    print(f"[2] fixture masks through the original classes: {checked - n0} values, {bad - b0} mismatches")

    # 3) evaluate_analogies.py main(), unmodified, on the fixture cases (float64 like the paper)
    n0, b0 = checked, bad
    run_evaluate_analogies(src, model_dir, eq)
    print(f"[3] evaluate_analogies.py main() vs port pipeline: {checked - n0} values, {bad - b0} mismatches")
    if not args.original_src:
        shutil.rmtree(src.parent.parent, ignore_errors=True)  # the extracted archive
    print("verify-original:", "OK (exact agreement)" if bad == 0 else f"{bad} mismatches")
    return 1 if bad else 0


def run_evaluate_analogies(src: Path, model_dir: Path, eq) -> None:
    """Run the paper's evaluate_analogies.py main() in-process on the fixture cases, with
    three shims that do not touch the metric code: natsort (not installed) -> sorted; the
    evaluators' GPT2LMHeadModel check accepts the tiny Llama, whose embedding table is exposed
    as model.transformer.wte; from_pretrained loads in the global default dtype (what
    transformers 4.31, the paper's version, does without torch_dtype: float64 here)."""
    import runpy

    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    sys.modules.setdefault("natsort", types.SimpleNamespace(natsorted=sorted))
    import importlib

    for n in ("base_masking", "soft_norm_sufficiency", "soft_norm_comprehensiveness", "norm_sufficiency",
              "norm_comprehensiveness"):
        importlib.import_module(f"evaluator.{n}").GPT2LMHeadModel = LlamaForCausalLM
    real_fp = AutoModelForCausalLM.from_pretrained

    def fp(name, *a, **kw):
        m = real_fp(name, dtype=torch.get_default_dtype(), attn_implementation="eager")
        m.eval()
        object.__setattr__(m, "transformer", types.SimpleNamespace(wte=m.model.embed_tokens))
        return m

    examples = [(c["ids"], c["scores"].tolist()) for c in cases(model_dir)]
    tmp = Path(tempfile.mkdtemp(prefix="reagent_eval_"))
    (tmp / "in").mkdir()
    for i, (ids, sc) in enumerate(examples):
        with open(tmp / "in" / f"{i}.json", "w") as f:
            json.dump({"id": i, "input-tokens": ids, "target-token": 0, "importance-scores": sc}, f)
    AutoModelForCausalLM.from_pretrained = fp
    try:
        for ratio in [1.0] + HARD_RATIOS:
            out = tmp / f"out_{ratio}"
            out.mkdir()
            argv = sys.argv
            sys.argv = ["evaluate_analogies.py", "--importance_results_dir", str(tmp / "in"),
                        "--eva_output_dir", str(out), "--model", str(model_dir), "--device", "cpu",
                        "--rationale_size_ratio", str(ratio), "--logfolder", "", "--loglevel", "40"]
            try:
                runpy.run_path(str(src / "evaluate_analogies.py"), run_name="__main__")
            finally:
                sys.argv = argv
            # the port, same seed, same draw order, float64
            model = real_fp(str(model_dir), dtype=torch.float64, attn_implementation="eager").eval()
            rows, means = token_level_pipeline(model, examples, ratio, seed=42)
            torch.set_default_dtype(torch.float32)
            with open(out / f"details_{ratio}.csv") as f:
                det = list(csv.reader(f))[1:]
            det = det[::2]  # every row is written twice (l.181-182)
            assert len(det) == len(rows)
            for r_o, r_p in zip(det, rows):
                for j in range(4):
                    eq(r_o[j + 1], r_p[j], f"evaluate_analogies ratio {ratio} id {r_o[0]} col {j}")
            with open(out / f"mean_{ratio}.csv") as f:
                mean_o = [float(x) for x in list(csv.reader(f))[1]]
            for j in range(4):
                eq(mean_o[j], means[j], f"evaluate_analogies ratio {ratio} mean col {j}")
            if ratio == 1.0:
                def safe_ln(m, r):
                    return ln_ratio(m, r) if m > 0 and r > 0 else None

                print(f"    token-level soft (float64, seed 42, 5 cases): means "
                      f"[NS, NC, random NS, random NC] = {means}; ln NS ratio "
                      f"{safe_ln(means[0], means[2])}, ln NC ratio {safe_ln(means[1], means[3])}")
    finally:
        AutoModelForCausalLM.from_pretrained = real_fp
        torch.set_default_dtype(torch.float32)
        torch.use_deterministic_algorithms(False)
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["fixtures", "selftest", "verify-original"])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--fixtures", "--out", dest="fixtures", default=str(DEFAULT_OUT))
    ap.add_argument("--draws", type=int, default=DRAWS)
    ap.add_argument("--seed", type=int, default=STREAM_SEED)
    ap.add_argument("--original-git-dir", default=str(DEFAULT_ORIGINAL_GIT))
    ap.add_argument("--original-src", default=None,
                    help="folder with the contents of the paper's src/evaluation (evaluator/, "
                         "evaluate_analogies.py)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)  # the original evaluators are @torch.no_grad()
    if args.command == "fixtures":
        write_fixtures(Path(args.model), Path(args.fixtures), args.draws, args.seed)
        return 0
    if args.command == "selftest":
        return selftest(Path(args.model), Path(args.fixtures))
    return verify_original(args)


if __name__ == "__main__":
    sys.exit(main())
