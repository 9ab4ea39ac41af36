#!/usr/bin/env python3
"""Time inseq 0.7.1's own ReAGent on SmolLM2-135M-Instruct, token by token.

The Python half of scripts/compare-speed.sh. The model is the GGUF in models/, which
transformers dequantizes to float32, like `reagent attribute` does. Attribution goes through
inseq's public API only:

    model = inseq.load_model(hf_model, "reagent", tokenizer=tok, keep_top_n=..,
                             stopping_condition_top_k=.., replacing_ratio=..,
                             max_probe_steps=.., num_probes=..)
    model.attribute(prompt, generated_texts=prompt + target)      # forced decoding

(inseq/attr/feat/perturbation_attribution.py, ReagentAttribution.__init__, also accepts
keep_ratio and invert_keep; they keep their defaults, None and False, here.)

Instrumentation (nothing in inseq's algorithm is changed; wrappers only observe):

  * `attribution_method.filtered_attribute_step` (one call per attributed target token) is
    wrapped with a timer: `wall_s` = the whole per-token step as inseq runs it (argument
    formatting + ReAGent + output conversion).
  * `Reagent.rationalizer` (AggregateRationalizer) is replaced by a proxy that times the call
    (`reagent_s`) and then reads, from its DeltaProbImportanceScoreEvaluator,
    `num_steps` (= `steps`: update steps run; each runs one update forward and one stopping-test
    forward on the whole batch of probes, stopped probes included) and `stop_mask.sum()`
    (= `converged_probes`: probes whose stopping test fired). It also keeps
    `mean_importance_score` (= `scores`, one per prefix token), the vector inseq returns
    (before its default aggregation, which would multiply it by sqrt(hidden) and renormalise).
  * A forward pre/post hook on the HF model counts forward calls (`forward_calls`, expected
    1 + 2 * steps), their batch rows and their time (`forward_s`).

Before each prompt one untimed forward of the probe batch over the prompt warms torch up
(--no-warmup skips it). `s_per_step` = wall_s / steps (the initial unperturbed forward is amortised into it, the same
definition as for `reagent attribute` JSON: targets[i].wall_s / targets[i].steps).

Notes on inseq's behaviour: when no probe converges (e.g. --max-steps below what the target
needs) inseq's mean is 0/0, so `scores` are NaN (printed as null); `reagent attribute` falls
back to the mean of all probes instead. Randomness comes from torch's global RNG, seeded once
per prompt with --seed before `attribute`. inseq computes full logits [probes, L, vocab] in
every forward (no last-position-only shortcut).

The POS sampler needs its cache pickle (NLTK data is not downloaded): inseq loads
$INSEQ_ARTIFACTS_CACHE/pos_tag_sampler_cache/<name>.pkl where <name> is the last path part of
`model.config.name_or_path` ("models" for models/<file>.gguf). Build it with
scripts/inseq_pos_cache.py; this script refuses to start without it.

Output: JSON lines on stdout, one {"event": "token", ...} per attributed token, one
{"event": "prompt", ...} per prompt (total wall time of `attribute`), then one
{"event": "summary", ...}. Logs go to stderr.

Usage (inseq installed --no-deps under /tmp/inseq_site):
  PYTHONPATH=/tmp/inseq_site /work/pyref/bin/python scripts/inseq_reagent.py \\
      --prompt "The capital of France is" --target " Paris" --max-steps 3
  PYTHONPATH=/tmp/inseq_site /work/pyref/bin/python scripts/inseq_reagent.py \\
      --longra data/longra.jsonl --ids capital-common-countries-0 --max-steps 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


# ---- helpers shared with inseq_gradients.py ---------------------------------------------


def add_common_args(ap: argparse.ArgumentParser) -> None:
    src = ap.add_argument_group("input (either --prompt/--target or --longra/--ids)")
    src.add_argument("--prompt", help="context text")
    src.add_argument("--target", help="forced continuation, attributed token by token")
    src.add_argument("--longra", type=Path, help="JSONL with id, prompt and target fields")
    src.add_argument("--ids", help="comma-separated row ids of --longra")
    ap.add_argument("--model-dir", type=Path, default=REPO / "models")
    ap.add_argument("--gguf-file", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--attn", default="eager", choices=("eager", "sdpa"),
                    help="attention implementation (default eager: what inseq.load_model uses "
                         "when it loads a model itself)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                    help="torch dtype of the model (bfloat16 runs oneDNN's bf16 kernels where "
                         "the CPU has AVX512-BF16 or AMX)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=42, help="torch.manual_seed before each prompt")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the untimed warm-up (see the module docstring)")
    ap.add_argument("--no-scores", action="store_true", help="omit scores/tokens from the output")


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.longra:
        if not args.ids or args.prompt or args.target:
            ap.error("--longra needs --ids and excludes --prompt/--target")
    elif args.prompt is None or args.target is None:
        ap.error("give --prompt and --target, or --longra and --ids")


def load_jobs(args: argparse.Namespace) -> list[dict]:
    if not args.longra:
        return [{"id": None, "prompt": args.prompt, "target": args.target}]
    rows = {}
    with open(args.longra, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                rows[row["id"]] = row
    jobs = []
    for i in args.ids.split(","):
        i = i.strip()
        if i not in rows:
            raise SystemExit(f"id {i!r} not in {args.longra}")
        jobs.append({"id": i, "prompt": rows[i]["prompt"], "target": rows[i]["target"]})
    return jobs


def emit(obj: dict) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def setup_torch(threads: int):
    """Set thread counts (env first, before torch creates its pools) and import torch."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF dequantization bar
    import torch

    torch.set_num_threads(threads)
    return torch


