#!/usr/bin/env python3
"""Stream-driven reference implementation of ReAGent (as in inseq 0.7.1) and fixture generator.

ReAGent: Zhao & Shan 2024, "ReAGent: A Model-agnostic Feature Attribution Method for
Generative Language Models" (arXiv 2402.00794).

This is an independent port of the algorithm in inseq 0.7.1, written for testing the
Rust implementation. It follows these files of inseq 0.7.1 (identical to tag v0.7.1):

  inseq/attr/feat/ops/reagent.py                                (wiring, defaults)
  inseq/attr/feat/ops/reagent_core/importance_score_evaluator.py (main loop, update rule)
  inseq/attr/feat/ops/reagent_core/stopping_condition_evaluator.py (top-k stop test)
  inseq/attr/feat/ops/reagent_core/token_replacer.py            (uniform / ranking replacers)
  inseq/attr/feat/ops/reagent_core/token_sampler.py             (POS-tag sampler)
  inseq/attr/feat/ops/reagent_core/rationalizer.py              (aggregation over probes)

and, for the uniform / inferential samplers that inseq does not ship, the original code at
github.com/casszhao/ReAGent, src/rationalization/rationalizer/token_replacement/token_sampler/.

The only thing that differs from inseq is where randomness comes from: every random
quantity is taken from an explicit *stream* object, consumed in exactly the order inseq
draws from torch's global RNG:

  1. initial_scores()              torch.rand([P, L])         logit importance init
  per step:
  2. update(ids)    -> mask        torch.rand([P, L]) < ratio  (UniformTokenReplacer)
                    -> tokens      sampler(ids, torch.rand([P, L]))
  3. stop_fill(ids) -> tokens      sampler(ids, torch.rand([P, L]))  (RankingTokenReplacer)

`TorchRngStream` draws these from a seeded torch generator (so the port reproduces inseq
bit-for-bit given the same seed, see `verify-inseq`), and records them;
`ReplayStream` replays a recording (what the JSON fixtures contain).

Subcommands (run with the project's Python env, e.g. /work/pyref/bin/python):

  fixtures      write fixtures/reagent/*.json from fixtures/models/llama_tied
  selftest      replay every fixture and check the port reproduces it exactly; also check
                that dropping stopped probes from the batch gives the same result
  verify-inseq  compare the port step by step against inseq 0.7.1's own classes
                (needs inseq importable, e.g. PYTHONPATH with a --no-deps install)
  tiny-model    build the deterministic fallback tiny Llama into a folder
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "fixtures" / "models" / "llama_tied"
FALLBACK_MODEL = ROOT / "fixtures" / "reagent" / "model"
DEFAULT_OUT = ROOT / "fixtures" / "reagent"
FORMAT = "reagent-reference-fixture/1"


# ----------------------------------------------------------------------------------------
# Hyper-parameters
# ----------------------------------------------------------------------------------------


@dataclass
class Hyper:
    """ReAGent hyper-parameters; defaults are inseq 0.7.1's (`Reagent.__init__`)."""

    num_probes: int = 16  # AggregateRationalizer.batch_size
    keep_top_n: int = 5  # stop test keeps the top-n positions (0 -> use keep_ratio)
    keep_ratio: Optional[float] = None  # n = ceil(keep_ratio * L) when keep_top_n == 0
    invert_keep: bool = False  # replace the top-n instead of keeping them
    stop_top_k: int = 3  # stopping_condition_top_k
    replacing_ratio: float = 0.3  # Bernoulli ratio of the update replacement mask
    max_steps: int = 3000  # max_probe_steps

    def keep_n(self, length: int) -> int:
        # RankingTokenReplacer.set_score: `if not keep_top_n` -> ceil(keep_ratio * L)
        if self.keep_top_n:
            return int(self.keep_top_n)
        if self.keep_ratio is None:
            raise ValueError("keep_top_n == 0 needs keep_ratio (inseq would raise TypeError)")
        return int(math.ceil(self.keep_ratio * length))


# ----------------------------------------------------------------------------------------
# Token samplers: (ids [B, L] int64, u [B, L] float32 uniform in [0, 1)) -> tokens [B, L]
# ----------------------------------------------------------------------------------------


