//! One tokenizer type, from `tokenizer.json` or from GGUF metadata, with character offsets.
//!
//! GGUF files carry their vocabulary as `tokenizer.ggml.*` metadata: byte-level BPE ("gpt2",
//! Llama 3 / SmolLM2 style) or a SentencePiece vocabulary with scores ("llama", Gemma / Llama 2
//! style). We build the same `tokenizers` pipeline that transformers' GGUF converters build
//! (`transformers/integrations/ggml.py`), so ids match transformers for the same text; we refuse
//! to guess when a key is absent.
//!
//! The Rust `tokenizers` crate reports byte offsets; Python reports character offsets. We convert
//! deliberately (STACK-NOTES pitfall 5): a byte-level token may end inside a multi-byte
//! character, so starts round down and ends round up to character boundaries.

use crate::error::WithPath;
use std::collections::HashSet;
use std::path::Path;

use serde_json::{json, Value};

use crate::format::gguf::GgufFile;
use crate::{Error, Result};

/// Token ids with character offsets into the encoded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    pub ids: Vec<u32>,
    /// `[start, end)` in characters (not bytes); `(0, 0)` for added special tokens.
    pub offsets: Vec<(usize, usize)>,
}

/// A tokenizer with the model's special tokens.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: Vec<u32>,
    max_id: u32,
    unk: Option<u32>,
    /// The model's chat template (Jinja), with the BOS and EOS texts it may use.
    chat: Option<ChatTemplate>,
    /// The BOS and EOS texts the model declares, for a chat template given later.
    bos_eos: (String, String),
}

/// A chat template and the special-token texts templates refer to.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatTemplate {
    pub template: String,
    pub bos_token: String,
    pub eos_token: String,
}

/// Parse a `tokenizer.json` document. The syntax is checked first, and the tokenizers crate
/// then reads the parsed value: on some malformed documents it panics while reading the text
/// (its decoder helper unwraps a stream error), which a parsed value cannot trigger; any other
/// panic of its is caught and reported as an error.
fn parse_tokenizer(json: &str) -> std::result::Result<tokenizers::Tokenizer, String> {
    let value: Value = serde_json::from_str(json).map_err(|e| format!("invalid JSON: {e}"))?;
    std::panic::catch_unwind(move || serde_json::from_value::<tokenizers::Tokenizer>(value))
        .map_err(|_| "the tokenizers crate could not read this tokenizer".to_string())?
        .map_err(|e| e.to_string())
}

