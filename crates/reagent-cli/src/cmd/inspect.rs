//! `reagent inspect`: architecture, sizes, vocabulary and capabilities.

use anyhow::Result;
use serde::Serialize;

use crate::args::InspectArgs;

#[derive(Serialize)]
struct Special {
    id: u32,
    token: String,
}

#[derive(Serialize)]
struct Output<'a> {
    model: &'a str,
    source: String,
    #[serde(flatten)]
    info: &'a reagent::ModelInfo,
    tokenizer_size: usize,
    special_tokens: Vec<Special>,
}

pub fn run(a: InspectArgs) -> Result<()> {
    let m = super::load_model(&a.model, false)?;
    let info = m.model.info();
    let special: Vec<Special> = m
        .tokenizer
        .special_ids()
        .iter()
        .map(|&id| Special {
            id,
            token: m.tokenizer.id_to_token(id).unwrap_or_default(),
        })
        .collect();
    let source = m.source.to_string();
    if a.json {
        let out = Output {
            model: &m.id,
            source,
            info,
            tokenizer_size: m.tokenizer.len(),
            special_tokens: special,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!("model          {}", m.id);
    println!("source         {source}");
    println!("architecture   {}", info.architecture);
    println!("weights        {}", info.weights);
    if info.capabilities.weights {
        println!("layers         {}", info.n_layers);
        println!("hidden size    {}", info.hidden_size);
        println!(
            "heads          {} query / {} key-value",
            info.n_heads, info.n_kv_heads
        );
    } else {
        println!("layers         (served: not known here)");
    }
    println!(
        "vocabulary     {} (tokenizer: {})",
        info.vocab_size,
        m.tokenizer.len()
    );
    println!("max context    {}", info.max_positions);
    println!(
        "special ids    bos {:?}, eos {:?}, pad {:?}",
        info.bos_token_id, info.eos_token_ids, info.pad_token_id
    );
    let names: Vec<String> = special
        .iter()
        .take(12)
        .map(|s| format!("{} {:?}", s.id, s.token))
        .collect();
    let more = special.len().saturating_sub(12);
    println!(
        "special tokens {}{}",
        names.join(", "),
        if more > 0 {
            format!(" (+{more} more)")
        } else {
            String::new()
        }
    );
    println!("gradients      {}", yes(info.capabilities.gradients));
    println!("attentions     {}", yes(info.capabilities.attentions));
    Ok(())
}
