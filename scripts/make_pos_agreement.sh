#!/usr/bin/env bash
# Tag the word-like SmolLM2 tokens with an independent tagger, wink-pos-tagger (npm, Penn
# Treebank tags, its own lexicon and rules), one token at a time as the POS sampler tags them,
# and write fixtures/pos/wink_tags.json. tests/pos_agreement.rs compares our tags with these.
# (NLTK's averaged-perceptron data is not on a package registry, so NLTK cannot be used here.)
# Needs node and npm, and the SmolLM2 GGUF (scripts/fetch-models.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cargo run --release -q --example dump_pos_tokens -- models/SmolLM2-135M-Instruct.Q4_1.gguf "$tmp/tokens.json"
(cd "$tmp" && npm init -y >/dev/null && npm install --silent wink-pos-tagger@2.2.2 >/dev/null)
NODE_PATH="$tmp/node_modules" node - "$tmp/tokens.json" fixtures/pos/wink_tags.json <<'JS'
const fs = require("fs");
const [src, dst] = process.argv.slice(2);
const doc = JSON.parse(fs.readFileSync(src, "utf8"));
const tagger = require("wink-pos-tagger")();
const tags = doc.texts.map((t) => {
  const out = tagger.tagSentence(t.trim());
  return out.length === 1 ? out[0].pos : null;
});
fs.writeFileSync(dst, JSON.stringify({
  tagger: "wink-pos-tagger@2.2.2",
  rule: "each token's text, leading space removed, tagged alone",
  tokenizer: "SmolLM2-135M-Instruct.Q4_1.gguf",
  ids: doc.ids, texts: doc.texts, tags,
}) + "\n");
console.error(`wrote ${tags.length} tags to ${dst}`);
JS
