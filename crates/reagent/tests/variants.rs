//! ReAGent's variants (read-outs, minimum steps, probe weighting, any-time stop, adaptive ratio,
//! in-context sampler) and the evaluation's common score scale.
//!
//! The read-outs are checked on a next-token function whose answer depends on one known
//! position, so the right ranking is known; the rest run on the tiny Llama fixture.

mod common;

use std::sync::Arc;

use common::*;
use reagent::eval::runner::unit_scale;
use reagent::method::reagent::{
    Draw, ProbeWeighting, Readout, Reagent, ReagentConfig, Sampler, SamplerKind,
};
use reagent::method::registry::{self, MethodSettings};
use reagent::method::{LmTarget, MethodKind, NextTokenFn, NoProgress};
use reagent::model::{load_causal, LoadOptions, Outputs};
use reagent::Result;

/// A next-token function over a vocabulary of 8 where the target (id 0) is likely exactly
/// when position `KEY` still holds its original token; every other position has no effect.
struct OnePosition {
    original: u32,
}

const KEY: usize = 5;
const LEN: usize = 14;

impl NextTokenFn for OnePosition {
    fn vocab_size(&self) -> usize {
        8
    }
    fn log_probs(&self, contexts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        Ok(contexts
            .iter()
            .map(|c| {
                let p0: f32 = if c[KEY] == self.original { 0.9 } else { 0.05 };
                let rest = (1.0 - p0) / 7.0;
                (0..8)
                    .map(|v| if v == 0 { p0.ln() } else { rest.ln() })
                    .collect()
            })
            .collect())
    }
}

fn context() -> Vec<u32> {
    (0..LEN as u32).map(|i| 1 + i % 7).collect()
}

fn argmax(v: &[f32]) -> usize {
    reagent::util::top_n(v, 1)[0]
}

