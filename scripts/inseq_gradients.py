#!/usr/bin/env python3
"""Time inseq 0.7.1's integrated gradients and input x gradient on SmolLM2-135M-Instruct.

Companion of scripts/inseq_reagent.py (same inputs, model loading, output format). Each method
goes through inseq's public API with its defaults:

    model = inseq.load_model(hf_model, "integrated_gradients", tokenizer=tok)
    model.attribute(prompt, generated_texts=prompt + target, n_steps=50)  # Captum's
        # Gauss-Legendre rule, inseq's UNK-token baseline, internal_batch_size None (all
        # n_steps rows in one forward/backward) unless --internal-batch-size is given
    model = inseq.load_model(hf_model, "input_x_gradient", tokenizer=tok)
    model.attribute(prompt, generated_texts=prompt + target)

The attributed function is inseq's default, the target token's probability. Timing:
`wall_s` = one call of `attribution_method.filtered_attribute_step` (one per target token;
argument formatting, Captum forward + backward, output conversion); a forward hook on the HF
model counts forward calls and rows (`forward_calls`, `forward_rows`; IG: n_steps rows per
token). Before the first prompt of each method, its first target token is attributed once,
untimed (warm-up; --no-warmup skips it). `scores` = inseq's default reduction of the
[L, hidden] attributions: L2 norm over the hidden dimension divided by its sum over the prefix.

Output: JSON lines on stdout ({"event": "token"|"prompt"|"summary", "method": ...}).

Usage:
  PYTHONPATH=/tmp/inseq_site /work/pyref/bin/python scripts/inseq_gradients.py \\
      --longra data/longra.jsonl --ids capital-common-countries-0 \\
      --methods integrated_gradients,input_x_gradient
"""

from __future__ import annotations

import argparse
import time

from inseq_reagent import (
    ForwardCounter,
    add_common_args,
    check_args,
    emit,
    finite_or_none,
    inseq_version,
    load_hf,
    load_jobs,
    log,
    setup_torch,
    time_steps,
)

METHODS = ("integrated_gradients", "input_x_gradient")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap)
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated inseq method names (default: {','.join(METHODS)})")
    ap.add_argument("--n-steps", type=int, default=50, help="integrated gradients steps")
    ap.add_argument("--internal-batch-size", type=int, default=None,
                    help="integrated gradients rows per forward/backward (default: all n_steps)")
    args = ap.parse_args()
    check_args(ap, args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    torch = setup_torch(args.threads)
    import inseq

    t0 = time.perf_counter()
    tok, hf_model = load_hf(args)
    load_s = time.perf_counter() - t0
    log(f"loaded {args.gguf_file} in {load_s:.1f} s (inseq {inseq_version()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, attn {args.attn})")
    fwd = ForwardCounter(hf_model)
    jobs = load_jobs(args)

    def reduce_scores(step_out) -> dict:
        attr = step_out.source_attributions
        if attr is None:
            attr = step_out.target_attributions
        attr = attr.detach().float()[0]  # [L, H] (batch of one)
        norm = attr.norm(dim=-1)
        return {"scores": [finite_or_none(float(x)) for x in (norm / norm.sum()).tolist()]}

    for method in methods:
        model = inseq.load_model(hf_model, method, tokenizer=tok)
        kwargs = {}
        if method == "integrated_gradients":
            kwargs["n_steps"] = args.n_steps
            if args.internal_batch_size:
                kwargs["internal_batch_size"] = args.internal_batch_size
        records = time_steps(model.attribution_method, fwd, on_step=reduce_scores)
        n_tokens, tot_wall, tot_attr = 0, 0.0, 0.0
        for job in jobs:
            prompt, target = job["prompt"], job["target"]
            prompt_ids = tok(prompt)["input_ids"]
            full_ids = tok(prompt + target)["input_ids"]
            if not args.no_warmup and job is jobs[0]:
                # untimed: the first prompt's first target token once per method (the first
                # forward + backward of a shape pays one-time allocation/autograd set-up costs)
                first = tok.decode(full_ids[len(prompt_ids):len(prompt_ids) + 1])
                model.attribute(prompt, generated_texts=prompt + first, show_progress=False,
                                **kwargs)
            records.clear()
            torch.manual_seed(args.seed)
            t = time.perf_counter()
            model.attribute(prompt, generated_texts=prompt + target, show_progress=False, **kwargs)
            attr_s = time.perf_counter() - t
            for i, rec in enumerate(records):
                pos = len(prompt_ids) + i
                line = {
                    "event": "token", "impl": "inseq", "method": method, "id": job["id"],
                    "index": i, "position": pos,
                    "target_id": full_ids[pos] if pos < len(full_ids) else None,
                    "target_text": tok.decode([full_ids[pos]]) if pos < len(full_ids) else None,
                    "wall_s": round(rec["wall_s"], 6), "forward_calls": rec["forward_calls"],
                    "forward_rows": rec["forward_rows"], "forward_s": rec["forward_s"],
                }
                if not args.no_scores:
                    line["tokens"] = [tok.decode([x]) for x in full_ids[:pos]]
                    line["scores"] = rec["scores"]
                emit(line)
                n_tokens += 1
                tot_wall += rec["wall_s"]
            tot_attr += attr_s
            emit({"event": "prompt", "impl": "inseq", "method": method, "id": job["id"],
                  "n_tokens": len(records), "prompt_tokens": len(prompt_ids),
                  "attribute_s": round(attr_s, 6)})
            log(f"{method} {job['id'] or 'prompt'}: {len(records)} tokens in {attr_s:.2f} s")
        emit({
            "event": "summary", "impl": "inseq", "method": method, "inseq": inseq_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "attn": args.attn,
            "args": kwargs, "load_s": round(load_s, 3), "n_tokens": n_tokens,
            "wall_s": round(tot_wall, 6), "attribute_s": round(tot_attr, 6),
            "s_per_token": round(tot_wall / n_tokens, 6) if n_tokens else None,
        })


if __name__ == "__main__":
    main()
