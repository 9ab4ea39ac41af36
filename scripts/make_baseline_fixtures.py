#!/usr/bin/env python3
"""Reference fixtures for the baseline attribution methods (fixtures/baselines/<model>.json).

For a causal LM, a context x_1..x_L and a target token y (here: the argmax next token), every
method gives one score per context token.  This script computes, with Captum 0.9 exactly as
inseq 0.7.1 calls it, the raw per-hidden-dimension attributions and the per-token scores after
inseq's default aggregation, for the baselines of the ReAGent paper (Zhao & Shan 2024):

  saliency                gradient (abs) -> L2 over hidden -> sum-to-1        (inseq "saliency")
  input_x_gradient        grad * embedding -> L2 -> sum-to-1                  (inseq "input_x_gradient")
  integrated_gradients    Captum IG, UNK-token-embedding baseline, 50 Gauss-Legendre steps
                          (inseq "integrated_gradients" defaults); also a zero-baseline variant
  gradient_shap           Captum GradientShap, n_samples=5, stdevs=0, baseline distribution =
                          the single UNK-embedding baseline (inseq "gradient_shap" defaults),
                          with the random numbers it drew; plus a "replay" variant with two
                          baselines and Gaussian noise so that every draw matters
  occlusion               Captum Occlusion, one token at a time, replaced by the UNK embedding;
                          score |p(y|x) - p(y|x with token i replaced)| (inseq "occlusion")
  attention               inseq "attention": last query row, mean over heads then layers
  last_layer_attention    mean over heads of the last layer (= inseq 0.4.0 "attention" default)
  attention_rollout       Abnar & Zuidema rollout as in the ReAGent repo

plus the exact post-processing of the ReAGent paper's own code (softmax over tokens for its
attention / gradient-norm evaluators).  The "definitions" block of every file states each formula;
see also the module-level DEFINITIONS below.

What is differentiated: inseq's default attributed function "probability", i.e.
p(y | x) = softmax(logits[:, -1, :])[y] (not the log-probability, not the logit), as a function
of the input embeddings E = embed_tokens(ids) (the output of the model's input-embedding module,
i.e. what Hugging Face accepts as ``inputs_embeds``; for Gemma it includes the sqrt(hidden) scale,
for GPT-2 / OPT it excludes the position embeddings, which the model adds itself).

Everything is float32 on CPU with one thread and eager attention.  Floats are written as the exact
float64 widening of each float32 value (parse as f64 and cast to f32 to get the bit-exact value).

Usage (project Python env; inseq only needed for --check-inseq):

    python scripts/make_baseline_fixtures.py                      # llama_tied gpt2 gemma3
    python scripts/make_baseline_fixtures.py gpt2                 # only some models
    PYTHONPATH=/path/to/inseq python scripts/make_baseline_fixtures.py --check-inseq
        # additionally run inseq 0.7.1 itself on the same inputs and compare (no files changed
        # unless --write is also given)

Reference environment: torch 2.15.0, transformers 5.24.0, captum 0.9.0, numpy 2.4,
(inseq 0.7.1 for the cross-check).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
import captum  # noqa: E402
from captum.attr import (  # noqa: E402
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    Occlusion,
    Saliency,
)
from captum.attr._utils.approximation_methods import approximation_parameters  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "fixtures" / "models"
OUT_DIR = ROOT / "fixtures" / "baselines"
DEFAULT_MODELS = ["llama_tied", "gpt2", "gemma3"]
# Contexts: indices into the model's expected.json "ids" (0: 10 tokens, 1: 4 tokens).
CONTEXT_INDICES = [0, 1]

IG_N_STEPS = 50
IG_METHOD = "gausslegendre"
GS_N_SAMPLES = 5
GS_STDEVS = 0.0
GS_SEED = 42
GS_REPLAY_STDEVS = 0.1
GS_REPLAY_SEED = 7

FORMAT = "reagent-baseline-fixture/1"

DEFINITIONS = {
    "notation": (
        "ids x_0..x_{L-1} (0-based), target y = argmax_v logits[L-1, v]. E = embed_tokens(ids) "
        "[L, H] (output of the input-embedding module = HF inputs_embeds; Gemma: includes the "
        "sqrt(H) scale; GPT-2/OPT: without position embeddings). f(E) = softmax(logits(E)[L-1])[y] "
        "= p(y|x), the attributed function (inseq default 'probability'). All methods are "
        "computed on a batch of one sequence with attention_mask = ones."
    ),
    "reduction": (
        "inseq default for per-dimension (granular) attributions A [L, H]: r_i = ||A_i||_2 "
        "(torch.linalg.vector_norm over H; signs are lost), then s_i = r_i / max(sum_j |r_j|, 1e-12) "
        "(F.normalize p=1 over the token axis of one generated token). Scores are >= 0 and sum to 1. "
        "The generated token's own row (NaN in inseq) is not part of the output here."
    ),
    "saliency": (
        "Captum Saliency (abs=True default): raw = |df/dE| [L, H]; scores = reduction(raw) "
        "(= reduction of the signed gradient, since the L2 norm ignores signs)."
    ),
    "input_x_gradient": "Captum InputXGradient: raw = E * df/dE [L, H]; scores = reduction(raw).",
    "integrated_gradients": (
        "Captum IntegratedGradients(multiply_by_inputs=True) with inseq's default baseline B = "
        "embed_tokens(baseline_ids), baseline_ids[i] = eos if ids[i] == eos else unk_token_id "
        "(NOT a zero embedding). n_steps=50, method='gausslegendre': alphas_k = 0.5*(1+t_k), "
        "w_k = 0.5*w'_k from numpy.polynomial.legendre.leggauss(50) (t ascending); both rounded "
        "to float32 (alphas: python float * f32 tensor; weights: torch.tensor(..).float()). "
        "All 50 scaled inputs B + alpha_k*(E-B) are stacked into ONE batch of 50 (step-major, "
        "internal_batch_size=None) and df/dE computed; raw = (E - B) * sum_k w_k * grad_k [L, H]; "
        "scores = reduction(raw). convergence_delta = sum(raw) - (f(E) - f(B)) "
        "(Captum compute_convergence_delta; inseq only returns it when asked)."
    ),
    "integrated_gradients_zero_baseline": (
        "As integrated_gradients but B = 0 (Captum's default when baselines=None; the ReAGent "
        "repo's own IG code also starts from 0). Not what inseq does by default."
    ),
    "gradient_shap": (
        "Captum GradientShap(multiply_by_inputs=True) with inseq defaults: baselines = the single "
        "inseq baseline B [1, L, H] (UNK embeddings, as for IG), n_samples=5, stdevs=0.0. "
        "Draw order (one partition because nt_samples_batch_size=n_samples): "
        "(1) numpy: idx = np.random.choice(n_baselines, n_samples*batch) -> baseline rows; "
        "(2) torch: noise = torch.normal(0, stdev repeated to [n_samples*batch, L, H]) "
        "(exactly 0 when stdev=0), x_k = E + noise_k (inputs repeat_interleave'd); "
        "(3) numpy: r = np.random.uniform(0, 1, n_samples*batch) (float64) cast to float32. "
        "Then z_k = r_k*x_k + (1 - r_k)*b_k (float32), g_k = df/dz at z_k (one batch of "
        "n_samples), a_k = (x_k - b_k) * g_k, raw = (sum_k a_k) * 1 / n_samples [L, H] "
        "(sum, then *1, then /n_samples in float32); scores = reduction(raw). "
        "per_sample_delta_k = sum(a_k) - (f(x_k) - f(b_k))."
    ),
    "gradient_shap_replay": (
        "Same algorithm with a 2-row baseline distribution [zeros, B] and stdevs=0.1, so that "
        "the recorded idx, noise and r all matter. Not an inseq default; for replay tests."
    ),
    "occlusion": (
        "Captum Occlusion with sliding_window_shapes=(1, H), strides=1, baselines=B (UNK "
        "embeddings, as for IG): for each i, E^(i) = E with row i replaced by B_i; "
        "delta_i = f(E) - f(E^(i)) (signed, 'raw'); inseq keeps |delta_i| as the score, with NO "
        "normalization (scores do not sum to 1). Positions whose id is eos have B_i = E_i, so 0."
    ),
    "attention": (
        "inseq 0.7.1 'attention': a[l, h, j] = attention probability of query position L-1 (the "
        "last context token, the one whose output predicts y) to key j in layer l, head h "
        "(eager softmax weights; includes j = L-1 itself; j ranges over the L context tokens). "
        "scores = n(mean_l n(mean_h a[l, h, :])) where n(v) = v / max(sum|v|, 1e-12) "
        "(inseq normalizes after each aggregation step; rows already sum to 1)."
    ),
    "last_layer_attention": (
        "mean over heads of a[last layer, h, :]; scores = n(.). This is also inseq 0.4.0's "
        "'attention' default (last layer, average heads) used by the ReAGent paper's benchmark."
    ),
    "attention_rollout": (
        "Abnar & Zuidema 2020 as in the ReAGent repo: Abar_l = mean_h A_l [L, L] (full causal "
        "attention matrices), R_l = 0.5*Abar_l + 0.5*I (rows already sum to 1, no explicit "
        "renormalization), rollout = R_{n-1} @ ... @ R_1 @ R_0 (rollout = R_0; for l >= 1: "
        "rollout = R_l @ rollout), scores_raw = rollout[L-1, :] (last query row; sums to 1). "
        "scores = n(scores_raw)."
    ),
    "reagent_paper": (
        "Post-processing of the ReAGent repo's own evaluators "
        "(src/rationalization/rationalizer/importance_score_evaluator/{attention,grad}.py): "
        "softmax over the L tokens of the raw scores. attention_all = softmax(mean_l mean_h "
        "a[l,h,:]), attention_last = softmax(mean_h a[last,h,:]), attention_rollout = "
        "softmax(rollout[L-1,:]), norm = softmax(||d log p(y|x)/dE_i||_2) (log-probability, "
        "not probability). The paper's inseq-based baselines (input_x_gradient, "
        "integrated_gradients, gradient_shap, attention) are the inseq scores above "
        "(attention: inseq 0.4.0 = last_layer_attention.scores)."
    ),
}


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def f32list(t):
    """float32 tensor / array -> nested lists of Python floats (exact f64 widening of each f32)."""
    t = torch.as_tensor(t).detach().to(torch.float32).cpu()
    if t.dim() == 0:
        x = float(t)
        if math.isnan(x) or math.isinf(x):
            raise ValueError("non-finite value in fixture")
        return x
    return [f32list(r) for r in t]


def load_model(name: str):
    path = MODELS_DIR / name
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(
        str(path), attn_implementation="eager", dtype=torch.float32
    ).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    expected = json.loads((path / "expected.json").read_text())
    return model, tok, expected


def model_eos_id(model, tok) -> int | None:
    """inseq's eos_token_id: the model config's eos (first if a list), else the tokenizer's pad."""
    eos = getattr(model.config, "eos_token_id", None)
    if isinstance(eos, list):
        eos = eos[0]
    return eos if eos is not None else tok.pad_token_id


