//! The two server dialects `reagent` scores with, as requests and checked replies.
//!
//! - **llama.cpp's `llama-server`** (`POST /completion`): token-id prompts and the top `n_probs`
//!   next-token log-probabilities with their ids, computed from the full softmax of the logits
//!   (`post_sampling_probs: false`). No prompt log-probabilities: the *top-K* mode.
//! - **vLLM** (`POST /v1/completions`): token-id prompts and `prompt_logprobs`, a dictionary per
//!   prompt position keyed by token id, holding the prompt token itself and the top K, each
//!   with its log-probability and rank. Sending the context followed by a token gives that
//!   token's exact log-probability: the *exact* mode.
//!
//! Every reply is checked before use: lengths, ids inside the vocabulary, finite log-probabilities
//! that are not positive, no repeated id. A reply that fails gets an error, never a panic.

use serde_json::{json, Value};

use crate::{Error, Result};

/// What one scoring reply gives for the next token after a context.
#[derive(Debug, Clone, PartialEq)]
pub struct Sparse {
    /// The server's top K: `(id, log-probability)`, most likely first.
    pub top: Vec<(u32, f32)>,
    /// Exact log-probabilities of further ids (exact mode), which may lie outside the top K.
    pub exact: Vec<(u32, f32)>,
}

impl Sparse {
    /// The log-probability of `id` when the reply gives it.
    pub fn get(&self, id: u32) -> Option<f32> {
        self.top
            .iter()
            .chain(&self.exact)
            .find(|(i, _)| *i == id)
            .map(|(_, l)| *l)
    }

    /// The smallest log-probability of the top K: every id outside it has at most this one.
    pub fn kth(&self) -> f32 {
        self.top.last().map(|(_, l)| *l).unwrap_or(0.0)
    }
}

/// Probability 0 arrives as the most negative float (llama.cpp) or `-inf` (vLLM); both become
/// this finite floor, far below any probability that matters (e^-1e4).
const LOG_ZERO: f32 = -1e4;

/// A log-probability from a reply, checked.
fn logprob(v: &Value, what: &str) -> Result<f32> {
    let x = match v {
        Value::Number(n) => n.as_f64(),
        // vLLM serializes -inf as the string "-Infinity" in some versions.
        Value::String(s) if s == "-Infinity" || s == "-inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
    .ok_or_else(|| bad(format!("{what} is not a number: {}", short(v))))?;
    if x.is_nan() || x > 1e-3 {
        return Err(bad(format!("{what} is not a log-probability: {x}")));
    }
    Ok((x as f32).max(LOG_ZERO))
}

fn id_of(v: &Value, vocab: usize, what: &str) -> Result<u32> {
    let id = v
        .as_u64()
        .ok_or_else(|| bad(format!("{what} is not a token id: {}", short(v))))?;
    if id as usize >= vocab {
        return Err(bad(format!(
            "{what} {id} is outside the vocabulary of {vocab} ids"
        )));
    }
    Ok(id as u32)
}

fn bad(msg: String) -> Error {
    Error::Remote(format!("malformed reply: {msg}"))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 160 {
        format!("{}...", s.chars().take(160).collect::<String>())
    } else {
        s
    }
}

fn check_distinct(top: &[(u32, f32)]) -> Result<()> {
    let mut ids: Vec<u32> = top.iter().map(|(i, _)| *i).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(bad(
            "a token id appears twice in the top log-probabilities".into()
        ));
    }
    Ok(())
}

/// llama.cpp: the request for the top `k` next tokens after `context`. `cache_prompt` is off:
/// a reused prefix changes the numerics with the order of requests, and results must not.
///
/// The server reports probabilities only for a token it *sends*: when the greedy token is an
/// end-of-generation token or an incomplete UTF-8 byte, the reply has none. So the sampled
/// token is pinned to `anchor` (an ordinary token) by a logit bias, which acts on the sampler
/// only: `n_probs` comes from the raw logits (`get_token_probabilities`), unchanged.
pub fn llama_cpp_request(context: &[u32], k: usize, anchor: u32) -> Value {
    json!({
        "prompt": context,
        "n_predict": 1,
        "n_probs": k,
        "post_sampling_probs": false,
        "temperature": 0.0,
        "logit_bias": [[anchor, 1000.0]],
        "cache_prompt": false,
        "stream": false,
    })
}

