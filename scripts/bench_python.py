#!/usr/bin/env python3
"""The Python binding's overhead against the CLI on the README's example, side by side.

    target/py-venv/bin/python scripts/bench_python.py [--runs 7] [--threads 1]

Each run starts a fresh process for each side, alternating: `reagent attribute ... --json`
and a Python process that imports `reagent`, loads the model and attributes the same target
with the same settings. Reports, per side, the median and range of the whole process's wall
time and of the attribution's own wall time (`wall_s` in the result, model loading excluded),
and checks that both sides' scores are identical.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "The Eiffel Tower is a famous landmark in the city of"
TARGET = " Paris"

PY = """
import sys, json, reagent
reagent.set_threads({threads})
m = reagent.load({model!r})
out = m.attribute({prompt!r}, {target!r}, preset="mask-diff", seed=42, progress=False)
out.save(sys.argv[1])
"""


def cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    cli = ROOT / "target" / "release" / "reagent"
    assert cli.exists() and MODEL.exists(), "build the CLI and run scripts/fetch-models.sh first"
    tmp = Path(tempfile.mkdtemp())
    times = {"cli": [], "python": []}
    walls = {"cli": [], "python": []}
    scores = {}
    code = PY.format(threads=a.threads, model=str(MODEL), prompt=PROMPT, target=TARGET)
    for r in range(a.runs):
        for side in ("cli", "python") if r % 2 == 0 else ("python", "cli"):
            out = tmp / f"{side}.json"
            if side == "cli":
                cmd = [str(cli), "--threads", str(a.threads), "attribute", "-m", str(MODEL),
                       "-p", PROMPT, "-t", TARGET, "--preset", "mask-diff", "--seed", "42",
                       "--precision", "f32", "-q", "--json", str(out)]
            else:
                cmd = [sys.executable, "-c", code, str(out)]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times[side].append(time.perf_counter() - t0)
            res = json.loads(out.read_text())
            walls[side].append(res["wall_s"])
            scores[side] = [t["scores"] for t in res["targets"]]
    assert scores["cli"] == scores["python"], "the two sides' scores differ"
    print(f"CPU: {cpu()}; {a.threads} thread(s); {a.runs} runs per side, alternating")
    print("| side | process wall, median [min, max] | attribution wall_s, median [min, max] |")
    print("|---|---|---|")
    for side in ("cli", "python"):
        t, w = times[side], walls[side]
        print(f"| {side} | {statistics.median(t):.2f} s [{min(t):.2f}, {max(t):.2f}] | "
              f"{statistics.median(w):.3f} s [{min(w):.3f}, {max(w):.3f}] |")
    ratio = statistics.median(times["python"]) / statistics.median(times["cli"])
    wratio = statistics.median(walls["python"]) / statistics.median(walls["cli"])
    print(f"python / cli: process {ratio:.3f}, attribution {wratio:.3f}; scores identical")


if __name__ == "__main__":
    main()
