//! Units larger than a token (`--unit word|sentence`, `--unit-spans`): segmentation from the
//! text whatever the tokenizer, ReAGent and occlusion replacing whole units, positions in no
//! unit never replaced, and token units reproducing the token-level run exactly.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use reagent::method::occlusion::Occlusion;
use reagent::method::reagent::{
    build_sampler, MlmPick, Readout, Reagent, ReagentConfig, SamplerKind,
};
use reagent::method::{Attributor, Goal, LmTarget, MethodKind, NextTokenFn, NoProgress, Units};
use reagent::model::{load_causal, LoadOptions};
use reagent::result::{segment, Token, Unit};

/// A text and its tokens.
struct Plan2 {
    text: String,
    tokens: Vec<Token>,
}
use reagent::{attribute, Plan, Result, Targets};

const TEXT: &str = "My cousin moved to France last year. She loves the food there. \
                    Yesterday she visited the capital city,";

fn tiny(name: &str) -> reagent::LoadedModel {
    let dir = fixture(&format!("models/{name}"));
    load_causal(dir.to_str().unwrap(), &LoadOptions::default()).unwrap()
}

/// Word and sentence units are the text's, whatever the tokenizer: byte-level BPE (GPT-2's
/// `Ġ`), SentencePiece (Llama's and Gemma's `▁`) and Qwen2's byte-level BPE give the same
/// units.
#[test]
fn units_come_from_the_text_not_the_tokenizer() {
    let mut words_seen = Vec::new();
    for name in ["gpt2", "llama", "gemma3", "qwen2"] {
        let tok = reagent::Tokenizer::from_file(&fixture(&format!("models/{name}/tokenizer.json")))
            .unwrap();
        let text = format!("{TEXT} Paris");
        let enc = tok.encode(&text, true).unwrap();
        let special = tok.special_ids();
        let tokens: Vec<Token> = enc
            .ids
            .iter()
            .zip(&enc.offsets)
            .map(|(&id, &(start, end))| Token {
                id,
                text: tok.token_text(id),
                start,
                end,
                special: special.binary_search(&id).is_ok() || start == end,
                template: false,
            })
            .collect();
        let plan = Plan2 { text, tokens };
        let words: Vec<String> = segment(&plan.text, &plan.tokens, &Unit::Word)
            .unwrap()
            .into_iter()
            .map(|w| w.text.trim().replace(['Ġ', '▁'], ""))
            .collect();
        let sentences = segment(&plan.text, &plan.tokens, &Unit::Sentence).unwrap();
        // Three sentences in the prompt; the target " Paris" continues the third.
        assert_eq!(sentences.len(), 3, "{name}: {sentences:?}");
        let last = sentences.last().unwrap();
        assert_eq!(
            last.tokens.1,
            plan.tokens.len(),
            "{name}: the target joins the last sentence"
        );
        // Special tokens (BOS) are in no unit.
        for w in &sentences {
            for t in &plan.tokens[w.tokens.0..w.tokens.1] {
                assert!(!t.special, "{name}: special token {t:?} in a unit");
            }
        }
        words_seen.push((name, words));
    }
    let want: Vec<String> = [
        "My",
        "cousin",
        "moved",
        "to",
        "France",
        "last",
        "year",
        ".",
        "She",
        "loves",
        "the",
        "food",
        "there",
        ".",
        "Yesterday",
        "she",
        "visited",
        "the",
        "capital",
        "city",
        ",",
        "Paris",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (name, words) in words_seen {
        assert_eq!(words, want, "{name}");
    }
}

#[test]
fn spans_are_checked() {
    let m = tiny("llama");
    let plan = || Plan::new(&m, TEXT, &Targets::Text(" Paris".into())).unwrap();
    let err = |spans: Vec<(usize, usize)>| {
        plan()
            .with_units(Unit::Spans(spans))
            .unwrap_err()
            .to_string()
    };
    assert!(err(vec![(0, 10), (5, 20)]).contains("overlap"));
    assert!(err(vec![(5, 5)]).contains("empty or outside"));
    assert!(
        err(vec![(0, 500)]).contains("empty or outside")
            || err(vec![(0, 500)]).contains("past the prompt")
    );
    assert!(err(vec![(0, TEXT.chars().count() + 3)]).contains("past the prompt"));
    // Spans that hold no token's first character leave nothing to attribute.
    assert!(err(vec![(2, 3)]).contains("no spans"));
}

/// Every position its own unit is the token-level run, draw for draw.
#[test]
fn token_units_reproduce_the_token_level_run() {
    let m = tiny("llama_tied");
    let context: Vec<u32> = vec![1, 17, 42, 9, 100, 23, 5, 77, 31];
    let target = 12u32;
    for readout in [Readout::Reference, Readout::MaskDiff] {
        let cfg = ReagentConfig {
            probes: 4,
            max_steps: 12,
            readout,
            ..Default::default()
        };
        let sampler = build_sampler(SamplerKind::Uniform, &m, None, MlmPick::Argmax).unwrap();
        let r = Reagent::new(cfg, sampler).unwrap();
        let f = LmTarget(m.model.as_ref());
        let tokens = r
            .trace_goal(&f, &context, target.into(), 3, &NoProgress)
            .unwrap();
        let units = Units::tokens(context.len());
        let unit = r
            .trace_units(&f, &context, target.into(), Some(&units), 3, &NoProgress)
            .unwrap();
        assert_eq!(tokens.mean, unit.mean, "{readout:?}");
        assert_eq!(tokens.steps, unit.steps);
        assert_eq!(tokens.forward_rows, unit.forward_rows);
    }
    let occ = Occlusion::new(m.tokenizer.unk_id());
    let plain = occ
        .attribute(m.model.as_ref(), &context, target, 0, &NoProgress)
        .unwrap();
    let units = occ
        .attribute_units(
            m.model.as_ref(),
            &context,
            Goal::from(target),
            &Units::tokens(context.len()),
            0,
            &NoProgress,
        )
        .unwrap()
        .unwrap();
    assert_eq!(plain.scores, units.scores);
}

/// A next-token function over 8 ids where the target (id 0) is likely exactly when position
/// `KEY` keeps its token; it records whether position `FIXED` was ever changed.
struct Watch {
    context: Vec<u32>,
    fixed_touched: AtomicBool,
}

const KEY: usize = 6;
const FIXED: usize = 0;

impl NextTokenFn for Watch {
    fn vocab_size(&self) -> usize {
        8
    }
    fn log_probs(&self, contexts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        Ok(contexts
            .iter()
            .map(|c| {
                if c[FIXED] != self.context[FIXED] {
                    self.fixed_touched.store(true, Ordering::SeqCst);
                }
                let p0: f32 = if c[KEY] == self.context[KEY] {
                    0.9
                } else {
                    0.05
                };
                let rest = (1.0 - p0) / 7.0;
                (0..8)
                    .map(|i| if i == 0 { p0.ln() } else { rest.ln() })
                    .collect()
            })
            .collect())
    }
}

/// Units are replaced whole, positions in no unit never: the unit holding the position the
/// answer depends on ranks first, and the fixed position is never touched.
#[test]
fn reagent_replaces_whole_units_and_never_a_fixed_position() {
    let context: Vec<u32> = vec![7, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5];
    let f = Watch {
        context: context.clone(),
        fixed_touched: AtomicBool::new(false),
    };
    // Four units of the positions after FIXED: [1..4), [4..8) holds KEY, [8..10), [10..12).
    let units = Units::new(
        vec![
            (1..4).collect(),
            (4..8).collect(),
            (8..10).collect(),
            (10..12).collect(),
        ],
        context.len(),
    )
    .unwrap();
    let cfg = ReagentConfig {
        probes: 8,
        max_steps: 8,
        min_steps: 8,
        replacing_ratio: 0.3,
        readout: Readout::MaskDiff,
        ..Default::default()
    };
    let r = Reagent::new(cfg, std::sync::Arc::new(NextId)).unwrap();
    let t = r
        .trace_units(&f, &context, Goal::from(0u32), Some(&units), 0, &NoProgress)
        .unwrap();
    assert_eq!(t.mean.len(), 4);
    let best = (0..4)
        .max_by(|&a, &b| t.mean[a].total_cmp(&t.mean[b]))
        .unwrap();
    assert_eq!(best, 1, "{:?}", t.mean);
    assert!(
        !f.fixed_touched.load(Ordering::SeqCst),
        "a position in no unit was replaced"
    );
    // Bad units are one-line errors.
    assert!(Units::new(vec![vec![1, 2], vec![2]], 5)
        .unwrap_err()
        .to_string()
        .contains("two units"));
    assert!(Units::new(vec![vec![9]], 5)
        .unwrap_err()
        .to_string()
        .contains("outside"));
    assert!(Units::new(vec![], 5).is_err());
    let wrong = Units::tokens(3);
    assert!(r
        .trace_units(&f, &context, Goal::from(0u32), Some(&wrong), 0, &NoProgress)
        .unwrap_err()
        .to_string()
        .contains("units cover 3 positions"));
}

/// The pipeline: sentence units on a real model. Occlusion and ReAGent score one value per
/// sentence (perturbing whole sentences, with far fewer contexts than token level); attention
/// sums its token scores per sentence; token scores add up to the unit scores.
#[test]
fn sentence_units_through_the_pipeline() {
    let Some(path) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let m = load_causal(path.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let settings = reagent::method::registry::MethodSettings {
        reagent: ReagentConfig::mask_diff(),
        ..Default::default()
    };
    let mut rows = Vec::new();
    for (kind, unit) in [
        (MethodKind::Occlusion, Unit::Token),
        (MethodKind::Occlusion, Unit::Sentence),
        (MethodKind::Reagent, Unit::Token),
        (MethodKind::Reagent, Unit::Sentence),
        (MethodKind::Attention, Unit::Sentence),
    ] {
        let method = reagent::method::registry::build(kind, &settings, &m, None).unwrap();
        let plan = Plan::new(&m, TEXT, &Targets::Text(" Paris".into()))
            .unwrap()
            .with_units(unit.clone())
            .unwrap();
        let r = attribute(&m, method.as_ref(), plan, &NoProgress).unwrap();
        let t = &r.targets[0];
        assert_eq!(t.scores.scores.len(), t.position);
        if unit == Unit::Sentence {
            let w = r.words.as_ref().expect("unit scores");
            assert_eq!(w.unit.as_deref(), Some("sentence"));
            assert_eq!(w.words.len(), 3);
            assert_eq!(w.scores[0].len(), 3);
            assert_eq!(w.perturbed, kind != MethodKind::Attention, "{kind:?}");
            let sum_tokens: f32 = t.scores.scores.iter().sum();
            let sum_units: f32 = w.scores[0].iter().sum();
            assert!((sum_tokens - sum_units).abs() < 1e-4, "{kind:?}");
            // BOS (in no unit) scores 0 when the method replaced units.
            if w.perturbed && r.tokens[0].special {
                assert_eq!(t.scores.scores[0], 0.0);
            }
        }
        rows.push((kind, unit, t.scores.forward_rows.unwrap_or(0)));
    }
    // Occlusion: one context per unit plus the original.
    assert_eq!(rows[1].2, 4);
    assert!(rows[0].2 > 20, "{rows:?}");
    // ReAGent at the same budget (16 probes x 8 steps): as many contexts, over 3 features.
    assert_eq!(rows[2].2, rows[3].2, "{rows:?}");
}
