//! How far our POS tags (the brill lexicon plus suffix rules, as the POS sampler uses them) agree
//! with an independent tagger, wink-pos-tagger, on SmolLM2's word-like tokens tagged one at a
//! time (`fixtures/pos/wink_tags.json`, made by `scripts/make_pos_agreement.sh`).

mod common;

use common::*;
use reagent::method::reagent::pos::PosTable;

/// NN, NNS, NNP, NNPS → N; VB* → V; JJ* → J; RB* → R; others as they are.
fn coarse(tag: &str) -> String {
    for (p, c) in [("NN", "N"), ("VB", "V"), ("JJ", "J"), ("RB", "R")] {
        if tag.starts_with(p) {
            return c.to_string();
        }
    }
    tag.to_string()
}

#[test]
fn pos_tags_agree_with_an_independent_tagger() -> TestResult {
    let Some(path) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return Ok(());
    };
    let f = reagent::model::gguf::GgufFile::open(&path)?;
    let tok = reagent::Tokenizer::from_gguf(&f)?;
    let table = PosTable::build(&tok);
    let fx = read_json(&fixture("pos/wink_tags.json"));
    let ids = fx["ids"].as_array().unwrap();
    let texts = fx["texts"].as_array().unwrap();
    let tags = fx["tags"].as_array().unwrap();
    let (mut n, mut exact, mut class) = (0, 0, 0);
    for ((id, text), tag) in ids.iter().zip(texts).zip(tags) {
        let id = id.as_u64().unwrap() as u32;
        // The fixture was made from this tokenizer.
        assert_eq!(tok.token_text(id), text.as_str().unwrap());
        let Some(theirs) = tag.as_str() else {
            continue;
        };
        let ours = table.tag(id);
        n += 1;
        exact += (ours == theirs) as usize;
        class += (coarse(ours) == coarse(theirs)) as usize;
    }
    let (e, c) = (exact as f64 / n as f64, class as f64 / n as f64);
    eprintln!(
        "POS agreement with wink-pos-tagger on {n} SmolLM2 word tokens: {:.1}% exact tag, {:.1}% coarse class",
        100.0 * e,
        100.0 * c
    );
    assert!(n > 5000, "only {n} tokens compared");
    // Measured: see the README's POS section. A drop below these bounds means the table changed.
    assert!(e > 0.62 && c > 0.90, "exact {e:.3}, class {c:.3}");
    Ok(())
}
