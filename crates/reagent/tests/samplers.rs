//! ReAGent's samplers against their references.
//!
//! - uniform and POS: `fixtures/reagent/sampler_vectors.json` (written by
//!   `scripts/reagent_reference.py`): for recorded uniform draws `u`, the token the reference's
//!   formula picks (the original code's `UniformTokenSampler` over `[0, V)` minus BOS/EOS/UNK;
//!   inseq's `POSTagTokenSampler` over groups in order of first appearance);
//! - causal: transformers' greedy prediction at every position, from the model-parity logits;
//! - the distribution of draws: a seeded chi-square test over many draws.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reagent::method::reagent::pos::PosTable;
use reagent::method::reagent::{CausalSampler, Draw, Phase, PosSampler, Sampler, UniformSampler};
use reagent::model::{load_causal, LoadOptions};

fn vectors() -> serde_json::Value {
    read_json(&fixture("reagent/sampler_vectors.json"))
}

fn rows(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn tiny() -> reagent::LoadedModel {
    load_causal(
        fixture("models/llama_tied").to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap()
}

/// One probe's draw through `sample` for `mask`, with a seeded stream.
fn sample_masked(s: &dyn Sampler, context: &[u32], mask: &[bool], seed: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    s.sample(
        context,
        &[mask.to_vec()],
        &mut [Draw {
            probe: 0,
            step: 1,
            phase: Phase::Update,
            rng: &mut rng,
        }],
    )
    .unwrap()
    .remove(0)
}

/// The MLM's most likely token in a logits row, special tokens excluded (ties: the lower id).
fn mlm_argmax(row: &[f32], special: &[u32]) -> u32 {
    (0..row.len() as u32)
        .filter(|id| special.binary_search(id).is_err())
        .max_by(|&a, &b| row[a as usize].total_cmp(&row[b as usize]).then(b.cmp(&a)))
        .unwrap()
}

/// Draws through `sample` with a seeded stream, and the `u` values that stream gives.
fn sample_with(s: &dyn Sampler, context: &[u32], seed: u64) -> (Vec<u32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mask = vec![true; context.len()];
    let out = s
        .sample(
            context,
            std::slice::from_ref(&mask),
            &mut [Draw {
                probe: 0,
                step: 1,
                phase: Phase::Update,
                rng: &mut rng,
            }],
        )
        .unwrap();
    let mut again = ChaCha8Rng::seed_from_u64(seed);
    let us = (0..context.len()).map(|_| again.random::<f32>()).collect();
    (out[0].clone(), us)
}

#[test]
fn uniform_sampler_matches_the_reference() {
    let v = vectors();
    let fx = &v["uniform"];
    let model = tiny();
    let s = UniformSampler::new(
        &model.tokenizer,
        fx["vocab_size"].as_u64().unwrap() as usize,
    )
    .unwrap();
    // The same candidates: [0, V) minus the excluded (special) ids.
    let excluded: Vec<u32> = fx["excluded_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let want: Vec<u32> = (0..352).filter(|i| !excluded.contains(i)).collect();
    assert_eq!(s.candidates(), &want[..]);
    for (us, expected) in rows(&v["u"]).iter().zip(rows(&fx["expected"])) {
        for (u, e) in us.iter().zip(expected) {
            assert_eq!(s.pick(*u as f32), e as u32, "u = {u}");
        }
    }
    // `sample` draws exactly through `pick`.
    let ctx = [5u32, 17, 42, 9, 33];
    let (out, us) = sample_with(&s, &ctx, 3);
    let picked: Vec<u32> = us.iter().map(|&u| s.pick(u)).collect();
    assert_eq!(out, picked);
}

#[test]
fn pos_sampler_matches_the_reference() {
    let v = vectors();
    let fx = &v["postag"];
    let n = fx["vocab_size"].as_u64().unwrap() as usize;
    // The fixture's synthetic tag rule: key (i * 7) % 3, tags in order of first appearance.
    let mut tags: Vec<String> = Vec::new();
    let tag_of: Vec<u16> = (0..n)
        .map(|i| {
            let key = ((i * 7) % 3).to_string();
            let pos = tags.iter().position(|t| *t == key).unwrap_or_else(|| {
                tags.push(key);
                tags.len() - 1
            });
            pos as u16
        })
        .collect();
    let s = PosSampler::new(PosTable { tags, tag_of }, n).unwrap();
    let ids = rows(&v["ids"]);
    for ((idr, us), expected) in ids.iter().zip(rows(&v["u"])).zip(rows(&fx["expected"])) {
        for ((id, u), e) in idr.iter().zip(us).zip(expected) {
            let got = s.pick(*id as u32, u as f32);
            assert_eq!(got, e as u32, "id {id}, u {u}");
            // A replacement keeps the tag.
            assert_eq!((got as usize * 7) % 3, (*id as usize * 7) % 3);
        }
    }
    let ctx = [5u32, 17, 42, 9, 33];
    let (out, us) = sample_with(&s, &ctx, 9);
    let picked: Vec<u32> = ctx.iter().zip(&us).map(|(&id, &u)| s.pick(id, u)).collect();
    assert_eq!(out, picked);
}

#[test]
fn causal_sampler_is_the_greedy_prediction_of_transformers() {
    let model = tiny();
    let fx = read_json(&fixture("models/llama_tied/expected.json"));
    let tensors = load_tensors(&fixture("models/llama_tied/expected.safetensors"));
    let s = CausalSampler::new(model.model.clone());
    for (i, ids) in fx["ids"].as_array().unwrap().iter().enumerate() {
        let ctx: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let logits: Vec<Vec<f32>> = tensors[&format!("logits.{i}")].to_vec2().unwrap();
        let (out, _) = sample_with(&s, &ctx, 0);
        assert_eq!(out[0], ctx[0], "position 0 keeps its token");
        for p in 1..ctx.len() {
            let row = &logits[p - 1];
            let argmax = reagent::util::top_n(row, 1)[0] as u32;
            assert_eq!(out[p], argmax, "text {i}, position {p}");
        }
    }
}

/// Pearson's chi-square statistic of observed counts against equal expected counts.
fn chi_square(counts: &[usize]) -> f64 {
    let total: usize = counts.iter().sum();
    let e = total as f64 / counts.len() as f64;
    counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum()
}

#[test]
fn draws_are_uniform_over_their_candidates() {
    let model = tiny();
    let s = UniformSampler::new(&model.tokenizer, 352).unwrap();
    let n = s.candidates().len();
    let mut counts = vec![0usize; 352];
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let ctx = vec![5u32; 100];
    let mask = vec![true; ctx.len()];
    for step in 0..500 {
        let out = s
            .sample(
                &ctx,
                std::slice::from_ref(&mask),
                &mut [Draw {
                    probe: 0,
                    step,
                    phase: Phase::Update,
                    rng: &mut rng,
                }],
            )
            .unwrap();
        for id in &out[0] {
            counts[*id as usize] += 1;
        }
    }
    // Special tokens are never drawn; every candidate is.
    assert!(
        counts[..3].iter().all(|&c| c == 0),
        "a special token was drawn"
    );
    let cand: Vec<usize> = s.candidates().iter().map(|&i| counts[i as usize]).collect();
    assert!(cand.iter().all(|&c| c > 0));
    // 50,000 draws over 349 candidates: chi-square with 348 degrees of freedom; its 99.9th
    // percentile is about 438.
    let x2 = chi_square(&cand);
    assert!(x2 < 438.0, "chi-square {x2} over {n} candidates");
    // The POS sampler: uniform within the group.
    let tag_of: Vec<u16> = (0..352).map(|i| (i % 2) as u16).collect();
    let p = PosSampler::new(
        PosTable {
            tags: vec!["a".into(), "b".into()],
            tag_of,
        },
        352,
    )
    .unwrap();
    let mut counts = vec![0usize; 352];
    for k in 0..20_000 {
        let u: f32 = rng.random();
        let id = p.pick(2 * (k % 100) as u32, u);
        assert_eq!(id % 2, 0, "left its group");
        counts[id as usize] += 1;
    }
    let even: Vec<usize> = (0..352).step_by(2).map(|i| counts[i]).collect();
    // 175 degrees of freedom: 99.9th percentile about 245.
    let x2 = chi_square(&even);
    assert!(x2 < 245.0, "POS chi-square {x2}");
}

/// The MLM sampler's shared-vocabulary path: an attributed model whose tokenizer is the MLM's
/// own (tiny GPT-2 weights with the RoBERTa fixture's 352-token tokenizer) maps predictions one
/// to one, and each replacement is the MLM's own argmax at that masked position (special tokens
/// excluded).
#[test]
fn mlm_sampler_shared_vocabulary_maps_one_to_one() {
    let dir = std::env::temp_dir().join(format!("reagent-shared-vocab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture(&format!("models/gpt2/{f}")), dir.join(f)).unwrap();
    }
    std::fs::copy(
        fixture("models/roberta/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let model = load_causal(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let mlm = reagent::load_masked(
        fixture("models/roberta").to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let s = reagent::method::reagent::MlmSampler::new(
        mlm.model.clone(),
        mlm.tokenizer.clone(),
        model.tokenizer.clone(),
        reagent::method::reagent::MlmPick::Argmax,
    )
    .unwrap();
    assert!(
        s.shares_vocabulary(),
        "identical vocabularies must take the shared path"
    );
    let ctx = model
        .tokenizer
        .encode("The cat sat on the mat", false)
        .unwrap()
        .ids;
    let mask: Vec<bool> = (0..ctx.len()).map(|i| i % 2 == 1).collect();
    let out = [sample_masked(&s, &ctx, &mask, 0)];
    // The MLM on the same input: <s> context with masks </s>.
    let mask_id = mlm.tokenizer.encode("<mask>", false).unwrap().ids[0];
    let wrap = mlm.tokenizer.encode("", true).unwrap().ids;
    let mut input = vec![wrap[0]];
    input.extend(
        ctx.iter()
            .zip(&mask)
            .map(|(&id, &m)| if m { mask_id } else { id }),
    );
    input.extend(&wrap[1..]);
    let positions: Vec<(usize, usize)> = (0..ctx.len())
        .filter(|&i| mask[i])
        .map(|i| (0, i + 1))
        .collect();
    let logits: Vec<Vec<f32>> = mlm
        .model
        .logits_at(&[input], &positions)
        .unwrap()
        .to_vec2()
        .unwrap();
    let special = mlm.tokenizer.special_ids().to_vec();
    for ((_, p), row) in positions.iter().zip(&logits) {
        let best = mlm_argmax(row, &special);
        assert_eq!(out[0][p - 1], best, "position {}", p - 1);
    }
    for (i, (&a, &b)) in ctx.iter().zip(&out[0]).enumerate() {
        if !mask[i] {
            assert_eq!(a, b, "kept position {i} changed");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The MLM sampler's text mapping (GPT-2 attributed, BERT as the MLM: different vocabularies),
/// against the rule the README states, computed here independently: the context decoded token
/// by token with each replaced token's text turned into `[MASK]` (keeping its leading
/// whitespace), the MLM's argmax at each mask (special tokens excluded), decoded and trimmed,
/// given the replaced token's leading whitespace, encoded with the attributed tokenizer, first
/// token kept (the original when it encodes to nothing).
#[test]
fn mlm_sampler_text_mapping_follows_the_rule() {
    let model = load_causal(
        fixture("models/gpt2").to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let mlm = reagent::load_masked(
        fixture("models/bert").to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let s = reagent::method::reagent::MlmSampler::new(
        mlm.model.clone(),
        mlm.tokenizer.clone(),
        model.tokenizer.clone(),
        reagent::method::reagent::MlmPick::Argmax,
    )
    .unwrap();
    assert!(!s.shares_vocabulary());
    let ctx = model
        .tokenizer
        .encode("The cat sat on the mat", false)
        .unwrap()
        .ids;
    for mask in [
        (0..ctx.len()).map(|i| i % 3 == 1).collect::<Vec<bool>>(),
        (0..ctx.len()).map(|i| i == ctx.len() - 1).collect(),
    ] {
        let out = [sample_masked(&s, &ctx, &mask, 0)];
        // The reference computation.
        let mut text = String::new();
        for (&id, &m) in ctx.iter().zip(&mask) {
            let t = model.tokenizer.token_text(id);
            if m {
                let lead: String = t.chars().take_while(|c| c.is_whitespace()).collect();
                text.push_str(&lead);
                text.push_str("[MASK]");
            } else {
                text.push_str(&t);
            }
        }
        let ids = mlm.tokenizer.encode(&text, true).unwrap().ids;
        let mask_id = mlm.tokenizer.encode("[MASK]", false).unwrap().ids[0];
        let at: Vec<(usize, usize)> = ids
            .iter()
            .enumerate()
            .filter(|(_, &id)| id == mask_id)
            .map(|(i, _)| (0, i))
            .collect();
        let logits: Vec<Vec<f32>> = mlm.model.logits_at(&[ids], &at).unwrap().to_vec2().unwrap();
        let special = mlm.tokenizer.special_ids().to_vec();
        let replaced: Vec<usize> = (0..ctx.len()).filter(|&i| mask[i]).collect();
        assert_eq!(replaced.len(), logits.len());
        for (&pos, row) in replaced.iter().zip(&logits) {
            let best = mlm_argmax(row, &special);
            let word = mlm.tokenizer.token_text(best);
            let orig = model.tokenizer.token_text(ctx[pos]);
            let lead: String = orig.chars().take_while(|c| c.is_whitespace()).collect();
            let want = model
                .tokenizer
                .encode(&format!("{lead}{}", word.trim()), false)
                .unwrap()
                .ids
                .first()
                .copied()
                .unwrap_or(ctx[pos]);
            assert_eq!(out[0][pos], want, "position {pos} ({word:?})");
        }
    }
}