/// llama.cpp: the top K of the reply, checked.
pub fn llama_cpp_reply(v: &Value, k: usize, vocab: usize) -> Result<Sparse> {
    let first = v
        .get("completion_probabilities")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .ok_or_else(|| {
            bad(format!(
                "no completion_probabilities (does the server support n_probs?): {}",
                short(v)
            ))
        })?;
    let list = first
        .get("top_logprobs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no top_logprobs in completion_probabilities".into()))?;
    if list.is_empty() || list.len() > k {
        return Err(bad(format!(
            "{} top log-probabilities where 1 to {k} were asked for",
            list.len()
        )));
    }
    let mut top = Vec::with_capacity(list.len());
    for e in list {
        let id = id_of(&e["id"], vocab, "top_logprobs id")?;
        top.push((id, logprob(&e["logprob"], "top_logprobs logprob")?));
    }
    check_distinct(&top)?;
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(Sparse {
        top,
        exact: Vec::new(),
    })
}

/// vLLM: the request that scores `next` after `context` exactly, with the top `k` there.
pub fn vllm_request(model: &str, context: &[u32], next: u32, k: usize) -> Value {
    let mut prompt = context.to_vec();
    prompt.push(next);
    json!({
        "model": model,
        "prompt": prompt,
        "max_tokens": 1,
        "temperature": 0.0,
        "prompt_logprobs": k,
    })
}

