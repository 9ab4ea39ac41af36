#!/usr/bin/env python3
"""transformers' forward on the shape of benches/forward.rs, for a side-by-side comparison.

SmolLM2-135M-Instruct dequantized from the GGUF to float32, batch 16 x 48 random ids, logits
at the last position only (`logits_to_keep=1`), then log_softmax. Prints the median in ms.

    [THREADS=2] [DTYPE=float32|bfloat16] [ATTN=eager|sdpa] python scripts/bench_forward.py [iterations]
"""
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

iters = int(sys.argv[1]) if len(sys.argv) > 1 else 10
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
dtype = getattr(torch, os.environ.get("DTYPE", "float32"))
attn = os.environ.get("ATTN", "sdpa")
models = Path(__file__).resolve().parent.parent / "models"
model = AutoModelForCausalLM.from_pretrained(
    str(models), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=dtype,
    attn_implementation=attn,
).eval()
g = torch.Generator().manual_seed(0)
ids = torch.randint(17, model.config.vocab_size, (16, 48), generator=g)
with torch.inference_mode():
    model(ids, logits_to_keep=1)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        lp = torch.log_softmax(model(ids, logits_to_keep=1).logits[:, -1, :], -1)
        float(lp.sum())
        times.append((time.perf_counter() - t) * 1e3)
print(f"torch {torch.__version__} forward 16x48 ({dtype}, {attn}, threads {torch.get_num_threads()}): "
      f"median {statistics.median(times):.1f} ms, min {min(times):.1f} ms over {iters} runs")
