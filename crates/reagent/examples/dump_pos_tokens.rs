//! Write the word-like tokens of a GGUF tokenizer, for `scripts/make_pos_agreement.sh`: the ids
//! below 8,000 whose text (leading space removed) is a word of letters, at least two long.
//!
//!     cargo run --release --example dump_pos_tokens -- models/SmolLM2-135M-Instruct.Q4_1.gguf out.json

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (model, out) = match &args[..] {
        [_, m, o] => (m, o),
        _ => return Err("usage: dump_pos_tokens MODEL.gguf OUT.json".into()),
    };
    let f = reagent::model::gguf::GgufFile::open(std::path::Path::new(model))?;
    let tok = reagent::Tokenizer::from_gguf(&f)?;
    let mut ids = Vec::new();
    let mut texts = Vec::new();
    for id in 0..8000u32.min(tok.len() as u32) {
        let text = tok.token_text(id);
        let word = text.strip_prefix(' ').unwrap_or(&text);
        if word.len() >= 2 && word.chars().all(|c| c.is_ascii_alphabetic()) {
            ids.push(id);
            texts.push(text);
        }
    }
    let doc = serde_json::json!({"tokenizer": model, "ids": ids, "texts": texts});
    std::fs::write(out, serde_json::to_string(&doc)?)?;
    eprintln!("wrote {} tokens to {out}", ids.len());
    Ok(())
}