/// vLLM: the last prompt position of the reply: the top `k` there and the exact
/// log-probability of `next`, the token the request appended.
pub fn vllm_reply(
    v: &Value,
    prompt_len: usize,
    next: u32,
    k: usize,
    vocab: usize,
) -> Result<Sparse> {
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .ok_or_else(|| bad("no choices".into()))?;
    let plp = choice
        .get("prompt_logprobs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no prompt_logprobs (is this vLLM?)".into()))?;
    if plp.len() != prompt_len {
        return Err(bad(format!(
            "prompt_logprobs has {} positions for a prompt of {prompt_len} tokens",
            plp.len()
        )));
    }
    let last = plp[prompt_len - 1]
        .as_object()
        .ok_or_else(|| bad("the last prompt position has no log-probabilities".into()))?;
    if last.len() > k + 1 {
        return Err(bad(format!(
            "{} log-probabilities at the last position where at most {} were asked for",
            last.len(),
            k + 1
        )));
    }
    let mut ranked = Vec::with_capacity(last.len());
    let mut exact = None;
    for (key, e) in last {
        let id: u64 = key
            .parse()
            .map_err(|_| bad(format!("prompt_logprobs key {key:?} is not a token id")))?;
        let id = id_of(&json!(id), vocab, "prompt_logprobs id")?;
        let lp = logprob(&e["logprob"], "prompt_logprobs logprob")?;
        let rank = e.get("rank").and_then(Value::as_u64);
        if id == next {
            exact = Some(lp);
        }
        if rank.is_some_and(|r| r >= 1 && r as usize <= k) {
            ranked.push((id, lp));
        }
    }
    let exact = exact.ok_or_else(|| {
        bad(format!(
            "the log-probability of the appended token {next} is missing"
        ))
    })?;
    check_distinct(&ranked)?;
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if ranked.is_empty() {
        return Err(bad(
            "no ranked log-probabilities at the last position".into()
        ));
    }
    Ok(Sparse {
        top: ranked,
        exact: vec![(next, exact)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_replies_are_checked() {
        let ok = json!({"completion_probabilities": [{"id": 5, "logprob": -0.1,
            "top_logprobs": [{"id": 3, "logprob": -2.0}, {"id": 5, "logprob": -0.1}]}]});
        let s = llama_cpp_reply(&ok, 2, 10).unwrap();
        assert_eq!(s.top, vec![(5, -0.1), (3, -2.0)]);
        assert_eq!(s.kth(), -2.0);
        for bad in [
            json!({}),
            json!({"completion_probabilities": [{"top_logprobs": []}]}),
            json!({"completion_probabilities": [{"top_logprobs": [{"id": 10, "logprob": -1.0}]}]}),
            json!({"completion_probabilities": [{"top_logprobs": [{"id": 1, "logprob": 0.5}]}]}),
            json!({"completion_probabilities": [{"top_logprobs": [{"id": 1, "logprob": "x"}]}]}),
            json!({"completion_probabilities": [{"top_logprobs": [{"id": 1, "logprob": -1.0}, {"id": 1, "logprob": -2.0}]}]}),
            json!({"completion_probabilities": [{"top_logprobs": [{"id": 1, "logprob": -1.0}, {"id": 2, "logprob": -2.0}, {"id": 3, "logprob": -3.0}]}]}),
        ] {
            assert!(llama_cpp_reply(&bad, 2, 10).is_err(), "{bad}");
        }
        // Probability 0 (llama.cpp sends the lowest float) becomes a finite floor.
        let zero = json!({"completion_probabilities": [{"top_logprobs": [{"id": 1, "logprob": -3.4e38}]}]});
        assert_eq!(llama_cpp_reply(&zero, 1, 10).unwrap().top[0].1, LOG_ZERO);
    }

    /// vLLM's documented reply shape (`vllm/logprobs.py`: `PromptLogprobs = list[dict[int,
    /// Logprob] | None]`, each `Logprob` with `logprob`, `rank`, `decoded_token`; JSON keys are
    /// the ids as strings; the first position is null). Untested against a live vLLM here.
    #[test]
    fn vllm_prompt_logprobs_are_read_at_the_last_position() {
        let req = vllm_request("m", &[1, 2], 7, 2);
        assert_eq!(req["prompt"], json!([1, 2, 7]));
        assert_eq!(req["prompt_logprobs"], 2);
        let reply = json!({"choices": [{"text": "x", "prompt_logprobs": [
            null,
            {"2": {"logprob": -1.5, "rank": 2, "decoded_token": "b"},
             "4": {"logprob": -0.5, "rank": 1, "decoded_token": "d"}},
            {"7": {"logprob": -9.25, "rank": 812, "decoded_token": " Paris"},
             "3": {"logprob": -0.1, "rank": 1, "decoded_token": "c"},
             "5": {"logprob": -2.5, "rank": 2, "decoded_token": "e"}}
        ]}]});
        let s = vllm_reply(&reply, 3, 7, 2, 10).unwrap();
        assert_eq!(s.top, vec![(3, -0.1), (5, -2.5)]);
        assert_eq!(s.get(7), Some(-9.25));
        // The appended token inside the top K counts once.
        let inside = json!({"choices": [{"prompt_logprobs": [null, null,
            {"7": {"logprob": -0.2, "rank": 1}, "5": {"logprob": -2.0, "rank": 2}}]}]});
        let s = vllm_reply(&inside, 3, 7, 2, 10).unwrap();
        assert_eq!(s.top, vec![(7, -0.2), (5, -2.0)]);
        for bad in [
            json!({"choices": []}),
            json!({"choices": [{"prompt_logprobs": [null, null]}]}),
            json!({"choices": [{"prompt_logprobs": [null, null, {"3": {"logprob": -0.1, "rank": 1}}]}]}),
            json!({"choices": [{"prompt_logprobs": [null, null, {"x": {"logprob": -0.1, "rank": 1}, "7": {"logprob": -1.0, "rank": 2}}]}]}),
            json!({"choices": [{"prompt_logprobs": [null, null, {"70": {"logprob": -0.1, "rank": 1}, "7": {"logprob": -1.0, "rank": 2}}]}]}),
            json!({"choices": [{"prompt_logprobs": [null, null, {"7": {"logprob": "NaN", "rank": 1}}]}]}),
        ] {
            assert!(vllm_reply(&bad, 3, 7, 2, 10).is_err(), "{bad}");
        }
    }
}