#[test]
fn pooled_readouts_find_the_decisive_position() -> TestResult {
    let ctx = context();
    let f = OnePosition { original: ctx[KEY] };
    for readout in [Readout::MaskDiff, Readout::Regression] {
        for seed in 0..5 {
            let cfg = ReagentConfig {
                probes: 8,
                max_steps: 8,
                min_steps: 8,
                replacing_ratio: 0.2,
                readout,
                seed,
                ..ReagentConfig::default()
            };
            let r = Reagent::new(cfg, Arc::new(NextId))?;
            let t = r.trace(&f, &ctx, 0, 0, &NoProgress)?;
            assert_eq!(
                argmax(&t.mean),
                KEY,
                "{readout:?} seed {seed}: {:?}",
                t.mean
            );
            assert!((t.mean.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            // Fixed budget: the original and 8 update batches of 8; no stopping test runs.
            assert_eq!(t.forward_rows, 1 + 8 * 8, "{readout:?}");
            assert_eq!(t.steps, 8);
        }
    }
    Ok(())
}

/// The any-time stop of a pooled read-out: the run ends once the pooled top positions hold for
/// the window, long before the cap, with the same answer.
#[test]
fn pooled_any_time_stop_ends_early() -> TestResult {
    let ctx = context();
    let f = OnePosition { original: ctx[KEY] };
    let cfg = ReagentConfig {
        probes: 8,
        max_steps: 60,
        min_steps: 4,
        keep_top_n: 1,
        stop_top_k: 1,
        stable_window: 3,
        replacing_ratio: 0.2,
        readout: Readout::MaskDiff,
        ..ReagentConfig::default()
    };
    // A target the function never ranks first, so no stopping test holds.
    let t = Reagent::new(cfg, Arc::new(NextId))?.trace(&f, &ctx, 7, 0, &NoProgress)?;
    assert!(t.steps < 60, "ran to the cap");
    let t = Reagent::new(
        ReagentConfig {
            probes: 8,
            max_steps: 60,
            min_steps: 4,
            stable_window: 3,
            replacing_ratio: 0.2,
            readout: Readout::MaskDiff,
            ..ReagentConfig::default()
        },
        Arc::new(NextId),
    )?
    .trace(&f, &ctx, 0, 0, &NoProgress)?;
    assert_eq!(argmax(&t.mean), KEY);
    Ok(())
}

#[test]
fn min_steps_holds_probes_back() -> TestResult {
    let ctx = context();
    let f = OnePosition { original: ctx[KEY] };
    // The target is the top token of the unperturbed-key distribution, so the stopping test
    // holds as soon as the key position is kept: probes stop at once without min_steps.
    let base = ReagentConfig {
        probes: 6,
        max_steps: 50,
        keep_top_n: 13,
        replacing_ratio: 0.2,
        ..ReagentConfig::default()
    };
    let free = Reagent::new(base.clone(), Arc::new(NextId))?.trace(&f, &ctx, 0, 0, &NoProgress)?;
    let early = free.converged_step.iter().flatten().min().copied();
    assert!(early.is_some_and(|s| s < 10), "{:?}", free.converged_step);
    let held = Reagent::new(
        ReagentConfig {
            min_steps: 10,
            ..base
        },
        Arc::new(NextId),
    )?
    .trace(&f, &ctx, 0, 0, &NoProgress)?;
    assert!(
        held.converged_step.iter().flatten().all(|&s| s >= 10),
        "{:?}",
        held.converged_step
    );
    assert!(held.steps >= 10);
    Ok(())
}

#[test]
fn stable_window_stops_early_and_weighting_changes_the_mean() -> TestResult {
    let model = load_causal(
        fixture("models/llama_tied").to_str().unwrap(),
        &LoadOptions::default(),
    )?;
    let f = LmTarget(model.model.as_ref());
    let ctx: Vec<u32> = vec![5, 17, 42, 9, 33, 21, 8, 60, 12, 27];
    let base = ReagentConfig {
        probes: 4,
        max_steps: 200,
        stop_top_k: 1,
        keep_top_n: 2,
        ..ReagentConfig::default()
    };
    let uniform = || -> Result<Arc<dyn Sampler>> {
        Ok(Arc::new(reagent::method::reagent::UniformSampler::new(
            &model.tokenizer,
            model.model.vocab_size(),
        )?))
    };
    // A target the model never ranks first: the reference runs to the cap.
    let target = 3;
    let full = Reagent::new(base.clone(), uniform()?)?.trace(&f, &ctx, target, 0, &NoProgress)?;
    let windowed = Reagent::new(
        ReagentConfig {
            stable_window: 5,
            ..base.clone()
        },
        uniform()?,
    )?
    .trace(&f, &ctx, target, 0, &NoProgress)?;
    assert!(
        windowed.steps < full.steps,
        "{} vs {}",
        windowed.steps,
        full.steps
    );
    assert_eq!(windowed.converged_probes(), 4);
    // Steps-weighting: a convex combination of the same probes, different from the plain mean
    // when probes stopped at different steps.
    let weighted = Reagent::new(
        ReagentConfig {
            stable_window: 5,
            probe_weighting: ProbeWeighting::Steps,
            ..base
        },
        uniform()?,
    )?
    .trace(&f, &ctx, target, 0, &NoProgress)?;
    let steps: Vec<usize> = weighted.converged_step.iter().flatten().copied().collect();
    let total: usize = steps.iter().sum();
    for i in 0..ctx.len() {
        let want: f32 = weighted
            .final_scores
            .iter()
            .zip(&weighted.converged_step)
            .filter_map(|(s, c)| c.map(|c| s[i] * c as f32 / total as f32))
            .sum();
        assert!((weighted.mean[i] - want).abs() < 1e-6);
    }
    assert!((weighted.mean.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    Ok(())
}

#[test]
fn adaptive_ratio_halves_until_the_prediction_survives() -> TestResult {
    let ctx = context();
    let f = OnePosition { original: ctx[KEY] };
    // With r = 0.8 the key is almost always replaced (median p = 0.05 < 0.45); halving reaches
    // a ratio where it is mostly kept.
    let cfg = ReagentConfig {
        probes: 4,
        max_steps: 4,
        min_steps: 4,
        replacing_ratio: 0.8,
        adaptive_ratio: true,
        readout: Readout::MaskDiff,
        ..ReagentConfig::default()
    };
    let t = Reagent::new(cfg, Arc::new(NextId))?.trace(&f, &ctx, 0, 0, &NoProgress)?;
    let r = t.replacing_ratio.expect("adaptive runs report their ratio");
    assert!((0.8 / 16.0..0.8).contains(&r), "{r}");
    let halvings = (0.8 / r).log2();
    assert!((halvings - halvings.round()).abs() < 1e-9, "{r}");
    // The pilots cost 8 rows per ratio tried.
    let tried = halvings.round() as usize + 1;
    assert_eq!(t.forward_rows, 1 + 8 * tried + 4 * 4);
    Ok(())
}

#[test]
fn context_sampler_draws_from_the_models_top_tokens() -> TestResult {
    let model = load_causal(
        fixture("models/llama_tied").to_str().unwrap(),
        &LoadOptions::default(),
    )?;
    let sampler = reagent::method::reagent::build_sampler(
        SamplerKind::Context,
        &model,
        None,
        reagent::method::reagent::MlmPick::Argmax,
    )?;
    let ctx: Vec<u32> = vec![5, 17, 42, 9, 33, 21, 8, 60];
    let logits: Vec<Vec<f32>> = model
        .model
        .forward(
            std::slice::from_ref(&ctx),
            Outputs {
                logits: true,
                attentions: false,
            },
        )?
        .logits
        .unwrap()
        .squeeze(0)?
        .to_vec2()?;
    let special = model.tokenizer.special_ids().to_vec();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
    let mask = vec![true; ctx.len()];
    for step in 0..50 {
        let mut draws = vec![Draw {
            probe: 0,
            step,
            phase: reagent::method::reagent::Phase::Update,
            rng: &mut rng,
        }];
        let out = sampler.sample(&ctx, std::slice::from_ref(&mask), &mut draws)?;
        for i in 1..ctx.len() {
            let id = out[0][i];
            assert_ne!(id, ctx[i], "position {i} kept its token");
            assert!(special.binary_search(&id).is_err());
            // Among the 64 most likely tokens after the prefix, original and specials excluded.
            let row = &logits[i - 1];
            let better = (0..row.len() as u32)
                .filter(|&v| v != ctx[i] && special.binary_search(&v).is_err())
                .filter(|&v| row[v as usize] > row[id as usize])
                .count();
            assert!(better < 64, "position {i}: id {id} ranks {better}");
        }
    }
    Ok(())
}

/// Every method's scores enter the soft metrics non-negative and summing to 1.
#[test]
fn every_method_enters_the_soft_metrics_on_one_scale() -> TestResult {
    let model = load_causal(
        fixture("models/llama_tied").to_str().unwrap(),
        &LoadOptions::default(),
    )?;
    let settings = MethodSettings {
        reagent: ReagentConfig {
            probes: 3,
            max_steps: 10,
            ..ReagentConfig::default()
        },
        sampler: SamplerKind::Uniform,
        ig_steps: 8,
        ..MethodSettings::default()
    };
    let ctx: Vec<u32> = vec![5, 17, 42, 9, 33, 21];
    let mut raw_sums = Vec::new();
    for kind in MethodKind::ALL {
        let m = registry::build(kind, &settings, &model, None)?;
        let s = m.attribute(model.model.as_ref(), &ctx, 7, 0, &NoProgress)?;
        let u = unit_scale(&s.scores);
        assert!(u.iter().all(|&x| x >= 0.0 && x.is_finite()), "{kind:?}");
        assert!(
            (u.iter().sum::<f32>() - 1.0).abs() < 1e-5,
            "{kind:?}: {}",
            u.iter().sum::<f32>()
        );
        raw_sums.push((kind, s.scores.iter().sum::<f32>()));
    }
    // Occlusion's raw |dp| is on another scale, which is why the rescaling exists.
    let occ = raw_sums
        .iter()
        .find(|(k, _)| *k == MethodKind::Occlusion)
        .unwrap()
        .1;
    assert!((occ - 1.0).abs() > 1e-3, "occlusion raw sum {occ}");
    assert_eq!(unit_scale(&[0.0, 0.0]), vec![0.5, 0.5]);
    assert_eq!(unit_scale(&[-1.0, 3.0]), vec![0.25, 0.75]);
    Ok(())
}

/// The total-variation objective against a direct float64 computation on random distributions,
/// and its effect: it credits a position that moves the distribution without moving the
/// target's probability, which the reference objective cannot see.
#[test]
fn total_variation_objective() -> TestResult {
    use rand::{Rng, SeedableRng};
    use reagent::method::reagent::Objective;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for _ in 0..50 {
        let mut p: Vec<f64> = (0..20).map(|_| rng.random::<f64>().powi(3)).collect();
        let mut q: Vec<f64> = (0..20).map(|_| rng.random::<f64>().powi(3)).collect();
        let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
        p.iter_mut().for_each(|x| *x /= sp);
        q.iter_mut().for_each(|x| *x /= sq);
        let want: f64 = 0.5 * p.iter().zip(&q).map(|(a, b)| (a - b).abs()).sum::<f64>();
        let probs0: Vec<f32> = p.iter().map(|&x| x as f32).collect();
        let row: Vec<f32> = q.iter().map(|&x| (x as f32).ln()).collect();
        let got = Objective::TotalVariation.change(probs0[3], &probs0, &row, 3);
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
        let d = Objective::TargetProb.change(probs0[3], &probs0, &row, 3);
        assert!((d as f64 - (p[3] - q[3])).abs() < 1e-6);
    }

    /// Position KEY moves mass off the target; position OTHER only shuffles other tokens.
    struct TwoPositions {
        key: u32,
        other: u32,
    }
    const OTHER: usize = 9;
    impl NextTokenFn for TwoPositions {
        fn vocab_size(&self) -> usize {
            8
        }
        fn log_probs(&self, contexts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
            Ok(contexts
                .iter()
                .map(|c| {
                    let mut p = [0.6f32, 0.1, 0.1, 0.1, 0.05, 0.03, 0.01, 0.01];
                    if c[KEY] != self.key {
                        p[0] = 0.2;
                        p[1] = 0.5;
                    }
                    if c[OTHER] != self.other {
                        // The target keeps its probability; tokens 2 and 3 trade mass.
                        p[2] += 0.24;
                        p[4] -= 0.04;
                        p[3] -= 0.09;
                        p[1] -= 0.09;
                        p[5] -= 0.02;
                    }
                    p.iter().map(|x| x.ln()).collect()
                })
                .collect())
        }
    }
    let ctx = context();
    let f = TwoPositions {
        key: ctx[KEY],
        other: ctx[OTHER],
    };
    let run = |objective| -> Result<Vec<f32>> {
        let cfg = ReagentConfig {
            probes: 16,
            max_steps: 20,
            min_steps: 20,
            replacing_ratio: 0.2,
            readout: Readout::MaskDiff,
            objective,
            ..ReagentConfig::default()
        };
        Ok(Reagent::new(cfg, Arc::new(NextId))?
            .trace(&f, &ctx, 0, 0, &NoProgress)?
            .mean)
    };
    let tv = run(Objective::TotalVariation)?;
    let tp = run(Objective::TargetProb)?;
    let top2 = reagent::util::top_n(&tv, 2);
    assert!(top2.contains(&KEY) && top2.contains(&OTHER), "{tv:?}");
    assert_eq!(argmax(&tp), KEY);
    assert!(
        tp[OTHER] < 0.05,
        "target-prob credits a position it cannot see: {tp:?}"
    );
    Ok(())
}

/// The probability-only seam: ReAGent, occlusion (UNK) and random score from next-token
/// probabilities alone, with the same results as through the model; methods that need gradients
/// or attentions decline.
#[test]
fn probability_only_methods_run_through_the_seam() -> TestResult {
    let model = load_causal(
        fixture("models/llama_tied").to_str().unwrap(),
        &LoadOptions::default(),
    )?;
    let m = model.model.as_ref();
    let f = LmTarget(m);
    let settings = MethodSettings {
        reagent: ReagentConfig {
            probes: 3,
            max_steps: 10,
            ..ReagentConfig::default()
        },
        sampler: SamplerKind::Uniform,
        ig_steps: 4,
        ..MethodSettings::default()
    };
    let ctx: Vec<u32> = vec![5, 17, 42, 9, 33, 21];
    for kind in MethodKind::ALL {
        let a = registry::build(kind, &settings, &model, None)?;
        let black = a.attribute_black_box(&f, &ctx, 7, 2, &NoProgress);
        assert_eq!(black.is_some(), kind.probability_only(), "{kind:?}");
        if let Some(b) = black {
            let white = a.attribute(m, &ctx, 7, 2, &NoProgress)?;
            assert_eq!(b?.scores, white.scores, "{kind:?}");
        }
    }
    // Occluding a token id with UNK is occluding its embedding with UNK's, EOS kept in both
    // (the context holds the model's EOS, id 2, at position 3).
    let occ = reagent::method::occlusion::Occlusion::new(Some(0));
    let with_eos: Vec<u32> = vec![5, 17, 42, 2, 33, 21];
    assert_eq!(m.info().eos_token_ids.first(), Some(&2));
    for c in [&ctx, &with_eos] {
        let by_id = occ.drops(m, c, 7)?;
        let by_embedding = occ.embedding_drops(m, c, 7)?;
        for (a, b) in by_id.iter().zip(&by_embedding) {
            assert!((a - b).abs() < 1e-6, "{by_id:?} vs {by_embedding:?}");
        }
    }
    let black = registry::build(MethodKind::Occlusion, &settings, &model, None)?
        .attribute_black_box(&f, &with_eos, 7, 0, &NoProgress)
        .unwrap()?;
    assert_eq!(
        black.scores[3], 0.0,
        "the EOS position is kept, so it has no effect"
    );
    Ok(())
}

/// Contrastive attribution, `p(target) - p(contrast)`: ReAGent credits what moves either
/// probability; occlusion's drops are those of the difference; a gradient method's raw gradient
/// is the difference of the two gradients.
#[test]
fn contrastive_attribution() -> TestResult {
    use reagent::method::gradient::{gradients, Attributed};
    use reagent::method::Goal;

    /// Token 0 is likely while position KEY holds its token; token 1 while position OTHER does.
    struct Contrasted {
        key: u32,
        other: u32,
    }
    const OTHER: usize = 10;
    impl NextTokenFn for Contrasted {
        fn vocab_size(&self) -> usize {
            8
        }
        fn log_probs(&self, contexts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
            Ok(contexts
                .iter()
                .map(|c| {
                    let p0: f32 = if c[KEY] == self.key { 0.5 } else { 0.1 };
                    let p1: f32 = if c[OTHER] == self.other { 0.05 } else { 0.4 };
                    let rest = (1.0 - p0 - p1) / 6.0;
                    (0..8)
                        .map(|v| match v {
                            0 => p0.ln(),
                            1 => p1.ln(),
                            _ => rest.ln(),
                        })
                        .collect()
                })
                .collect())
        }
    }
    let ctx = context();
    let f = Contrasted {
        key: ctx[KEY],
        other: ctx[OTHER],
    };
    let cfg = ReagentConfig {
        probes: 16,
        max_steps: 12,
        min_steps: 12,
        replacing_ratio: 0.2,
        readout: Readout::MaskDiff,
        ..ReagentConfig::default()
    };
    let r = Reagent::new(cfg, Arc::new(NextId))?;
    let plain = r.trace(&f, &ctx, 0, 0, &NoProgress)?.mean;
    let goal = Goal {
        target: 0,
        contrast: Some(1),
    };
    let contrastive = r.trace_goal(&f, &ctx, goal, 0, &NoProgress)?.mean;
    assert_eq!(argmax(&plain), KEY);
    assert!(plain[OTHER] < 0.05, "{plain:?}");
    let top2 = reagent::util::top_n(&contrastive, 2);
    assert!(
        top2.contains(&KEY) && top2.contains(&OTHER),
        "{contrastive:?}"
    );

    // Occlusion and a gradient method on the tiny model.
    let model = load_causal(
        fixture("models/llama_tied").to_str().unwrap(),
        &LoadOptions::default(),
    )?;
    let m = model.model.as_ref();
    let ids: Vec<u32> = vec![5, 17, 42, 9, 33, 21];
    let goal = Goal {
        target: 7,
        contrast: Some(11),
    };
    let occ = reagent::method::occlusion::Occlusion::new(Some(0));
    let drops = occ.drops(m, &ids, goal)?;
    let (dt, dc) = (occ.drops(m, &ids, 7)?, occ.drops(m, &ids, 11)?);
    for i in 0..ids.len() {
        assert!((drops[i] - (dt[i] - dc[i])).abs() < 1e-6, "position {i}");
    }
    let x = m.embed(&candle_core::Tensor::new(ids.as_slice(), m.device())?.unsqueeze(0)?)?;
    let g = gradients(m, &x, goal, Attributed::Probability)?;
    let g7 = gradients(m, &x, 7u32, Attributed::Probability)?;
    let g11 = gradients(m, &x, 11u32, Attributed::Probability)?;
    let diff = (g - (g7 - g11)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    assert!(diff < 1e-6, "gradient of the difference differs by {diff}");
    // Methods without a contrastive form decline; the total variation refuses a contrast.
    let attention = registry::build(
        MethodKind::Attention,
        &MethodSettings::default(),
        &model,
        None,
    )?;
    assert!(attention
        .attribute_contrastive(m, &ids, goal, 0, &NoProgress)
        .is_none());
    let tv = Reagent::new(
        ReagentConfig {
            objective: reagent::method::reagent::Objective::TotalVariation,
            ..ReagentConfig::default()
        },
        Arc::new(NextId),
    )?;
    assert!(tv
        .trace_goal(
            &f,
            &ctx,
            Goal {
                target: 0,
                contrast: Some(1)
            },
            0,
            &NoProgress
        )
        .is_err());
    Ok(())
}

/// ReAGent reports each score's spread: the standard deviation across the averaged probes
/// (reference), or the effect's standard error on the scores' scale (mask difference).
#[test]
fn reagent_reports_the_spread_of_its_scores() -> TestResult {
    let ctx = context();
    let f = OnePosition { original: ctx[KEY] };
    let reference = Reagent::new(
        ReagentConfig {
            probes: 6,
            max_steps: 20,
            ..ReagentConfig::default()
        },
        Arc::new(NextId),
    )?
    .trace(&f, &ctx, 0, 0, &NoProgress)?;
    let spread = reference.spread.expect("the reference reports a spread");
    // By hand: the population standard deviation of the averaged probes.
    let used: Vec<&Vec<f32>> = reference
        .final_scores
        .iter()
        .zip(&reference.converged_step)
        .filter(|(_, c)| c.is_some())
        .map(|(s, _)| s)
        .collect();
    let used = if used.is_empty() {
        reference.final_scores.iter().collect()
    } else {
        used
    };
    for i in 0..ctx.len() {
        let m = used.iter().map(|s| s[i]).sum::<f32>() / used.len() as f32;
        let sd = (used.iter().map(|s| (s[i] - m).powi(2)).sum::<f32>() / used.len() as f32).sqrt();
        assert!((spread[i] - sd).abs() < 1e-6, "position {i}");
    }
    let pooled = Reagent::new(
        ReagentConfig {
            probes: 8,
            max_steps: 8,
            min_steps: 8,
            replacing_ratio: 0.2,
            readout: Readout::MaskDiff,
            ..ReagentConfig::default()
        },
        Arc::new(NextId),
    )?
    .trace(&f, &ctx, 0, 0, &NoProgress)?;
    let se = pooled
        .spread
        .expect("the mask difference reports standard errors");
    assert!(se.iter().all(|x| x.is_finite() && *x >= 0.0));
    // The decisive position's effect is many standard errors from zero.
    assert!(
        pooled.mean[KEY] > 5.0 * se[KEY],
        "{} vs {}",
        pooled.mean[KEY],
        se[KEY]
    );
    Ok(())
}
