#!/usr/bin/env python3
"""Write fixtures/real/chat.json: chat templates rendered and tokenized by transformers itself.

For each chat template, the text transformers' `render_jinja_template` (what
`apply_chat_template` renders before tokenizing) gives for one user turn with the assistant's
turn opened, on a few prompts, and the token ids `apply_chat_template(..., tokenize=True)` gives
for the same conversation, with transformers' own tokenizer loaded from the GGUF file
(`AutoTokenizer.from_pretrained(models/, gguf_file=...)`). `tests/chat.rs` checks that reagent
renders the same text and tokenizes it to the same ids.

Templates: SmolLM2's comes from its GGUF (key `tokenizer.chat_template`). Gemma-3-270m's GGUF
carries none, so Google's Gemma 3 instruct template is read from fixtures/chat/gemma3.jinja (see
fixtures/chat/README.md for where it comes from) and passed as `chat_template=`. BOS / EOS token
texts are those of the GGUF's `tokenizer.ggml.bos_token_id` / `eos_token_id`.

    pip install "transformers==5.24.0" "torch==2.15.0" gguf jinja2 numpy
    python scripts/make_chat_fixtures.py      # needs scripts/fetch-models.sh first

Needs torch: transformers loads a GGUF's tokenizer only with torch installed.
Reference versions: transformers 5.24.0, torch 2.15.0, gguf 0.19.0.
"""

import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from gguf import GGUFReader  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from transformers.utils.chat_template_utils import render_jinja_template  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
}
# Templates for GGUF files that carry none (path relative to the repository root).
TEMPLATE_FILES = {
    "gemma3": "fixtures/chat/gemma3.jinja",
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


def chat_ids(tok, messages, template: str | None) -> list[int]:
    kwargs = {} if template is None else {"chat_template": template}
    out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **kwargs)
    # transformers 5 returns a BatchEncoding; older versions a plain list.
    ids = out["input_ids"] if not isinstance(out, list) else out
    if ids and isinstance(ids[0], list):
        (ids,) = ids
    assert all(isinstance(i, int) for i in ids), ids
    return [int(i) for i in ids]


def main() -> None:
    out = {
        "transformers": transformers.__version__,
        "torch": torch.__version__.split("+")[0],
        "tokenizer": "transformers AutoTokenizer from the GGUF file",
        "models": {},
    }
    for name, file in MODELS.items():
        reader = GGUFReader(ROOT / "models" / file)
        entry = {"file": file}
        template = field(reader, "tokenizer.chat_template")
        from_gguf = template is not None
        if template is None and name in TEMPLATE_FILES:
            entry["chat_template_file"] = TEMPLATE_FILES[name]
            template = (ROOT / TEMPLATE_FILES[name]).read_text()
        if template is None:
            out["models"][name] = {**entry, "chat_template": None}
            continue
        tokens = reader.fields["tokenizer.ggml.tokens"]
        text = lambda i: bytes(tokens.parts[tokens.data[i]]).decode()  # noqa: E731
        bos = field(reader, "tokenizer.ggml.bos_token_id")
        eos = field(reader, "tokenizer.ggml.eos_token_id")
        bos_token = text(bos) if bos is not None else ""
        eos_token = text(eos) if eos is not None else ""
        tok = AutoTokenizer.from_pretrained(str(ROOT / "models"), gguf_file=file)
        if from_gguf:
            assert tok.chat_template == template, f"{name}: transformers read another template"
        cases = []
        for p in PROMPTS:
            messages = [{"role": "user", "content": p}]
            rendered, _ = render_jinja_template(
                conversations=[messages],
                chat_template=template,
                add_generation_prompt=True,
                bos_token=bos_token,
                eos_token=eos_token,
            )
            # The template transformers itself uses: the GGUF's own (None) or the given file's.
            ids = chat_ids(tok, messages, None if from_gguf else template)
            cases.append({"content": p, "text": rendered[0], "ids": ids})
        out["models"][name] = {
            **entry,
            "chat_template": template,
            "bos_token": bos_token,
            "eos_token": eos_token,
            "cases": cases,
        }
        c = cases[0]
        print(f"{name}: {c['content']!r} -> {c['ids']}")
        print(f"  {tok.convert_ids_to_tokens(c['ids'])}")
        print(f"  decoded: {tok.decode(c['ids'])!r}")
    path = ROOT / "fixtures" / "real" / "chat.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
