#!/usr/bin/env python3
"""Write fixtures/real/chat.json: chat templates rendered by transformers' own renderer.

For each chat template (read from the real GGUF files, key `tokenizer.chat_template`; a file
without one is listed as such), the text transformers' `render_jinja_template` (what
`apply_chat_template` renders before tokenizing) gives for one user turn with the assistant's
turn opened, on a few prompts. `tests/chat.rs` checks that reagent renders the same text.

    pip install "transformers==5.24.0" gguf jinja2 numpy
    python scripts/make_chat_fixtures.py      # needs scripts/fetch-models.sh first

Needs no torch: the tokenizers' ids are not compared here (transformers loads a GGUF's tokenizer
only with torch); reagent's tokenizers are checked against transformers on their own in
fixtures/real/tokenizer_*.json.
"""

import json
from pathlib import Path

import transformers
from gguf import GGUFReader
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
}
PROMPTS = [
    "The capital of France is",
    "Why is the sky blue?",
    "  Leading and trailing spaces  ",
    "Two lines:\nthe second one.",
    "Unicode: café, 東京, emoji 🙂",
]


def field(reader: GGUFReader, key: str):
    f = reader.fields.get(key)
    if f is None:
        return None
    value = f.parts[f.data[0]]
    return bytes(value).decode() if key.endswith("template") else int(value[0])


def main() -> None:
    out = {"transformers": transformers.__version__, "models": {}}
    for name, file in MODELS.items():
        reader = GGUFReader(ROOT / "models" / file)
        template = field(reader, "tokenizer.chat_template")
        if template is None:
            out["models"][name] = {"file": file, "chat_template": None}
            continue
        tokens = reader.fields["tokenizer.ggml.tokens"]
        text = lambda i: bytes(tokens.parts[tokens.data[i]]).decode()  # noqa: E731
        bos = field(reader, "tokenizer.ggml.bos_token_id")
        eos = field(reader, "tokenizer.ggml.eos_token_id")
        bos_token = text(bos) if bos is not None else ""
        eos_token = text(eos) if eos is not None else ""
        cases = []
        for p in PROMPTS:
            rendered, _ = render_jinja_template(
                conversations=[[{"role": "user", "content": p}]],
                chat_template=template,
                add_generation_prompt=True,
                bos_token=bos_token,
                eos_token=eos_token,
            )
            cases.append({"content": p, "text": rendered[0]})
        out["models"][name] = {
            "file": file,
            "chat_template": template,
            "bos_token": bos_token,
            "eos_token": eos_token,
            "cases": cases,
        }
    path = ROOT / "fixtures" / "real" / "chat.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