def load_hf(args: argparse.Namespace):
    """(tokenizer, model) from the GGUF, dequantized to --dtype, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(args.model_dir), gguf_file=args.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        str(args.model_dir), gguf_file=args.gguf_file,
        dtype=getattr(torch, getattr(args, "dtype", "float32")),
        attn_implementation=args.attn,
    ).eval()
    return tok, model


class ForwardCounter:
    """Forward pre/post hooks on the HF model: calls, batch rows and time spent in forward."""

    def __init__(self, model):
        self.calls, self.rows, self.s, self._t = 0, 0, 0.0, 0.0
        model.register_forward_pre_hook(self._pre, with_kwargs=True)
        model.register_forward_hook(self._post, with_kwargs=True)

    def _pre(self, _mod, a, kw):
        x = kw.get("input_ids")
        if x is None:
            x = kw.get("inputs_embeds")
        if x is None and a:
            x = a[0]
        self.calls += 1
        self.rows += int(x.shape[0]) if x is not None else 0
        self._t = time.perf_counter()

    def _post(self, _mod, _a, _kw, _out):
        self.s += time.perf_counter() - self._t

    def snapshot(self) -> tuple[int, int, float]:
        return self.calls, self.rows, self.s

    def since(self, snap: tuple[int, int, float]) -> dict:
        return {"forward_calls": self.calls - snap[0], "forward_rows": self.rows - snap[1],
                "forward_s": round(self.s - snap[2], 6)}


def time_steps(fa, fwd: ForwardCounter, on_step=None) -> list[dict]:
    """Wrap fa.filtered_attribute_step (one call per target token); returns the record list."""
    records: list[dict] = []
    orig = fa.filtered_attribute_step

    def timed_step(*a, **kw):
        snap = fwd.snapshot()
        t = time.perf_counter()
        out = orig(*a, **kw)
        rec = {"wall_s": time.perf_counter() - t, **fwd.since(snap)}
        if on_step is not None:
            rec.update(on_step(out))
        records.append(rec)
        return out

    fa.filtered_attribute_step = timed_step
    return records


def inseq_version() -> str | None:
    try:
        import importlib.metadata

        return importlib.metadata.version("inseq")
    except Exception:
        return None


# ---- ReAGent -----------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap)
    hp = ap.add_argument_group("ReAGent hyperparameters (defaults: inseq 0.7.1's)")
    hp.add_argument("--probes", type=int, default=16, help="num_probes")
    hp.add_argument("--max-steps", type=int, default=3000, help="max_probe_steps")
    hp.add_argument("--keep-top-n", type=int, default=5, help="keep_top_n")
    hp.add_argument("--stop-top-k", type=int, default=3, help="stopping_condition_top_k")
    hp.add_argument("--replacing-ratio", type=float, default=0.3, help="replacing_ratio")
    args = ap.parse_args()
    check_args(ap, args)

    torch = setup_torch(args.threads)
    import inseq
    from inseq.utils import INSEQ_ARTIFACTS_CACHE

    t0 = time.perf_counter()
    tok, hf_model = load_hf(args)
    pickle_path = (INSEQ_ARTIFACTS_CACHE / "pos_tag_sampler_cache"
                   / f"{hf_model.config.name_or_path.split('/')[-1]}.pkl")
    if not pickle_path.exists():
        raise SystemExit(f"missing POS cache {pickle_path}; build it with scripts/inseq_pos_cache.py "
                         "(NLTK data cannot be downloaded here)")
    hyper = dict(
        keep_top_n=args.keep_top_n,
        stopping_condition_top_k=args.stop_top_k,
        replacing_ratio=args.replacing_ratio,
        max_probe_steps=args.max_steps,
        num_probes=args.probes,
    )
    model = inseq.load_model(hf_model, "reagent", tokenizer=tok, **hyper)
    load_s = time.perf_counter() - t0
    log(f"loaded {args.gguf_file} + inseq {inseq_version()} reagent {hyper} in {load_s:.1f} s "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads, attn {args.attn}, {args.dtype}, "
        f"POS cache {pickle_path})")

    fa = model.attribution_method            # inseq ReagentAttribution
    reagent = fa.method                      # inseq Reagent
    rationalizer = reagent.rationalizer      # AggregateRationalizer
    evaluator = rationalizer.importance_score_evaluator  # DeltaProbImportanceScoreEvaluator

    class TimedRationalizer:
        """Transparent proxy for AggregateRationalizer recording time, steps, convergence."""

        def __init__(self, inner):
            self.inner = inner
            self.last: dict = {}

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, input_ids, target_id, *rest):
            t = time.perf_counter()
            out = self.inner(input_ids, target_id, *rest)
            self.last = {
                "reagent_s": time.perf_counter() - t,
                "steps": int(evaluator.num_steps),
                "converged_probes": int(evaluator.stop_mask.sum()),
                "prefix_ids": input_ids[0].tolist(),
                "target_id": int(target_id.reshape(-1)[0]),
                "scores": [finite_or_none(float(x)) for x in self.inner.mean_importance_score.tolist()],
            }
            return out

    timed = TimedRationalizer(rationalizer)
    reagent.rationalizer = timed
    fwd = ForwardCounter(hf_model)
    records = time_steps(fa, fwd, on_step=lambda _out: dict(timed.last))

    n_tokens, tot_wall, tot_steps, tot_attr = 0, 0.0, 0, 0.0
    for job in load_jobs(args):
        prompt, target = job["prompt"], job["target"]
        if not args.no_warmup:  # untimed: one forward of the probe batch over the prompt
            ids = tok(prompt, return_tensors="pt")["input_ids"].repeat(args.probes, 1)
            with torch.no_grad():
                hf_model(ids)
        records.clear()
        torch.manual_seed(args.seed)
        t = time.perf_counter()
        model.attribute(prompt, generated_texts=prompt + target, show_progress=False)
        attr_s = time.perf_counter() - t
        for i, rec in enumerate(records):
            steps = rec["steps"]
            line = {
                "event": "token", "impl": "inseq", "method": "reagent", "id": job["id"],
                "index": i, "position": len(rec["prefix_ids"]), "target_id": rec["target_id"],
                "target_text": tok.decode([rec["target_id"]]),
                "wall_s": round(rec["wall_s"], 6), "reagent_s": round(rec["reagent_s"], 6),
                "steps": steps, "converged_probes": rec["converged_probes"], "probes": args.probes,
                "s_per_step": round(rec["wall_s"] / steps, 6) if steps else None,
                "forward_calls": rec["forward_calls"], "forward_rows": rec["forward_rows"],
                "forward_s": rec["forward_s"],
            }
            if not args.no_scores:
                line["tokens"] = [tok.decode([x]) for x in rec["prefix_ids"]]
                line["scores"] = rec["scores"]
            emit(line)
            n_tokens += 1
            tot_wall += rec["wall_s"]
            tot_steps += steps
        tot_attr += attr_s
        emit({"event": "prompt", "impl": "inseq", "method": "reagent", "id": job["id"],
              "n_tokens": len(records),
              "prompt_tokens": len(records[0]["prefix_ids"]) if records else None,
              "attribute_s": round(attr_s, 6)})
        log(f"{job['id'] or 'prompt'}: {len(records)} tokens in {attr_s:.2f} s, steps "
            f"{[r['steps'] for r in records]}, converged "
            f"{[r['converged_probes'] for r in records]}/{args.probes}")

    emit({
        "event": "summary", "impl": "inseq", "method": "reagent", "inseq": inseq_version(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "attn": args.attn,
        "hyper": hyper, "seed": args.seed, "load_s": round(load_s, 3),
        "n_tokens": n_tokens, "steps": tot_steps, "wall_s": round(tot_wall, 6),
        "attribute_s": round(tot_attr, 6),
        "s_per_token": round(tot_wall / n_tokens, 6) if n_tokens else None,
        "s_per_step": round(tot_wall / tot_steps, 6) if tot_steps else None,
    })


if __name__ == "__main__":
    main()