impl Tokenizer {
    /// Load a `tokenizer.json` (and the UNK token from a `tokenizer_config.json` beside it).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_path(path)?;
        let inner = parse_tokenizer(&text)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let config = path.with_file_name("tokenizer_config.json");
        let from_config = std::fs::read_to_string(&config)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| match &v["unk_token"] {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
                _ => None,
            });
        let from_model = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["model"]["unk_token"].as_str().map(String::from));
        let unk = from_config.or(from_model);
        let mut t = Self::wrap(inner).with_unk_token(unk.as_deref());
        let (chat, bos_eos) = chat_template_beside(path);
        t.chat = chat;
        t.bos_eos = bos_eos;
        Ok(t)
    }

    /// Parse a `tokenizer.json` document.
    pub fn from_json(json: &str) -> Result<Self> {
        let inner = parse_tokenizer(json).map_err(Error::tokenizer)?;
        Ok(Self::wrap(inner))
    }

    fn wrap(inner: tokenizers::Tokenizer) -> Self {
        let special: Vec<u32> = {
            let mut s: Vec<u32> = inner
                .get_added_tokens_decoder()
                .iter()
                .filter(|(_, t)| t.special)
                .map(|(&id, _)| id)
                .collect();
            s.sort_unstable();
            s
        };
        let max_id = inner.get_vocab(true).values().copied().max().unwrap_or(0);
        Tokenizer {
            inner,
            special,
            max_id,
            unk: None,
            chat: None,
            bos_eos: (String::new(), String::new()),
        }
    }

    /// The model's chat template, when its files carry one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
    }

    /// Use this chat template (Jinja source), e.g. for a model whose files carry none; the BOS
    /// and EOS texts stay those the tokenizer declares.
    pub fn with_chat_template(mut self, template: String) -> Self {
        self.chat = Some(ChatTemplate {
            template,
            bos_token: self.bos_eos.0.clone(),
            eos_token: self.bos_eos.1.clone(),
        });
        self
    }

    /// Wrap `user` as one user turn in the chat template, with the assistant's turn opened
    /// (`add_generation_prompt`), rendered as transformers' `apply_chat_template` renders it
    /// (Jinja with `trim_blocks` and `lstrip_blocks`, `raise_exception`, Python's string
    /// methods). Returns the text and the character span `[start, end)` of the user's content
    /// in it (as the template wrote it: a `| trim` applies).
    pub fn apply_chat_template(&self, user: &str) -> Result<(String, (usize, usize))> {
        let Some(chat) = &self.chat else {
            return Err(Error::input(
                "this model's files carry no chat template (tokenizer.chat_template in a GGUF file, \
                 chat_template in tokenizer_config.json or chat_template.jinja); give one (chat_template)",
            ));
        };
        let bad = |e: minijinja::Error| {
            Error::input(format!(
                "chat template: {}",
                e.to_string().lines().next().unwrap_or("")
            ))
        };
        let mut env = minijinja::Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(bad)?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let template = env.template_from_str(&chat.template).map_err(bad)?;
        let render = |content: &str| -> Result<String> {
            template
                .render(minijinja::context! {
                    messages => vec![minijinja::context! { role => "user", content => content }],
                    add_generation_prompt => true,
                    bos_token => chat.bos_token.clone(),
                    eos_token => chat.eos_token.clone(),
                })
                .map_err(bad)
        };
        let text = render(user)?;
        // The content's place: render once with a marker for it; the text around the marker
        // is the template's.
        const MARK: &str = "\u{E000}reagent-content\u{E001}";
        let marked = render(MARK)?;
        let at = marked.find(MARK).ok_or_else(|| {
            Error::input("chat template: the user's content does not appear in it")
        })?;
        let (before, after) = (&marked[..at], &marked[at + MARK.len()..]);
        if !text.starts_with(before)
            || !text.ends_with(after)
            || text.len() < before.len() + after.len()
        {
            return Err(Error::input(
                "chat template: the text around the user's content depends on the content",
            ));
        }
        let start = before.chars().count();
        let end = text.chars().count() - after.chars().count();
        Ok((text, (start, end)))
    }

    /// The UNK token id, when the tokenizer declares one (GGUF `unknown_token_id`,
    /// `tokenizer_config.json`'s `unk_token`, or the model's `unk_token`).
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    /// Set the UNK token by its text (ignored when the vocabulary lacks it).
    pub fn with_unk_token(mut self, token: Option<&str>) -> Self {
        if let Some(id) = token.and_then(|t| self.inner.token_to_id(t)) {
            self.unk = Some(id);
        }
        self
    }

    /// Build the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let mut t = Self::wrap(gguf_tokenizer(f)?);
        t.unk = f
            .usize_opt("tokenizer.ggml.unknown_token_id")
            .map(|x| x as u32)
            .filter(|&x| x <= t.max_id);
        let text = |key: &str| {
            f.usize_opt(key)
                .and_then(|id| t.inner.id_to_token(id as u32))
                .unwrap_or_default()
        };
        t.bos_eos = (
            text("tokenizer.ggml.bos_token_id"),
            text("tokenizer.ggml.eos_token_id"),
        );
        if let Ok(template) = f.string("tokenizer.chat_template") {
            t.chat = Some(ChatTemplate {
                template,
                bos_token: t.bos_eos.0.clone(),
                eos_token: t.bos_eos.1.clone(),
            });
        }
        Ok(t)
    }

    /// Encode `text`; `add_special` adds what the model expects around it (e.g. BOS).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Encoding> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(Error::tokenizer)?;
        let special: HashSet<u32> = self.special.iter().copied().collect();
        let map = CharMap::new(text);
        let offsets = enc
            .get_ids()
            .iter()
            .zip(enc.get_offsets())
            .map(|(id, &(s, e))| {
                if special.contains(id) && s == e {
                    (0, 0)
                } else {
                    (map.start(s), map.end(e))
                }
            })
            .collect();
        Ok(Encoding {
            ids: enc.get_ids().to_vec(),
            offsets,
        })
    }

    /// Decode ids to text (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(Error::tokenizer)
    }

    /// The surface text of one token, as `decode([id])` gives it.
    pub fn token_text(&self, id: u32) -> String {
        self.inner.decode(&[id], false).unwrap_or_default()
    }

    /// The raw vocabulary entry of an id (e.g. `Ġthe`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Ids of the special tokens (BOS, EOS, PAD, control tokens, ...), sorted.
    pub fn special_ids(&self) -> &[u32] {
        &self.special
    }

    /// The largest id the tokenizer can produce.
    pub fn max_id(&self) -> u32 {
        self.max_id
    }

    /// The number of ids, added tokens included.
    pub fn len(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The underlying `tokenizers` object.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Byte offset → character offset, for one text.
struct CharMap {
    /// `starts[i]` = byte offset of character `i`; one extra entry for the end.
    starts: Vec<usize>,
}

impl CharMap {
    fn new(text: &str) -> Self {
        let mut starts: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        starts.push(text.len());
        CharMap { starts }
    }
    /// The character containing byte `b`.
    fn start(&self, b: usize) -> usize {
        match self.starts.binary_search(&b) {
            Ok(i) => i,
            Err(i) => i - 1,
        }
    }
    /// The first character boundary at or after byte `b`.
    fn end(&self, b: usize) -> usize {
        match self.starts.binary_search(&b) {
            Ok(i) | Err(i) => i,
        }
    }
}

// GGUF token types (llama.cpp `llama_token_type`).
const TYPE_CONTROL: u64 = 3;
const TYPE_USER_DEFINED: u64 = 4;

fn component<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(Error::tokenizer)
}

