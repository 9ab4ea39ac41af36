//! `reagent predict`: the most likely next tokens after a text.

use anyhow::{bail, Result};
use serde::Serialize;

use crate::args::PredictArgs;

#[derive(Serialize)]
struct Prediction {
    rank: usize,
    id: u32,
    token: String,
    prob: f32,
    logprob: f32,
}

#[derive(Serialize)]
struct Output<'a> {
    model: &'a str,
    text: &'a str,
    context_ids: &'a [u32],
    predictions: Vec<Prediction>,
}

pub fn run(a: PredictArgs) -> Result<()> {
    if a.text.trim().is_empty() {
        bail!("the text is empty: give a text to continue, e.g. reagent predict \"The capital of France is\"");
    }
    let m = super::load_model(&a.model, false)?;
    let vocab = m.model.vocab_size();
    if a.top_k == 0 || a.top_k > vocab {
        bail!(
            "--top-k must be between 1 and the vocabulary size ({vocab}), got {}",
            a.top_k
        );
    }
    let enc = m.tokenizer.encode(&a.text, true)?;
    let logp = m
        .model
        .next_token_log_probs(std::slice::from_ref(&enc.ids))?;
    let row: Vec<f32> = logp.squeeze(0)?.to_vec1()?;
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.select_nth_unstable_by(a.top_k - 1, |&x, &y| row[y].total_cmp(&row[x]));
    order.truncate(a.top_k);
    order.sort_by(|&x, &y| row[y].total_cmp(&row[x]).then(x.cmp(&y)));
    let predictions: Vec<Prediction> = order
        .iter()
        .enumerate()
        .map(|(r, &id)| Prediction {
            rank: r + 1,
            id: id as u32,
            token: m.tokenizer.token_text(id as u32),
            prob: row[id].exp(),
            logprob: row[id],
        })
        .collect();
    if a.json {
        let out = Output {
            model: &m.id,
            text: &a.text,
            context_ids: &enc.ids,
            predictions,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} ({}; {} context tokens)",
        m.id,
        m.model.info().architecture,
        enc.ids.len()
    );
    println!("{:>4}  {:>8}  {:>7}  token", "rank", "prob", "id");
    for p in &predictions {
        println!(
            "{:>4}  {:>8.4}  {:>7}  {}",
            p.rank,
            p.prob,
            p.id,
            super::show_token(&p.token)
        );
    }
    Ok(())
}
