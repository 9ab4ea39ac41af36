#!/usr/bin/env python3
"""One Markdown overview of the `reagent evaluate` runs under docs/results/.

Reads every docs/results/<model>-<dataset>/summary.csv (written by `reagent evaluate`) and prints
tables of the paper's ln-ratios against the random baseline (Soft-NS, Soft-NC), the antecedent
top-3 rate (LongRA) and the seconds per attributed token, one column per run. Standard library
only.

    python3 scripts/results_overview.py [docs/results]
"""
import csv
import math
import sys
from pathlib import Path

RUNS = [  # (folder, column title), in table order; missing folders are skipped
    ("smollm2-longra", "SmolLM2 LongRA"),
    ("smollm2-wikibio", "SmolLM2 WikiBio"),
    ("smollm2-tellmewhy", "SmolLM2 TellMeWhy"),
    ("gemma3-longra", "Gemma-3 LongRA"),
    ("gemma3-wikibio", "Gemma-3 WikiBio"),
    ("gemma3-tellmewhy", "Gemma-3 TellMeWhy"),
]


def load(root: Path):
    runs = []
    for folder, title in RUNS:
        f = root / folder / "summary.csv"
        if f.exists():
            with open(f, newline="", encoding="utf-8") as fh:
                runs.append((title, {r["method"]: r for r in csv.DictReader(fh)}))
    return runs


def cell(row, key, fmt):
    if row is None or row.get(key, "") == "":
        return "–"
    v = float(row[key])
    return "–" if math.isnan(v) else fmt.format(v)


def table(runs, key, fmt, methods, caption):
    print(f"**{caption}**\n")
    print("| method | " + " | ".join(t for t, _ in runs) + " |")
    print("|---|" + "---:|" * len(runs))
    for m in methods:
        print(f"| {m} | " + " | ".join(cell(r.get(m), key, fmt) for _, r in runs) + " |")
    print()


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results")
    runs = load(root)
    if not runs:
        sys.exit(f"no summary.csv under {root}")
    methods = list(dict.fromkeys(m for _, r in runs for m in r))
    counts = " · ".join(
        f"{t}: {next(iter(r.values()))['examples']} examples, {next(iter(r.values()))['tokens']} tokens"
        for t, r in runs
    )
    print(f"Runs: {counts}.\n")
    table(runs, "ln_soft_nc_vs_random", "{:+.2f}", methods,
          "Soft-NC, ln(method / random) (the measure of the paper's LongRA finding; higher is more faithful)")
    table(runs, "ln_soft_ns_vs_random", "{:+.2f}", methods,
          "Soft-NS, ln(method / random) (– where a mean is 0, so the log is undefined)")
    table(runs, "soft_nc", "{:.3f}", methods, "Soft-NC, mean")
    table(runs, "soft_ns", "{:.4f}", methods, "Soft-NS, mean")
    longra = [(t, r) for t, r in runs if "LongRA" in t]
    if longra:
        table(longra, "antecedent_top3", "{:.0%}", methods,
              "LongRA: how often the antecedent is among the method's top-3 context tokens")
    table(runs, "seconds_per_token", "{:.2f}", methods, "Seconds per attributed token")


if __name__ == "__main__":
    main()