/// The tokenizer transformers 5.x builds for this file (`integrations/gguf/gguf_tokenizer_mapping.py`):
/// - "gpt2": byte-level BPE with the file's merges (`GPT2Tokenizer`), plus the split regex its
///   `tokenizer.ggml.pre` names, for the names transformers maps (others keep GPT-2's);
/// - "llama" (Gemma): BPE with byte fallback whose merges are rebuilt from the vocabulary in file
///   order (`GemmaTokenizer` via `generate_merges`), spaces written as "▁", BOS prepended.
///
/// Control tokens become special added tokens; user-defined ones present in the vocabulary become
/// plain added tokens, so both are matched whole in text.
fn gguf_tokenizer(f: &GgufFile) -> Result<tokenizers::Tokenizer> {
    use tokenizers::models::bpe::BPE;
    use tokenizers::{
        AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    };

    let kind = f.string("tokenizer.ggml.model")?;
    let raw_tokens = f.strings("tokenizer.ggml.tokens")?;
    let types: Vec<u64> = match f.meta_opt("tokenizer.ggml.token_type") {
        Some(_) => f
            .numbers("tokenizer.ggml.token_type")?
            .into_iter()
            .map(|x| x as u64)
            .collect(),
        None => vec![1; raw_tokens.len()],
    };
    if types.len() != raw_tokens.len() {
        return Err(Error::ModelSource(format!(
            "{}: {} tokens but {} token types",
            f.path().display(),
            raw_tokens.len(),
            types.len()
        )));
    }
    let id = |k: &str| f.usize_opt(k).map(|x| x as u32);
    let bos = id("tokenizer.ggml.bos_token_id");

    let (tokens, merges, bpe_opts, json) = match kind.as_str() {
        "gpt2" => {
            let alphabet = byte_alphabet();
            let tokens: Vec<String> = raw_tokens
                .iter()
                .map(|t| {
                    if t.chars().all(|c| alphabet.contains(&c)) {
                        t.clone()
                    } else {
                        byte_spell(t)
                    }
                })
                .collect();
            let merges = f
                .strings("tokenizer.ggml.merges")?
                .into_iter()
                .map(|m| match m.split_once(' ') {
                    Some((a, b)) => Ok((a.to_string(), b.to_string())),
                    None => Err(Error::ModelSource(format!("malformed GGUF merge `{m}`"))),
                })
                .collect::<Result<Vec<_>>>()?;
            let add_bos = f.bool_opt("tokenizer.ggml.add_bos_token").unwrap_or(false);
            let pre = f
                .meta_opt("tokenizer.ggml.pre")
                .and_then(|v| v.to_string().ok().cloned())
                .unwrap_or_default();
            let pre_tokenizer = match split_regex(&pre) {
                Some(re) => json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
                ]}),
                None => json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}),
            };
            let json = json!({
                "normalizer": null,
                "pre_tokenizer": pre_tokenizer,
                "post_processor": bos_template(add_bos.then_some(bos).flatten(), &tokens)?,
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            });
            (tokens, merges, (None, false, false, Some(String::new())), json)
        }
        "llama" => {
            if f.string("general.architecture")?.starts_with("gemma") {
                // Gemma stores runs of spaces as real spaces; GemmaTokenizer spells them "▁".
                let tokens: Vec<String> = raw_tokens
                    .iter()
                    .map(|t| {
                        if t.contains(' ') && t.trim().is_empty() {
                            "\u{2581}".repeat(t.chars().count())
                        } else {
                            t.clone()
                        }
                    })
                    .collect();
                let merges = merges_from_vocab(&tokens);
                let add_bos = f.bool_opt("tokenizer.ggml.add_bos_token").unwrap_or(true);
                let unk = id("tokenizer.ggml.unknown_token_id")
                    .and_then(|u| tokens.get(u as usize).cloned())
                    .unwrap_or_else(|| "<unk>".into());
                let json = json!({
                    "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"},
                    "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false},
                    "post_processor": bos_template(add_bos.then_some(bos).flatten(), &tokens)?,
                    "decoder": {"type": "Sequence", "decoders": [
                        {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                        {"type": "ByteFallback"},
                        {"type": "Fuse"}
                    ]},
                });
                (tokens, merges, (Some(unk), true, true, None), json)
            } else {
                return Err(Error::Unsupported(format!(
                    "{}: SentencePiece GGUF vocabularies are supported for Gemma only",
                    f.path().display()
                )));
            }
        }
        other => {
            return Err(Error::Unsupported(format!(
                "{}: GGUF tokenizer model `{other}` is not supported (supported: gpt2, llama for Gemma)",
                f.path().display()
            )))
        }
    };

    let mut vocab: tokenizers::models::bpe::Vocab = Default::default();
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), i as u32);
    }
    let (unk, fuse_unk, byte_fallback, prefix) = bpe_opts;
    let mut b = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .fuse_unk(fuse_unk)
        .byte_fallback(byte_fallback);
    if let Some(u) = unk {
        b = b.unk_token(u);
    }
    if let Some(p) = prefix {
        b = b.continuing_subword_prefix(p.clone()).end_of_word_suffix(p);
    }
    let bpe = b.build().map_err(Error::tokenizer)?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    if !json["normalizer"].is_null() {
        tok.with_normalizer(Some(component::<NormalizerWrapper>(
            json["normalizer"].clone(),
        )?))
        .map_err(Error::tokenizer)?;
    }
    tok.with_pre_tokenizer(Some(component::<PreTokenizerWrapper>(
        json["pre_tokenizer"].clone(),
    )?));
    if !json["post_processor"].is_null() {
        tok.with_post_processor(Some(component::<PostProcessorWrapper>(
            json["post_processor"].clone(),
        )?));
    }
    tok.with_decoder(Some(component::<DecoderWrapper>(json["decoder"].clone())?));

    let byte_level = kind == "gpt2";
    let alphabet = byte_alphabet();
    let control: Vec<AddedToken> = raw_tokens
        .iter()
        .zip(&types)
        .filter(|(t, &ty)| {
            ty == TYPE_CONTROL && (!byte_level || t.chars().all(|c| alphabet.contains(&c)))
        })
        .map(|(t, _)| AddedToken::from(t.clone(), true).normalized(false))
        .collect();
    tok.add_special_tokens(control).map_err(Error::tokenizer)?;
    let in_vocab: HashSet<&str> = tokens.iter().map(String::as_str).collect();
    let user: Vec<AddedToken> = raw_tokens
        .iter()
        .zip(&types)
        .filter(|(t, &ty)| ty == TYPE_USER_DEFINED && in_vocab.contains(t.as_str()))
        .map(|(t, _)| AddedToken::from(t.clone(), false).normalized(false))
        .collect();
    tok.add_tokens(user).map_err(Error::tokenizer)?;
    Ok(tok)
}

