#!/usr/bin/env python3
"""One Markdown overview of the `reagent evaluate` runs under docs/results/.

Reads every docs/results/<run>/summary.csv (written by `reagent evaluate` or `reagent summarize`)
and prints, per run, one table: the paper's ln-ratios against the random baseline (Soft-NC,
Soft-NS) with their bootstrap 95% intervals, the antecedent top-3 rate (LongRA) with its
interval, the agreement of two random streams, the contexts scored and the seconds per attributed
token; and, for runs that have them, the erasure metrics' AOPC sufficiency and comprehensiveness.
Standard library only.

    python3 scripts/results_overview.py [docs/results]
"""
import csv
import math
import sys
from pathlib import Path

RUNS = [  # (folder, title), in order; missing folders are skipped
    ("smollm2-longra", "SmolLM2, LongRA: baselines and the perturbation variants"),
    ("smollm2-longra-reference", "SmolLM2, LongRA: the reference ReAGent (paper-token preset, 100 steps) and its recursion variants"),
    ("smollm2-wikibio", "SmolLM2, WikiBio"),
    ("smollm2-tellmewhy", "SmolLM2, TellMeWhy"),
    ("gemma3-longra", "Gemma-3, LongRA"),
    ("gemma3-longra-reference", "Gemma-3, LongRA: the reference ReAGent"),
    ("gemma3-wikibio", "Gemma-3, WikiBio"),
    ("gemma3-tellmewhy", "Gemma-3, TellMeWhy"),
]


def num(row, key):
    v = row.get(key, "")
    if v == "":
        return None
    v = float(v)
    return None if math.isnan(v) else v


def with_ci(row, key, lo, hi, fmt, scale=1.0):
    v = num(row, key)
    if v is None:
        return "–"
    a, b = num(row, lo), num(row, hi)
    s = fmt.format(v * scale)
    if a is not None and b is not None:
        s += " [" + fmt.format(a * scale) + ", " + fmt.format(b * scale) + "]"
    return s


def agreement(row):
    rho, top = num(row, "stability_spearman"), num(row, "stability_top3")
    if top is None:
        return "–"
    return ("–" if rho is None else f"{rho:.2f}") + f" / {top:.0%}"


def aopc(row):
    s, c = num(row, "aopc_suff"), num(row, "aopc_comp")
    if s is None or c is None:
        return "–"
    return f"{s:.3f} / {c:.3f}"


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results")
    found = False
    for folder, title in RUNS:
        f = root / folder / "summary.csv"
        if not f.exists():
            continue
        found = True
        with open(f, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        n = max(int(r["examples"]) for r in rows)
        erasure = any(num(r, "aopc_suff") is not None for r in rows)
        print(f"**{title}** ({n} examples; [`{folder}/summary.md`]({folder}/summary.md))\n")
        print("| method | Soft-NC ln(m/random) [95% CI] | Soft-NS ln(m/random) [95% CI] | antecedent top-3 [95% CI] | seed agreement ρ / top-3 ≥ 2 | contexts/token | s/token |"
              + (" erasure AOPC-Suff ↓ / AOPC-Comp ↑ |" if erasure else ""))
        print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if erasure else ""))
        for r in rows:
            ante = with_ci(r, "antecedent_top3", "antecedent_top3_lo", "antecedent_top3_hi", "{:.0f}", 100.0)
            ante = ante if ante == "–" else ante.replace(" [", "% [")
            rows_per = num(r, "forward_rows_per_token")
            print(
                f"| {r['method']} "
                f"| {with_ci(r, 'ln_soft_nc_vs_random', 'ln_soft_nc_lo', 'ln_soft_nc_hi', '{:+.2f}')} "
                f"| {with_ci(r, 'ln_soft_ns_vs_random', 'ln_soft_ns_lo', 'ln_soft_ns_hi', '{:+.2f}')} "
                f"| {ante} | {agreement(r)} "
                f"| {'–' if rows_per is None else f'{rows_per:.0f}'} "
                f"| {float(r['seconds_per_token']):.1f} |"
                + (f" {aopc(r)} |" if erasure else "")
            )
        print()
    if not found:
        sys.exit(f"no summary.csv under {root}")


if __name__ == "__main__":
    main()
