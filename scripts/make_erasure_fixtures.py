#!/usr/bin/env python3
"""Reference for the erasure metrics of `reagent evaluate`, and fixture generator.

The erasure metrics are ERASER's sufficiency and comprehensiveness (DeYoung et al. 2020,
"ERASER: A Benchmark to Evaluate Rationalized NLP Models", ACL; the same definitions as ferret's
`AOPC_Comprehensiveness_Evaluation` / `AOPC_Sufficiency_Evaluation`), with the probability of
the attributed next token in place of the predicted class's:

    Suff(ratio) = p(y | x) - p(y | only the top k tokens of x)     (lower is better)
    Comp(ratio) = p(y | x) - p(y | x without its top k tokens)     (higher is better)

Tokens are *dropped* from the context (the kept ones keep their order), not zeroed. Special
tokens (marked `fixed`) are never dropped; the top k are taken among the other n tokens by
score (ties: the earlier position first), k = floor(ratio * n) clamped to 1..n-1. AOPC is the
mean over the ratios.

This script computes them with transformers (float32, eager attention) on
fixtures/models/llama_tied and writes fixtures/metrics/erasure.json, which
crates/reagent/tests/metric_parity.rs compares with the Rust implementation.

    /work/pyref/bin/python scripts/make_erasure_fixtures.py            # write the fixture
    /work/pyref/bin/python scripts/make_erasure_fixtures.py --check    # recompute and compare
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "fixtures" / "models" / "llama_tied"
OUT = ROOT / "fixtures" / "metrics" / "erasure.json"
RATIOS = [0.05, 0.1, 0.2, 0.3, 0.5]


def load_model():
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(str(MODEL), dtype=torch.float32, attn_implementation="eager")
    m.eval()
    return m


def prob(model, ids: list[int], target: int) -> float:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].to(torch.float32)
    return float(torch.softmax(logits, dim=-1)[target])


def plan(context, scores, fixed, ratios):
    free = [i for i in range(len(context)) if not fixed[i]]
    n = len(free)
    if n < 2:
        return []
    order = sorted(range(n), key=lambda j: -scores[free[j]])  # stable: earlier first on ties
    out = []
    for r in ratios:
        k = min(max(math.floor(r * n), 1), n - 1)
        top = {free[j] for j in order[:k]}
        kept = [t for i, t in enumerate(context) if fixed[i] or i in top]
        dropped = [t for i, t in enumerate(context) if i not in top]
        out.append((r, k, kept, dropped))
    return out


def cases():
    g = torch.Generator().manual_seed(7)
    ctx24 = [1] + torch.randint(3, 250, (23,), generator=g).tolist()
    ctx9 = torch.randint(3, 250, (9,), generator=g).tolist()
    peaked = torch.softmax(torch.randn(24, generator=g) * 3, 0).tolist()
    return [
        {"name": "bos_fixed_peaked", "context": ctx24, "fixed": [i == 0 for i in range(24)],
         "scores": peaked, "target": 17},
        {"name": "ties_no_fixed", "context": ctx9, "fixed": [False] * 9,
         "scores": [0.5, 0.1, 0.5, 0.0, 0.1, 0.5, 0.2, 0.2, 0.0], "target": 42},
        {"name": "negative_scores", "context": ctx24, "fixed": [i in (0, 11) for i in range(24)],
         "scores": [-(i % 5) + 0.25 * (i % 3) for i in range(24)], "target": 3},
        {"name": "too_short", "context": ctx9[:2], "fixed": [True, False],
         "scores": [0.5, 0.5], "target": 5},
    ]


def compute(model):
    out = []
    for c in cases():
        # Scores as float32, as the Rust side holds them.
        scores = [float(torch.tensor(s, dtype=torch.float32)) for s in c["scores"]]
        p0 = prob(model, c["context"], c["target"])
        rows = []
        for r, k, kept, dropped in plan(c["context"], scores, c["fixed"], RATIOS):
            pk = prob(model, kept, c["target"])
            pd = prob(model, dropped, c["target"])
            rows.append({"ratio": r, "k": k, "kept": kept, "dropped": dropped,
                         "suff": p0 - pk, "comp": p0 - pd})
        out.append({**c, "scores": scores, "p0": p0, "ratios": RATIOS, "erasure": rows})
    return {"doc": __doc__.split("\n\n")[1], "model": "fixtures/models/llama_tied",
            "cases": out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="recompute and compare with the fixture")
    a = ap.parse_args()
    doc = compute(load_model())
    if a.check:
        old = json.loads(OUT.read_text())
        for c, o in zip(doc["cases"], old["cases"]):
            assert c["erasure"] == o["erasure"] and c["p0"] == o["p0"], c["name"]
        print(f"{OUT}: reproduced")
        return
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