/// transformers' `generate_merges(vocab, vocab_scores)` with `score = -index`: every split of a
/// token into two vocabulary pieces is a merge; splits of one token are ordered by the pieces'
/// ids, and all merges by descending score (earlier tokens first), then by the pieces' lengths.
fn merges_from_vocab(tokens: &[String]) -> Vec<(String, String)> {
    use std::collections::HashMap;
    // dict semantics: a repeated token keeps its first position in iteration order and its last
    // index as value.
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut order: Vec<&str> = Vec::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        if index.insert(t.as_str(), i).is_none() {
            order.push(t.as_str());
        }
    }
    // (score, len_l, len_r, l, r) with score = -index of the merged token.
    let mut merges: Vec<(i64, usize, usize, &str, &str)> = Vec::new();
    let mut local: Vec<(&str, &str)> = Vec::new();
    for merged in order {
        let score = -(index[merged] as i64);
        local.clear();
        for (b, _) in merged.char_indices().skip(1) {
            let (l, r) = merged.split_at(b);
            if index.contains_key(l) && index.contains_key(r) {
                local.push((l, r));
            }
        }
        local.sort_by_key(|&(l, r)| (index[l], index[r]));
        for &(l, r) in &local {
            merges.push((score, l.chars().count(), r.chars().count(), l, r));
        }
    }
    // Python: sorted(key=(score, len_l, len_r), reverse=True), stable.
    merges.sort_by_key(|m| std::cmp::Reverse((m.0, m.1, m.2)));
    merges
        .into_iter()
        .map(|(_, _, _, l, r)| (l.to_string(), r.to_string()))
        .collect()
}