def inseq_baseline_ids(ids: torch.Tensor, tok, eos_id: int | None) -> torch.Tensor:
    """inseq HuggingfaceModel.encode(return_baseline=True, include_eos_baseline=False)."""
    unk = tok.unk_token_id
    if unk is None:  # inseq 0.7.1 would fail (None * tensor); 0.4.0 falls back to pad
        unk = tok.pad_token_id
    if eos_id is None:
        return torch.full_like(ids, unk)
    return ids.ne(eos_id).long() * unk + ids.eq(eos_id).long() * eos_id


def inseq_reduce(raw: torch.Tensor) -> torch.Tensor:
    """inseq default aggregation of granular attributions [L, H] -> [L] (vnorm + L1 normalize)."""
    r = torch.linalg.vector_norm(raw, ord=2, dim=-1)
    return F.normalize(r, p=1, dim=0)


def l1n(v: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return F.normalize(v, p=1, dim=dim)


@contextlib.contextmanager
def record_draws(log: list):
    """Record numpy.random.choice / numpy.random.uniform / torch.normal calls (Captum's draws)."""
    orig_choice, orig_uniform, orig_normal = np.random.choice, np.random.uniform, torch.normal

    def choice(*a, **k):
        out = orig_choice(*a, **k)
        log.append(("np.random.choice", a, k, np.asarray(out).copy()))
        return out

    def uniform(*a, **k):
        out = orig_uniform(*a, **k)
        log.append(("np.random.uniform", a, k, np.asarray(out).copy()))
        return out

    def normal(*a, **k):
        out = orig_normal(*a, **k)
        log.append(("torch.normal", a, k, out.detach().clone()))
        return out

    np.random.choice, np.random.uniform, torch.normal = choice, uniform, normal
    try:
        yield log
    finally:
        np.random.choice, np.random.uniform, torch.normal = orig_choice, orig_uniform, orig_normal


# ----------------------------------------------------------------------------------------
# the computations
# ----------------------------------------------------------------------------------------


class Case:
    def __init__(self, model, tok, ids: list[int]):
        self.model, self.tok = model, tok
        self.ids = torch.tensor([ids])
        self.L = len(ids)
        self.mask = torch.ones_like(self.ids)
        with torch.no_grad():
            out = model(input_ids=self.ids, attention_mask=self.mask, output_attentions=True)
        logits = out.logits[0, -1]
        self.y = int(logits.argmax())
        self.logit = logits[self.y]
        self.prob = logits.softmax(-1)[self.y]
        self.logprob = logits.log_softmax(-1)[self.y]
        self.attentions = torch.stack([a[0] for a in out.attentions])  # [layers, heads, L, L]
        with torch.no_grad():
            self.E = model.get_input_embeddings()(self.ids)  # [1, L, H]
        self.H = self.E.shape[-1]
        self.eos_id = model_eos_id(model, tok)
        self.baseline_ids = inseq_baseline_ids(self.ids, tok, self.eos_id)
        with torch.no_grad():
            self.B = model.get_input_embeddings()(self.baseline_ids)  # [1, L, H]

    # f(E) = p(y | x), batched over dim 0; mirrors inseq's forward + probability_fn
    def prob_fn(self, embeds: torch.Tensor) -> torch.Tensor:
        mask = self.mask.expand(embeds.shape[0], -1)
        logits = self.model(inputs_embeds=embeds, attention_mask=mask).logits[:, -1, :]
        tgt = torch.full((embeds.shape[0], 1), self.y, dtype=torch.long)
        return logits.softmax(dim=-1).gather(-1, tgt).squeeze(-1)

    def logprob_fn(self, embeds: torch.Tensor) -> torch.Tensor:
        mask = self.mask.expand(embeds.shape[0], -1)
        logits = self.model(inputs_embeds=embeds, attention_mask=mask).logits[:, -1, :]
        return logits.log_softmax(dim=-1)[:, self.y]

    def f(self, embeds: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.prob_fn(embeds)

    # -- gradient methods ---------------------------------------------------------------
    def gradient(self):
        return Saliency(self.prob_fn).attribute(self.E, abs=False)[0]

    def saliency(self):
        raw = Saliency(self.prob_fn).attribute(self.E)[0]  # abs=True (Captum default)
        return {"raw": f32list(raw), "scores": f32list(inseq_reduce(raw))}

    def input_x_gradient(self):
        raw = InputXGradient(self.prob_fn).attribute(self.E)[0]
        return {"raw": f32list(raw), "scores": f32list(inseq_reduce(raw))}

    def integrated_gradients(self, zero_baseline: bool):
        B = torch.zeros_like(self.E) if zero_baseline else self.B
        ig = IntegratedGradients(self.prob_fn, multiply_by_inputs=True)
        attr, delta = ig.attribute(
            self.E, baselines=B, n_steps=IG_N_STEPS, method=IG_METHOD,
            return_convergence_delta=True,
        )
        raw = attr[0]
        step_sizes_fn, alphas_fn = approximation_parameters(IG_METHOD)
        alphas = torch.tensor(alphas_fn(IG_N_STEPS), dtype=torch.float64).float()
        weights = torch.tensor(step_sizes_fn(IG_N_STEPS)).float()
        # independent re-implementation from the documented formula (same batching)
        scaled = torch.cat([B + float(a) * (self.E - B) for a in alphas_fn(IG_N_STEPS)], 0)
        scaled.requires_grad_()
        (g,) = torch.autograd.grad(torch.unbind(self.prob_fn(scaled)), scaled)
        manual = (g * weights.view(-1, 1, 1)).sum(0) * (self.E - B)[0]
        assert torch.allclose(manual, raw, rtol=1e-5, atol=1e-7), (manual - raw).abs().max()
        f_in, f_b = self.f(self.E)[0], self.f(B)[0]
        out = {
            "baseline": "zeros" if zero_baseline else "unk_embedding",
            "n_steps": IG_N_STEPS,
            "method": IG_METHOD,
            "internal_batch_size": None,
            "alphas": f32list(alphas),
            "step_sizes": f32list(weights),
            "f_input": f32list(f_in),
            "f_baseline": f32list(f_b),
            "raw": f32list(raw),
            "raw_sum": f32list(raw.sum()),
            "convergence_delta": f32list(delta[0]),
            "scores": f32list(inseq_reduce(raw)),
        }
        if not zero_baseline:
            out["baseline_ids"] = self.baseline_ids[0].tolist()
        return out

    def gradient_shap(self, replay: bool):
        if replay:
            baselines = torch.cat([torch.zeros_like(self.B), self.B], 0)  # [2, L, H]
            stdevs, seed = GS_REPLAY_STDEVS, GS_REPLAY_SEED
        else:
            baselines, stdevs, seed = self.B, GS_STDEVS, GS_SEED
        np.random.seed(seed)
        torch.manual_seed(seed)
        log: list = []
        gs = GradientShap(self.prob_fn, multiply_by_inputs=True)
        with record_draws(log):
            attr, delta = gs.attribute(
                self.E, baselines=baselines, n_samples=GS_N_SAMPLES, stdevs=stdevs,
                return_convergence_delta=True,
            )
        raw = attr[0]
        kinds = [d[0] for d in log]
        assert kinds == ["np.random.choice", "torch.normal", "np.random.uniform"], kinds
        idx = [int(i) for i in log[0][3]]
        noise = log[1][3]  # [n_samples, L, H]
        r64 = log[2][3]
        r32 = torch.tensor(r64, dtype=torch.float32)
        # replay from the recorded draws with the documented formula
        x = self.E.repeat_interleave(GS_N_SAMPLES, 0) + noise
        b = baselines[idx]
        rv = r32.view(-1, 1, 1)
        z = (rv * x + (1.0 - rv) * b).requires_grad_()
        (g,) = torch.autograd.grad(torch.unbind(self.prob_fn(z)), z)
        a = (x - b) * g
        manual = (a.sum(0) * 1 / GS_N_SAMPLES)
        assert torch.allclose(manual, raw, rtol=1e-5, atol=1e-7), (manual - raw).abs().max()
        out = {
            "n_samples": GS_N_SAMPLES,
            "stdevs": stdevs,
            "baselines_shape": list(baselines.shape),
            "baselines": ("[zeros, unk_embedding]" if replay else "[unk_embedding]"),
            "numpy_seed": seed,
            "torch_seed": seed,
            "draws": {
                "order": ["np.random.choice(n_baselines, n_samples)",
                          "torch.normal(0, stdev, [n_samples, L, H])",
                          "np.random.uniform(0, 1, n_samples)"],
                "baseline_indices": idx,
                "noise_shape": list(noise.shape),
                "noise": (f32list(noise) if replay else "all exactly 0.0 (stdev 0)"),
                "rand_coefficients_f64": [float(v) for v in r64],
                "rand_coefficients": f32list(r32),
            },
            "raw": f32list(raw),
            "per_sample_delta": f32list(delta),
            "scores": f32list(inseq_reduce(raw)),
        }
        if not replay:
            assert float(noise.abs().max()) == 0.0
        return out

    def occlusion(self):
        occ = Occlusion(self.prob_fn)
        attr = occ.attribute(self.E, sliding_window_shapes=(1, self.H), baselines=self.B)[0]
        assert bool((attr == attr[:, :1]).all())
        delta = attr[:, 0]
        occluded = []
        for i in range(self.L):
            e = self.E.clone()
            e[0, i] = self.B[0, i]
            occluded.append(self.f(e)[0])
        occluded = torch.stack(occluded)
        assert torch.allclose(self.f(self.E)[0] - occluded, delta, atol=1e-7)
        return {
            "replacement": "unk_embedding (baseline_ids as for integrated_gradients)",
            "occluded_prob": f32list(occluded),
            "raw": f32list(delta),
            "scores": f32list(delta.abs()),
            "normalized": False,
        }

    def logprob_gradient(self):
        e = self.E.clone().requires_grad_()
        (g,) = torch.autograd.grad(self.logprob_fn(e).sum(), e)
        return g[0]

    # -- attention methods ---------------------------------------------------------------
    def attention_methods(self):
        A = self.attentions  # [layers, heads, L, L]
        a = A[:, :, self.L - 1, :]  # [layers, heads, L]
        heads_mean = l1n(a.mean(1), dim=-1)  # per layer, normalized over tokens
        att_scores = l1n(heads_mean.mean(0), dim=-1)
        last = a[-1].mean(0)
        abar = A.mean(1)  # [layers, L, L]
        eye = torch.eye(self.L)[None]
        R = 0.5 * abar + 0.5 * eye
        roll = R[0]
        for layer in range(1, R.shape[0]):
            roll = torch.matmul(R[layer], roll)
        roll_row = roll[-1]
        return {
            "attention": {
                "raw": f32list(a),
                "raw_shape": ["layers", "heads", "L"],
                "scores": f32list(att_scores),
            },
            "last_layer_attention": {
                "raw": f32list(a[-1]),
                "raw_shape": ["heads", "L"],
                "scores": f32list(l1n(last)),
            },
            "attention_rollout": {
                "head_mean_attention": f32list(abar),
                "rollout": f32list(roll),
                "raw": f32list(roll_row),
                "scores": f32list(l1n(roll_row)),
            },
        }, {
            "attention_all": f32list(torch.softmax(a.mean(1).mean(0), -1)),
            "attention_last": f32list(torch.softmax(last, -1)),
            "attention_rollout": f32list(torch.softmax(roll_row, -1)),
        }


def build_case(model, tok, ids: list[int], name: str) -> dict:
    c = Case(model, tok, ids)
    grad = c.gradient()
    att, paper_att = c.attention_methods()
    lpg = c.logprob_gradient()
    norms = torch.linalg.vector_norm(lpg, ord=2, dim=-1)
    methods = {
        "saliency": c.saliency(),
        "input_x_gradient": c.input_x_gradient(),
        "integrated_gradients": c.integrated_gradients(zero_baseline=False),
        "integrated_gradients_zero_baseline": c.integrated_gradients(zero_baseline=True),
        "gradient_shap": c.gradient_shap(replay=False),
        "gradient_shap_replay": c.gradient_shap(replay=True),
        "occlusion": c.occlusion(),
        **att,
    }
    return {
        "name": name,
        "context_ids": ids,
        "context_text": tok.decode(ids),
        "L": c.L,
        "H": c.H,
        "target_id": c.y,
        "target_rule": "argmax of the next-token logits after the context",
        "attributed_fn": {
            "name": "probability",
            "prob": f32list(c.prob),
            "logprob": f32list(c.logprob),
            "logit": f32list(c.logit),
        },
        "embeddings": f32list(c.E[0]),
        "gradient": f32list(grad),
        "baseline_ids": c.baseline_ids[0].tolist(),
        "methods": methods,
        "reagent_paper": {
            "norm": {
                "logprob_gradient": f32list(lpg),
                "raw": f32list(norms),
                "scores": f32list(torch.softmax(norms, -1)),
            },
            **paper_att,
            "inseq_0_4_attention": "= methods.last_layer_attention.scores",
            "input_x_gradient": "= methods.input_x_gradient.scores",
            "integrated_gradients": "= methods.integrated_gradients.scores",
            "gradient_shap": "= methods.gradient_shap.scores (different random draws)",
        },
    }


def build_model_fixture(name: str) -> dict:
    model, tok, expected = load_model(name)
    cfg = model.config
    cases = [build_case(model, tok, expected["ids"][k], f"ctx{k}") for k in CONTEXT_INDICES]
    cases_eos = model_eos_id(model, tok)
    return {
        "format": FORMAT,
        "model": name,
        "model_dir": f"fixtures/models/{name}",
        "architecture": type(model).__name__,
        "layers": cfg.num_hidden_layers,
        "heads": cfg.num_attention_heads,
        "hidden": cases[0]["H"],
        "special_ids": {"eos": cases_eos, "unk": tok.unk_token_id, "bos": tok.bos_token_id,
                        "pad": tok.pad_token_id},
        "reference": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "captum": captum.__version__,
            "numpy": np.__version__,
            "emulates": "inseq 0.7.1 defaults (attribute(..., generated_texts=...)), "
                        "ReAGent repo casszhao/ReAGent@78097738 for reagent_paper",
            "dtype": "float32, CPU, 1 thread, eager attention",
            "floats": "exact float64 widening of float32 values",
        },
        "generator": {"script": "scripts/make_baseline_fixtures.py",
                      "gradient_shap_seed": GS_SEED, "gradient_shap_replay_seed": GS_REPLAY_SEED},
        "definitions": DEFINITIONS,
        "cases": cases,
    }


# ----------------------------------------------------------------------------------------
# cross-check against inseq itself
# ----------------------------------------------------------------------------------------


def run_inseq(am, method: str, ids: list[int], y: int, seed: int | None, via_text: bool, **kw):
    """Attribute y given ids with inseq 0.7.1; returns (raw target attributions, scores)."""
    from inseq.attr.feat.attribution_utils import extract_args
    from inseq.data import BatchEncoding, DecoderOnlyBatch
    from inseq.data.attribution import get_batch_from_inputs

    if seed is not None:
        np.random.seed(seed)
        torch.manual_seed(seed)
    L = len(ids)
    if via_text:
        out = am.attribute(am.tokenizer.decode(ids), am.tokenizer.decode(ids + [y]),
                           method=method, show_progress=False, **kw)
    else:
        meth = am.get_attribution_method(method, override_default_attribution=True)
        fn = am.get_attributed_fn(None)
        full = torch.tensor([ids + [y]])
        enc = BatchEncoding(
            input_ids=full,
            input_tokens=[am._convert_ids_to_tokens(full[0], skip_special_tokens=False)],
            attention_mask=torch.ones_like(full),
            baseline_ids=inseq_baseline_ids(full, am.tokenizer, am.eos_token_id),
        )
        batch = DecoderOnlyBatch.from_batch(get_batch_from_inputs(am, enc))
        a_args, f_args, s_args = extract_args(
            meth, fn, [], default_args=am.formatter.get_step_function_reserved_args(), **kw)
        out = meth.attribute(batch, attributed_fn=fn, attr_pos_start=L, attr_pos_end=L + 1,
                             show_progress=False, attribution_args=a_args,
                             attributed_fn_args=f_args, step_scores_args=s_args)
    sa = out.sequence_attributions[0]
    assert [t.id for t in sa.target] == ids + [y], ([t.id for t in sa.target], ids + [y])
    raw = sa.target_attributions[:L, 0]
    scores = sa.aggregate().target_attributions[:L, 0]
    deltas = (sa.step_scores or {}).get("deltas")
    return raw, scores, deltas


def check_inseq(fixtures: dict[str, dict]) -> bool:
    import inseq  # noqa: F401

    ok = True
    rows = []
    for name, fx in fixtures.items():
        model, tok, _ = load_model(name)
        am = inseq.load_model(model, "saliency", tokenizer=tok)
        for case in fx["cases"]:
            ids, y, L = case["context_ids"], case["target_id"], case["L"]
            text_ok = tok(tok.decode(ids + [y]), add_special_tokens=True)["input_ids"] == ids + [y] \
                and tok(tok.decode(ids), add_special_tokens=True)["input_ids"] == ids
            M = case["methods"]
            checks = [
                ("saliency", "saliency", None, {}),
                ("input_x_gradient", "input_x_gradient", None, {}),
                ("integrated_gradients", "integrated_gradients", None,
                 {"return_convergence_delta": True}),
                ("gradient_shap", "gradient_shap", GS_SEED, {}),
                ("occlusion", "occlusion", None, {}),
                ("attention", "attention", None, {}),
            ]
            for paths in ([False, True] if text_ok else [False]):
                for key, meth, seed, kw in checks:
                    raw, scores, deltas = run_inseq(am, meth, ids, y, seed, paths, **kw)
                    ref = M[key]
                    want_raw = torch.tensor(ref["raw"])
                    if key == "attention":
                        raw = raw.permute(1, 2, 0)  # [L, layers, heads] -> [layers, heads, L]
                    if key == "occlusion":  # inseq keeps only |delta|
                        want_raw = want_raw.abs()
                    d_raw = float((raw.float() - want_raw).abs().max())
                    d_sc = float((scores.float() - torch.tensor(ref["scores"])).abs().max())
                    extra = ""
                    if deltas is not None and key == "integrated_gradients":
                        dd = abs(float(deltas.flatten()[0]) - ref["convergence_delta"])
                        extra = f" delta_diff={dd:.3g}"
                        d_sc = max(d_sc, dd)
                    good = d_raw <= 1e-6 and d_sc <= 1e-6
                    ok &= good
                    rows.append(f"{name:11s} {case['name']} {'text ' if paths else 'batch'} "
                                f"{key:22s} max|raw diff|={d_raw:.3g} max|score diff|={d_sc:.3g}"
                                f"{extra} {'OK' if good else 'MISMATCH'}")
    print("\n".join(rows))
    return ok


# ----------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", default=DEFAULT_MODELS)
    ap.add_argument("--check-inseq", action="store_true",
                    help="compare with inseq 0.7.1 (must be importable); no write unless --write")
    ap.add_argument("--write", action="store_true", help="write files even with --check-inseq")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    fixtures = {name: build_model_fixture(name) for name in args.models}
    if not args.check_inseq or args.write:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        for name, fx in fixtures.items():
            path = OUT_DIR / f"{name}.json"
            path.write_text(json.dumps(fx, indent=1) + "\n")
            print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")
    if args.check_inseq:
        return 0 if check_inseq(fixtures) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