class PosTagSampler:
    """inseq POSTagTokenSampler (token_sampler.py): uniform over the ids sharing the POS tag
    of the input id. `pos2ids` is the tag -> ids mapping in insertion order (inseq builds it
    with nltk over range(tokenizer.vocab_size); any mapping works here). `table_size` is the
    size of the id -> tag table: tokenizer.vocab_size in 0.7.1, len(tokenizer) after inseq
    PR #306; ids outside every group map to group 0 (the table is zero-initialised)."""

    uses_uniform = True

    def __init__(self, pos2ids: dict, table_size: int):
        groups = list(pos2ids.values())
        self.id2pos = torch.zeros([table_size], dtype=torch.long)
        for g, ids in enumerate(groups):
            self.id2pos[torch.tensor(ids, dtype=torch.long)] = g
        self.counts = torch.tensor([len(ids) for ids in groups], dtype=torch.long)
        n = len(groups)
        # float32, exactly as inseq: sum(tril(ones, -1) * counts, -1)
        self.offsets = torch.sum(torch.tril(torch.ones([n, n]), diagonal=-1) * self.counts, dim=-1)
        self.compact = torch.cat([torch.tensor(ids, dtype=torch.long) for ids in groups])

    def __call__(self, ids: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        pos = self.id2pos[ids]
        # float32 arithmetic: u * count (long -> float32) + offset, truncated toward zero
        idx = (u * self.counts[pos] + self.offsets[pos]).long()
        return self.compact[idx]


class UniformSampler:
    """Original-repo UniformTokenSampler (token_sampler/uniform.py): uniform over
    [0, vocab_size) minus `excluded` (bos, eos, unk there). inseq has no uniform sampler."""

    uses_uniform = True

    def __init__(self, vocab_size: int, excluded: Sequence[int]):
        avail = torch.ones(vocab_size)
        for i in excluded:
            avail[i] = 0
        self.vocab_size = vocab_size
        self.excluded = sorted(set(int(i) for i in excluded))
        self.avail = torch.arange(vocab_size)[avail != 0]

    def __call__(self, ids: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        idx = (u * self.avail.shape[0]).type(torch.int32)  # float32 product, truncation
        return self.avail[idx.long()]

    def describe(self) -> dict:
        return {"kind": "uniform", "vocab_size": self.vocab_size, "excluded_ids": self.excluded,
                "formula": "avail = sorted([0,vocab_size) minus excluded_ids); "
                           "token = avail[trunc(f32(u) * f32(len(avail)))]"}


class InferentialSampler:
    """Original-repo InferentialTokenSampler (token_sampler/inferential.py): deterministic,
    draws no random numbers. Position 0 keeps its token, position i>0 gets the model's greedy
    prediction from the *original* prefix ids[:, :i]."""

    uses_uniform = False

    def __init__(self, logits_all: Callable[[torch.Tensor], torch.Tensor]):
        self.logits_all = logits_all  # ids [B, L] -> logits [B, L, V]

    def __call__(self, ids: torch.Tensor, u: Optional[torch.Tensor]) -> torch.Tensor:
        pred = torch.argmax(self.logits_all(ids), dim=-1)
        return torch.cat([ids[:, 0:1], pred[:, :-1]], dim=1)


# ----------------------------------------------------------------------------------------
# Random streams
# ----------------------------------------------------------------------------------------


class TorchRngStream:
    """Draws the stream from torch's RNG in inseq's order and records what it produced.
    With `generator=None` it uses torch's global RNG (as inseq does); a seeded
    torch.Generator gives the same numbers as torch.manual_seed with the same seed."""

    def __init__(self, sampler, replacing_ratio: float, generator: Optional[torch.Generator] = None):
        self.sampler = sampler
        self.ratio = replacing_ratio
        self.gen = generator
        self.initial: Optional[torch.Tensor] = None
        self.steps: list[dict] = []

    def _rand(self, shape) -> torch.Tensor:
        return torch.rand(shape, generator=self.gen)

    def _sample(self, ids: torch.Tensor) -> torch.Tensor:
        u = self._rand(ids.shape) if self.sampler.uses_uniform else None
        return self.sampler(ids, u)

    def initial_scores(self, shape) -> torch.Tensor:
        self.initial = self._rand(shape)  # DeltaProbImportanceScoreEvaluator: torch.rand(input_ids.shape)
        return self.initial.clone()

    def update(self, ids: torch.Tensor):
        mask = self._rand(ids.shape) < self.ratio  # UniformTokenReplacer
        tokens = self._sample(ids)  # drawn for every position, used where mask is True
        self.steps.append({"replace_mask": mask.clone(), "update_tokens": tokens.clone()})
        return mask, tokens

    def stop_fill(self, ids: torch.Tensor) -> torch.Tensor:
        tokens = self._sample(ids)  # RankingTokenReplacer: drawn everywhere, used where not kept
        self.steps[-1]["stop_fill_tokens"] = tokens.clone()
        return tokens


class ReplayStream:
    """Replays a recorded stream (fixture["stream"]) in order."""

    def __init__(self, stream: dict):
        self.initial = torch.tensor(stream["initial_scores"], dtype=torch.float32)
        self.steps = stream["steps"]
        self.i = 0

    def initial_scores(self, shape) -> torch.Tensor:
        assert tuple(self.initial.shape) == tuple(shape), (self.initial.shape, shape)
        return self.initial.clone()

    def _rows(self, key, rows):
        t = torch.tensor(self.steps[self.i][key])
        return t if rows is None else t[rows]

    def update(self, ids: torch.Tensor, rows=None):
        if self.i >= len(self.steps):
            raise IndexError("stream exhausted")
        return self._rows("replace_mask", rows).bool(), self._rows("update_tokens", rows).long()

    def stop_fill(self, ids: torch.Tensor, rows=None) -> torch.Tensor:
        t = self._rows("stop_fill_tokens", rows).long()
        self.i += 1
        return t


# ----------------------------------------------------------------------------------------
# The ReAGent core loop (inseq 0.7.1 semantics)
# ----------------------------------------------------------------------------------------


def last_logits_fn(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """ids [B, L] -> next-token logits [B, V] (float32), a plain forward without attention
    mask, exactly as inseq calls `self.model(input_ids)["logits"][:, -1, :]`."""

    @torch.no_grad()
    def f(ids: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids)["logits"][:, -1, :].float()

    return f


@dataclass
class Result:
    p0: float
    steps_taken: int
    trace: list = field(default_factory=list)
    final_scores: Optional[torch.Tensor] = None  # [P, L] softmax of final logit scores
    final_logit_scores: Optional[torch.Tensor] = None
    converged: Optional[torch.Tensor] = None  # [P] bool (stop_mask)
    converged_step: Optional[list] = None  # 1-based step at which each probe converged, or None
    mean_importance: Optional[torch.Tensor] = None  # [L], post-#305 semantics (never NaN)
    mean_importance_inseq_0_7_1: Optional[torch.Tensor] = None  # [L], NaN when none converged


def aggregate(final_scores: torch.Tensor, converged: torch.Tensor):
    """AggregateRationalizer.__call__: mean of the converged probes' final (softmax) scores.
    Returns (mean as after inseq PR #305, mean as in inseq 0.7.1)."""
    masked = final_scores * torch.unsqueeze(converged, -1)
    n = torch.sum(converged)
    v071 = torch.sum(masked, dim=0) / n  # 0/0 = NaN when no probe converged
    fixed = v071 if int(n) > 0 else torch.mean(final_scores, dim=0)
    return fixed, v071


def run_reagent(logits_fn, context_ids: Sequence[int], target_id: int, hp: Hyper, stream,
                drop_stopped: bool = False, trace: bool = True) -> Result:
    """One ReAGent attribution of `target_id` given `context_ids` (the whole prefix the model
    sees, BOS included; every position is a replacement candidate).

    drop_stopped=False mirrors inseq: all P probes stay in the batch every step (a stopped
    probe's update is computed and discarded). drop_stopped=True only runs the active probes
    (what the Rust side does); with a ReplayStream it gives the same result."""
    P, L = hp.num_probes, len(context_ids)
    ids = torch.tensor([list(context_ids)], dtype=torch.long).repeat(P, 1)  # input_ids.repeat(batch_size, 1)
    tgt = torch.tensor([int(target_id)], dtype=torch.long)  # inseq passes target_id with shape [1]
    n_keep = hp.keep_n(L)

    # p^(o): softmax(logits[:, -1, :])[:, target] -> [P, 1]
    p_orig = torch.softmax(logits_fn(ids), -1)[:, tgt]
    logit_scores = stream.initial_scores((P, L))  # U[0,1) "logit" scores, float32
    stop = torch.zeros([P], dtype=torch.bool)
    conv_step: list = [None] * P
    res = Result(p0=float(p_orig[0, 0]), steps_taken=0)

    num_steps = 0
    while num_steps < hp.max_steps:
        num_steps += 1
        rows = torch.nonzero(~stop).flatten() if drop_stopped else torch.arange(P)
        ids_b = ids[rows]
        # ---- update (DeltaProbImportanceScoreEvaluator.update_importance_score) ----
        if drop_stopped:
            mask, tok = stream.update(ids_b, rows=rows)
        else:
            mask, tok = stream.update(ids_b)
        replaced = ids_b * ~mask + tok * mask
        p_repl = torch.softmax(logits_fn(replaced), -1)[:, tgt]  # [B, 1]
        delta = p_orig[rows] - p_repl  # [B, 1]
        delta_score = mask * delta + ~mask * -delta  # +delta where replaced, -delta elsewhere
        upd = logit_scores[rows] + torch.logit(delta_score * 0.5 + 0.5)  # no eps, no clamp
        if drop_stopped:
            new_scores = logit_scores.clone()
            new_scores[rows] = upd
        else:
            # inseq: ~stop * update + stop * old   (arithmetic blend, stop mask of the previous step)
            st = torch.unsqueeze(stop, 1)
            new_scores = ~st * upd + st * logit_scores
        logit_scores = new_scores
        importance = torch.softmax(logit_scores, -1)  # [P, L]

        # ---- stop test (TopKStoppingConditionEvaluator + RankingTokenReplacer) ----
        imp_b = importance[rows]
        pos_sorted = torch.argsort(imp_b, descending=True)
        keep_pos = pos_sorted[..., :n_keep]
        repl_mask = torch.ones_like(imp_b, dtype=torch.bool).scatter(-1, keep_pos, hp.invert_keep)
        if drop_stopped:
            fill = stream.stop_fill(ids_b, rows=rows)
        else:
            fill = stream.stop_fill(ids_b)
        filled = ids_b * ~repl_mask + fill * repl_mask
        logits_s = logits_fn(filled)
        topk = torch.argsort(logits_s, descending=True)[:, : hp.stop_top_k]
        hit_b = torch.sum(topk == tgt, dim=-1, dtype=torch.bool)
        hit = torch.zeros([P], dtype=torch.bool)
        hit[rows] = hit_b
        newly = hit & ~stop
        stop = stop | hit
        for p in torch.nonzero(newly).flatten().tolist():
            conv_step[p] = num_steps

        if trace:
            full_p = torch.full([P], float("nan"))
            full_p[rows] = p_repl[:, 0]
            keep_full = torch.full([P, keep_pos.shape[1]], -1, dtype=torch.long)  # min(n, L) columns
            keep_full[rows] = keep_pos
            # target rank = number of logits strictly greater than the target's
            tl = logits_s[:, tgt]
            rank = torch.full([P], -1, dtype=torch.long)
            rank[rows] = torch.sum(logits_s > tl, dim=-1)
            # margins: how far the decisions are from flipping (for robustness checks)
            srt = torch.sort(logits_s, descending=True).values
            k = hp.stop_top_k
            in_k = torch.sum(topk == tgt, dim=-1) > 0
            kth = srt[:, k] if k < srt.shape[1] else torch.full_like(tl[:, 0], -float("inf"))
            margin_k = torch.where(in_k, tl[:, 0] - kth, srt[:, k - 1] - tl[:, 0])
            imp_sorted = torch.sort(imp_b, descending=True).values
            if n_keep < L:
                margin_keep = (imp_sorted[:, n_keep - 1] - imp_sorted[:, n_keep]) / imp_sorted[:, n_keep - 1]
            else:
                margin_keep = torch.full([len(rows)], float("inf"))
            res.trace.append({
                "rows": rows.clone(),
                "p_replaced": full_p,
                "logit_scores": logit_scores.clone(),
                "scores": importance.clone(),
                "kept_positions": keep_full,
                "stop_hits": hit.clone(),
                "stop_target_rank": rank,
                "converged": stop.clone(),
                "margin_topk": margin_k,
                "margin_keep": margin_keep,
            })
        if torch.prod(stop) > 0:
            break

    res.steps_taken = num_steps
    res.final_logit_scores = logit_scores
    res.final_scores = torch.softmax(logit_scores, -1)
    res.converged = stop
    res.converged_step = conv_step
    res.mean_importance, res.mean_importance_inseq_0_7_1 = aggregate(res.final_scores, stop)
    return res


# ----------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------


def load_model(path: Path):
    from transformers import AutoModelForCausalLM

    # inseq loads models with attn_implementation="eager" (huggingface_model.py); so do we
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


def load_tokenizer(path: Path):
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # noqa: BLE001
        print(f"note: no tokenizer loaded from {path}: {e}", file=sys.stderr)
        return None


def build_tiny_model(out: Path, seed: int = 1234) -> Path:
    """Deterministic fallback: a tiny tied-embedding Llama with a word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ("the a of to in on at is was cat dog sat mat red blue big small house tree run ran "
             "walk over under and or but i you he she it we they my your his her this that with "
             "from for by as be are were have has had do did go went see saw").split()
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    for i in range(len(vocab), 128):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    ft = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    out.mkdir(parents=True, exist_ok=True)
    ft.save_pretrained(str(out))
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, initializer_range=0.3)
    LlamaForCausalLM(cfg).eval().save_pretrained(str(out))
    return out


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------


def f32list(t: torch.Tensor):
    """float32 tensor -> nested lists of Python floats (the exact f64 widening of each f32;
    repr round-trips). NaN/inf -> None."""
    def conv(x):
        x = float(x)
        return None if (math.isnan(x) or math.isinf(x)) else x
    t = t.detach().to(torch.float32).cpu()
    if t.dim() == 0:
        return conv(t)
    return [f32list(r) if r.dim() > 0 else conv(r) for r in t]


def result_to_expected(res: Result, hp: Hyper, n_steps_recorded: int) -> dict:
    steps = []
    before = [False] * hp.num_probes  # converged before this step -> inactive in this step
    for tr in res.trace:
        def act(vals):  # per-probe values only for the probes active in this step, else null
            return [None if b else v for v, b in zip(vals, before)]
        steps.append({
            "active": [not b for b in before],
            "p_replaced": act(f32list(tr["p_replaced"])),
            "logit_scores": f32list(tr["logit_scores"]),
            "scores": f32list(tr["scores"]),
            "kept_positions": act(tr["kept_positions"].tolist()),
            "stop_hits": act([bool(x) for x in tr["stop_hits"]]),
            "stop_target_rank": act(tr["stop_target_rank"].tolist()),
            "converged": [bool(x) for x in tr["converged"]],
        })
        before = [bool(x) for x in tr["converged"]]
    assert len(steps) == n_steps_recorded == res.steps_taken
    v071 = res.mean_importance_inseq_0_7_1
    return {
        "p0": float(res.p0),
        "steps_taken": res.steps_taken,
        "steps": steps,
        "final_logit_scores": f32list(res.final_logit_scores),
        "final_scores": f32list(res.final_scores),
        "converged": [bool(x) for x in res.converged],
        "converged_step": res.converged_step,
        "converged_probes": int(res.converged.sum()),
        "mean_importance": f32list(res.mean_importance),
        "mean_importance_inseq_0_7_1": None if bool(torch.isnan(v071).any()) else f32list(v071),
    }


def stream_to_json(rec: TorchRngStream) -> dict:
    return {
        "initial_scores": f32list(rec.initial),
        "steps": [{
            "replace_mask": [[int(b) for b in row] for row in s["replace_mask"].tolist()],
            "update_tokens": s["update_tokens"].tolist(),
            "stop_fill_tokens": s["stop_fill_tokens"].tolist(),
        } for s in rec.steps],
    }


def robust(res: Result, keep_tol: float = 5e-4, topk_tol: float = 1e-2) -> tuple[bool, float, float]:
    """Decisions (kept set, top-k hit) of every probe active in a step are away from ties."""
    mk, mt = float("inf"), float("inf")
    prev_stop = torch.zeros_like(res.converged)
    for tr in res.trace:
        active = ~prev_stop
        if active.any():
            mk = min(mk, float(tr["margin_keep"][active].min()))
            mt = min(mt, float(tr["margin_topk"][active].min()))
        prev_stop = tr["converged"]
    return (mk > keep_tol and mt > topk_tol), mk, mt


def context_for(tokenizer, text: str, length: int, vocab: int, seed: int, bos: Optional[int]) -> list[int]:
    """[BOS] + tokenizer(text), cut to `length` (padded with seeded random ids if short).
    BOS is prepended when the tokenizer does not add it (inseq attributes whatever the
    tokenizer returns; Llama tokenizers normally add BOS, and it is a candidate position)."""
    ids: list[int] = []
    if tokenizer is not None:
        try:
            ids = list(tokenizer(text)["input_ids"])
        except Exception:  # noqa: BLE001
            ids = []
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    if len(ids) < length:
        g = torch.Generator().manual_seed(seed)
        extra = torch.randint(3, vocab, [length - len(ids)], generator=g).tolist()
        ids = ids + extra
    return ids[:length]


CASES = [
    # name, text, L, description, search space
    ("a_converge", "the cat sat on the mat and the dog ran to", 10,
     "all probes converge after a few steps (at different steps)"),
    ("b_partial", "she saw a big red house by the tree with her", 10,
     "some probes converge, the others hit max_steps"),
    ("c_none", "we went from the house to the tree and then", 9,
     "no probe converges; mean over all probes (inseq 0.7.1 would give NaN)"),
    ("d_keep_ratio", "i walk over the small blue mat with my dog and", 11,
     "keep_top_n = 0, n = ceil(keep_ratio * L); invert_keep = false"),
    ("e_short_context", "the dog", 3,
     "inseq defaults with L <= keep_top_n: nothing is replaced in the stop test"),
]


# Configurations found by `search_case` for fixtures/models/llama_tied (sha256 56d4a2ed...),
# tried first so that `fixtures` runs in seconds; the search is the fallback for another model.
# name -> (target_id, Hyper kwargs, stream seed)
PINNED: dict = {
    'a_converge': (268, {'num_probes': 6, 'keep_top_n': 7, 'keep_ratio': None, 'invert_keep': False, 'stop_top_k': 3, 'replacing_ratio': 0.3, 'max_steps': 40}, 0),
    'b_partial': (124, {'num_probes': 8, 'keep_top_n': 3, 'keep_ratio': None, 'invert_keep': False, 'stop_top_k': 2, 'replacing_ratio': 0.3, 'max_steps': 30}, 0),
    'c_none': (235, {'num_probes': 6, 'keep_top_n': 3, 'keep_ratio': None, 'invert_keep': False, 'stop_top_k': 2, 'replacing_ratio': 0.3, 'max_steps': 20}, 6),
    'd_keep_ratio': (6, {'num_probes': 5, 'keep_top_n': 0, 'keep_ratio': 0.3, 'invert_keep': False, 'stop_top_k': 3, 'replacing_ratio': 0.2, 'max_steps': 30}, 0),
    'e_short_context': (7, {'num_probes': 4, 'keep_top_n': 5, 'keep_ratio': None, 'invert_keep': False, 'stop_top_k': 3, 'replacing_ratio': 0.3, 'max_steps': 3000}, 0),
}


def case_ok(name: str, hp: Hyper, res: Result) -> bool:
    conv = [s for s in res.converged_step if s is not None]
    if name == "a_converge":
        return len(conv) == hp.num_probes and 3 <= res.steps_taken <= 15 and len(set(conv)) >= 3
    if name == "b_partial":
        return res.steps_taken == hp.max_steps and 2 <= len(conv) <= hp.num_probes - 2 and len(set(conv)) >= 2
    if name == "c_none":
        return len(conv) == 0
    if name == "d_keep_ratio":
        return len(conv) >= 2 and res.steps_taken >= 3 and len(set(conv)) >= 2
    return True


def greedy_and_ranked(logits_fn, ctx):
    lg = logits_fn(torch.tensor([ctx]))[0]
    return torch.argsort(lg, descending=True).tolist()


def search_case(name, logits_fn, ctx, vocab, sampler):
    """Deterministically search (target, hyper, seed) satisfying the case's criterion."""
    ranked = greedy_and_ranked(logits_fn, ctx)
    L = len(ctx)
    cands = []
    if name == "a_converge":
        for k in (3, 5, 10, 20, 40):
            for n in (L - 4, L - 3, L - 2):
                for t_rank in (0, 1, 2):
                    cands.append((ranked[t_rank], Hyper(num_probes=6, keep_top_n=n, stop_top_k=k,
                                                        replacing_ratio=0.3, max_steps=40)))
    elif name == "b_partial":
        for k in (2, 3, 5, 10, 20):
            for n in (3, 4, 5, 6):
                for t_rank in (0, 1, 2, 4, 8):
                    cands.append((ranked[t_rank], Hyper(num_probes=8, keep_top_n=n, stop_top_k=k,
                                                        replacing_ratio=0.3, max_steps=30)))
    elif name == "c_none":
        for t_rank in (len(ranked) // 2, len(ranked) - 1):
            cands.append((ranked[t_rank], Hyper(num_probes=6, keep_top_n=3, stop_top_k=2,
                                                replacing_ratio=0.3, max_steps=20)))
    elif name == "d_keep_ratio":
        for k in (3, 5, 10, 20):
            for t_rank in (0, 1, 3):
                for kr in (0.3, 0.4):
                    cands.append((ranked[t_rank], Hyper(num_probes=5, keep_top_n=0, keep_ratio=kr,
                                                        stop_top_k=k, replacing_ratio=0.2, max_steps=30)))
    elif name == "e_short_context":
        cands.append((ranked[0], Hyper(num_probes=4, max_steps=3000)))  # inseq defaults, fewer probes
    tries = [(t, hp, seed) for t, hp in cands for seed in range(12)]
    if name in PINNED:
        t, kw, seed = PINNED[name]
        tries.insert(0, (t, Hyper(**kw), seed))
    for target, hp, seed in tries:
        rec = TorchRngStream(sampler, hp.replacing_ratio, torch.Generator().manual_seed(seed))
        res = run_reagent(logits_fn, ctx, target, hp, rec)
        if not case_ok(name, hp, res):
            continue
        good, mk, mt = robust(res)
        if good:
            return target, hp, seed, rec, res, (mk, mt)
    raise RuntimeError(f"no configuration found for case {name}")


def write_fixtures(model_dir: Path, out_dir: Path) -> list[Path]:
    import transformers

    model = load_model(model_dir)
    tok = load_tokenizer(model_dir)
    logits_fn = last_logits_fn(model)
    vocab = int(model.config.vocab_size)
    excluded = sorted({int(x) for x in (getattr(model.config, "bos_token_id", None),
                                        getattr(model.config, "eos_token_id", None),
                                        getattr(tok, "unk_token_id", None) if tok is not None else None)
                       if isinstance(x, int)})
    sampler = UniformSampler(vocab, excluded)
    weights = model_dir / "model.safetensors"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (name, text, L, desc) in enumerate(CASES):
        bos = getattr(model.config, "bos_token_id", None)
        ctx = context_for(tok, text, L, vocab, seed=100 + i, bos=bos if isinstance(bos, int) else None)
        target, hp, seed, rec, res, (mk, mt) = search_case(name, logits_fn, ctx, vocab, sampler)
        # the recorded stream must replay to the identical result
        rep = run_reagent(logits_fn, ctx, target, hp, ReplayStream(stream_to_json(rec)))
        assert torch.equal(rep.final_logit_scores, res.final_logit_scores)
        doc = {
            "format": FORMAT,
            "case": name,
            "description": desc,
            "reference": "inseq 0.7.1 reagent_core, ported in scripts/reagent_reference.py",
            "generator": {
                "script": "scripts/reagent_reference.py fixtures",
                "torch": torch.__version__, "transformers": transformers.__version__,
                "stream_seed": seed, "stream_source": "torch.Generator().manual_seed(stream_seed), inseq draw order",
                "sampler": sampler.describe(),
            },
            "model": {
                "path": os.path.relpath(model_dir, ROOT),
                "model_safetensors_sha256": sha256_file(weights) if weights.exists() else None,
                "dtype": "float32", "vocab_size": vocab,
            },
            "context_ids": list(map(int, ctx)),
            "context_text": text if tok is not None else None,
            "target_id": int(target),
            "hyper": asdict(hp),
            "keep_n": hp.keep_n(len(ctx)),
            "keep_n_effective": min(hp.keep_n(len(ctx)), len(ctx)),
            "robustness": {"min_rel_gap_at_keep_boundary": mk if math.isfinite(mk) else None,
                           "min_logit_gap_at_topk_boundary": mt if math.isfinite(mt) else None},
            "stream": stream_to_json(rec),
            "expected": result_to_expected(res, hp, len(rec.steps)),
        }
        path = out_dir / f"{name}.json"
        with open(path, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        conv = doc["expected"]["converged_step"]
        print(f"{path.relative_to(ROOT)}: L={len(ctx)} P={hp.num_probes} steps={res.steps_taken} "
              f"converged={doc['expected']['converged_probes']} conv_step={conv} "
              f"size={path.stat().st_size // 1024}KB seed={seed} target={target}")
        written.append(path)
    write_sampler_vectors(out_dir, sampler)
    return written


def write_sampler_vectors(out_dir: Path, uniform: UniformSampler):
    """Small test vectors for the two samplers' u -> token formulas."""
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, uniform.vocab_size, [3, 6], generator=g)
    u = torch.rand([3, 6], generator=g)
    u[0, 0] = 0.0
    u[0, 1] = 1.0 - 2.0 ** -24  # largest value torch.rand can return
    # a toy POS grouping in insertion order: group of id = (id * 7) % 3, groups keyed in
    # order of first appearance when scanning ids 0..V-1 (as inseq's builder does)
    pos2ids: dict = {}
    for i in range(uniform.vocab_size):
        pos2ids.setdefault(f"T{(i * 7) % 3}", []).append(i)
    pos = PosTagSampler(pos2ids, uniform.vocab_size)
    doc = {
        "format": FORMAT + "/sampler-vectors",
        "ids": ids.tolist(),
        "u": f32list(u),
        "uniform": {**uniform.describe(), "expected": uniform(ids, u).tolist()},
        "postag": {
            "groups_rule": "group key of id i is (i*7)%3; groups ordered by first appearance scanning "
                           "ids 0..vocab_size-1; offsets = f32 prefix sums of group sizes",
            "vocab_size": uniform.vocab_size,
            "formula": "g = group(id); token = group_ids_concat[trunc(f32(u) * f32(size[g]) + f32(offset[g]))]",
            "expected": pos(ids, u).tolist(),
        },
    }
    with open(out_dir / "sampler_vectors.json", "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")


def selftest(model_dir: Path, fixture_dir: Path) -> int:
    model = load_model(model_dir)
    logits_fn = last_logits_fn(model)
    bad = 0
    for path in sorted(fixture_dir.glob("*.json")):
        doc = json.load(open(path))
        if doc.get("format") != FORMAT:
            continue
        hp = Hyper(**doc["hyper"])
        exp = doc["expected"]
        for drop in (False, True):
            res = run_reagent(logits_fn, doc["context_ids"], doc["target_id"], hp,
                              ReplayStream(doc["stream"]), drop_stopped=drop)
            got = result_to_expected(res, hp, res.steps_taken)
            fs = torch.tensor(got["final_scores"]); es = torch.tensor(exp["final_scores"])
            mi = torch.tensor(got["mean_importance"]); em = torch.tensor(exp["mean_importance"])
            same_flow = (got["steps_taken"] == exp["steps_taken"] and got["converged"] == exp["converged"]
                         and got["converged_step"] == exp["converged_step"])
            if drop:
                ok = (same_flow and torch.allclose(fs, es, rtol=1e-5, atol=1e-7)
                      and torch.allclose(mi, em, rtol=1e-5, atol=1e-7)
                      and all(g["stop_hits"] == e["stop_hits"] and g["kept_positions"] == e["kept_positions"]
                              and g["active"] == e["active"] for g, e in zip(got["steps"], exp["steps"])))
                d = float((fs - es).abs().max())
            else:
                ok = same_flow and got == exp
                d = float((fs - es).abs().max())
            print(f"{path.name} drop_stopped={drop}: {'OK' if ok else 'MISMATCH'} (max |final diff| {d:.3g})")
            bad += 0 if ok else 1
    return bad


# ----------------------------------------------------------------------------------------
# Comparison against inseq 0.7.1
# ----------------------------------------------------------------------------------------


def verify_inseq(model_dir: Path, seeds=(0, 1, 2)) -> int:
    """Run inseq's own AggregateRationalizer (built exactly as inseq.attr.feat.ops.Reagent
    builds it, with a POSTagTokenSampler whose tag table is a toy mapping supplied through
    inseq's pickle cache) and the port with a TorchRngStream over the same seed; compare
    every step's scores bitwise, plus the end-to-end `inseq.load_model(...).attribute`."""
    import pickle
    import tempfile

    cache = Path(tempfile.mkdtemp(prefix="inseq_cache_"))
    os.environ["INSEQ_ARTIFACTS_CACHE"] = str(cache)
    import inseq
    from inseq.attr.feat.ops.reagent_core import (AggregateRationalizer, DeltaProbImportanceScoreEvaluator,
                                                  POSTagTokenSampler, TopKStoppingConditionEvaluator,
                                                  UniformTokenReplacer)

    model = load_model(model_dir)
    tok = load_tokenizer(model_dir)
    V = tok.vocab_size
    pos2ids: dict = {}
    for i in range(V):
        pos2ids.setdefault(f"T{(i * 7) % 3}", []).append(i)
    ident = model_dir.name
    (cache / "pos_tag_sampler_cache").mkdir(parents=True, exist_ok=True)
    with open(cache / "pos_tag_sampler_cache" / f"{ident}.pkl", "wb") as f:
        pickle.dump(pos2ids, f)
    inseq_sampler = POSTagTokenSampler(tokenizer=tok, identifier=ident,
                                       cache_dir=cache / "pos_tag_sampler_cache")
    port_sampler = PosTagSampler(pos2ids, V)
    logits_fn = last_logits_fn(model)

    class Recorder:
        def __init__(self, inner):
            self.inner, self.scores, self.hits = inner, [], []

        def __call__(self, input_ids, target_id, importance_score, *a):
            self.scores.append(importance_score.clone())
            h = self.inner(input_ids, target_id, importance_score, *a)
            self.hits.append(h.clone())
            return h

    fails = 0
    ctx = list(tok("the cat sat on the mat and the dog")["input_ids"])
    ranked = greedy_and_ranked(logits_fn, ctx)
    configs = [
        (ranked[0], Hyper(num_probes=6, keep_top_n=5, stop_top_k=3, replacing_ratio=0.3, max_steps=25)),
        (ranked[1], Hyper(num_probes=8, keep_top_n=4, stop_top_k=2, replacing_ratio=0.3, max_steps=30)),
        (ranked[len(ranked) // 2], Hyper(num_probes=4, keep_top_n=3, stop_top_k=1, replacing_ratio=0.2, max_steps=15)),
        (ranked[2], Hyper(num_probes=5, keep_top_n=0, keep_ratio=0.4, stop_top_k=5, replacing_ratio=0.3, max_steps=30)),
    ]
    for target, hp in configs:
        for seed in seeds:
            stop_eval = TopKStoppingConditionEvaluator(model=model, sampler=inseq_sampler, top_k=hp.stop_top_k,
                                                       keep_top_n=hp.keep_top_n, keep_ratio=hp.keep_ratio,
                                                       invert_keep=hp.invert_keep)
            rec = Recorder(stop_eval)
            ise = DeltaProbImportanceScoreEvaluator(model=model, tokenizer=tok,
                                                    token_replacer=UniformTokenReplacer(sampler=inseq_sampler, ratio=hp.replacing_ratio),
                                                    stopping_condition_evaluator=rec, max_steps=hp.max_steps)
            rat = AggregateRationalizer(importance_score_evaluator=ise, batch_size=hp.num_probes,
                                        overlap_threshold=0, overlap_strict_pos=True,
                                        keep_top_n=hp.keep_top_n, keep_ratio=hp.keep_ratio)
            torch.manual_seed(seed)
            rat(torch.tensor([ctx]), torch.tensor([target]))
            torch.manual_seed(seed)  # the port draws from the global RNG in the same order
            res = run_reagent(logits_fn, ctx, target, hp, TorchRngStream(port_sampler, hp.replacing_ratio))
            ok = ise.num_steps == res.steps_taken and len(rec.scores) == len(res.trace)
            for s_in, h_in, tr in zip(rec.scores, rec.hits, res.trace):
                ok &= torch.equal(s_in, tr["scores"])
                ok &= torch.equal(h_in, tr["stop_hits"])
            ok &= torch.equal(ise.stop_mask, res.converged)
            mi = rat.mean_importance_score
            if int(res.converged.sum()) > 0:
                ok &= torch.equal(mi, res.mean_importance)
            else:
                ok &= bool(torch.isnan(mi).all()) and bool(torch.isnan(res.mean_importance_inseq_0_7_1).all())
            print(f"verify-inseq target={target} {hp} seed={seed}: steps={res.steps_taken} "
                  f"converged={int(res.converged.sum())}/{hp.num_probes} -> {'OK' if ok else 'MISMATCH'}")
            fails += 0 if ok else 1

    # end to end through inseq's public API: forced decoding of two extra tokens
    hp = Hyper(num_probes=4, keep_top_n=3, stop_top_k=10, replacing_ratio=0.3, max_steps=20)
    am = inseq.load_model(str(model_dir), "reagent", keep_top_n=hp.keep_top_n,
                          stopping_condition_top_k=hp.stop_top_k, replacing_ratio=hp.replacing_ratio,
                          max_probe_steps=hp.max_steps, num_probes=hp.num_probes)
    prompt = tok.decode(ctx, skip_special_tokens=True)
    gen = tok.decode(ctx + [ranked[0], ranked[3]], skip_special_tokens=True)
    torch.manual_seed(11)
    out = am.attribute(prompt, gen, show_progress=False)
    seq = out.sequence_attributions[0]
    full = [t.id for t in seq.target]  # what inseq actually attributed (BOS included)
    n_prompt = len(full) - seq.target_attributions.shape[1]
    attr = seq.target_attributions  # [L_total, n_gen, hidden], same value along hidden
    torch.manual_seed(11)  # RNG continues across generation steps, as in inseq
    for j, t_pos in enumerate(range(n_prompt, len(full))):
        # use inseq's own model instance (its loader may pick another attention kernel)
        res = run_reagent(last_logits_fn(am.model), full[:t_pos], full[t_pos], hp,
                          TorchRngStream(port_sampler, hp.replacing_ratio))
        col = attr[:t_pos, j, 0]
        mine = res.mean_importance_inseq_0_7_1
        ok = torch.equal(torch.nan_to_num(col, nan=-1.0), torch.nan_to_num(mine, nan=-1.0))
        print(f"verify-inseq end-to-end step {j} (prefix of {t_pos} tokens as inseq tokenized it): "
              f"{'OK' if ok else 'MISMATCH'} (steps={res.steps_taken}, max |diff| "
              f"{float((col - mine).abs().max()):.3g})")
        fails += 0 if ok else 1
    return fails


# ----------------------------------------------------------------------------------------


def resolve_model(arg: Optional[str], wait_s: int) -> Path:
    import time

    if arg:
        return Path(arg).resolve()
    deadline = time.time() + wait_s
    while True:
        if (DEFAULT_MODEL / "config.json").exists() and (DEFAULT_MODEL / "model.safetensors").exists():
            return DEFAULT_MODEL
        if time.time() >= deadline:
            break
        time.sleep(15)
    print(f"note: {DEFAULT_MODEL} not found; building the fallback tiny model in {FALLBACK_MODEL}",
          file=sys.stderr)
    if not (FALLBACK_MODEL / "model.safetensors").exists():
        build_tiny_model(FALLBACK_MODEL)
    return FALLBACK_MODEL


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("fixtures", "selftest", "verify-inseq"):
        p = sub.add_parser(name)
        p.add_argument("--model", default=None, help=f"HF model folder (default {DEFAULT_MODEL.relative_to(ROOT)})")
        p.add_argument("--wait", type=int, default=0, help="seconds to wait for the default model to appear")
        p.add_argument("--out", default=str(DEFAULT_OUT), help="fixture folder")
    p = sub.add_parser("tiny-model")
    p.add_argument("out")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if args.cmd == "tiny-model":
        build_tiny_model(Path(args.out))
        return 0
    model_dir = resolve_model(args.model, args.wait)
    if args.cmd == "fixtures":
        write_fixtures(model_dir, Path(args.out))
        return selftest(model_dir, Path(args.out))
    if args.cmd == "selftest":
        return selftest(model_dir, Path(args.out))
    if args.cmd == "verify-inseq":
        return verify_inseq(model_dir)
    return 2


if __name__ == "__main__":
    sys.exit(main())