/// The split regex transformers uses for a llama.cpp pre-tokenizer name, when it maps one.
fn split_regex(pre: &str) -> Option<&'static str> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => Some(LLAMA3),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => Some(QWEN2),
        _ => None,
    }
}

/// GPT-2's byte → printable character map (`bytes_to_unicode`).
fn byte_map() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut map = vec![' '; 256];
    for (b, c) in bs.iter().zip(cs) {
        map[*b as usize] = char::from_u32(c).expect("valid char");
    }
    map
}

fn byte_alphabet() -> HashSet<char> {
    byte_map().into_iter().collect()
}

/// A token written in the byte alphabet.
fn byte_spell(t: &str) -> String {
    let map = byte_map();
    t.bytes().map(|b| map[b as usize]).collect()
}

/// A post-processor that prepends BOS, or none.
fn bos_template(bos: Option<u32>, tokens: &[String]) -> Result<Value> {
    let Some(bos) = bos else {
        return Ok(Value::Null);
    };
    let t = tokens
        .get(bos as usize)
        .ok_or_else(|| Error::ModelSource(format!("BOS id {bos} is outside the vocabulary")))?;
    Ok(json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": t, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {t.as_str(): {"id": t, "ids": [bos], "tokens": [t]}}
    }))
}

/// The chat template in the files beside a `tokenizer.json`: `chat_template.jinja`, else
/// `tokenizer_config.json`'s `chat_template` (a string, or a list of named templates, of which
/// the one named `default`); and that file's `bos_token` and `eos_token` texts.
fn chat_template_beside(path: &Path) -> (Option<ChatTemplate>, (String, String)) {
    let config: Value = std::fs::read_to_string(path.with_file_name("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let token = |key: &str| match &config[key] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or("")
            .to_string(),
        _ => String::new(),
    };
    let bos_eos = (token("bos_token"), token("eos_token"));
    let template = std::fs::read_to_string(path.with_file_name("chat_template.jinja"))
        .ok()
        .or_else(|| match &config["chat_template"] {
            Value::String(s) => Some(s.clone()),
            Value::Array(list) => list
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(String::from),
            _ => None,
        });
    let chat = template.map(|template| ChatTemplate {
        template,
        bos_token: bos_eos.0.clone(),
        eos_token: bos_eos.1.clone(),
    });
    (chat, bos_eos)
}
