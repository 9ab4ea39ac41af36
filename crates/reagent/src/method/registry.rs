//! One place that turns a method's name and settings into a built attributor, so the CLI, the
//! evaluation and (later) the Python bindings build methods the same way.

use serde::{Deserialize, Serialize};

use super::attention::{Attention, AttentionMethod};
use super::gradient::{Baseline, Gradient, GradientMethod};
use super::occlusion::{Occlusion, Random};
use super::reagent::{build_sampler, MlmPick, Reagent, ReagentConfig, SamplerKind};
use super::{Attributor, MethodKind};
use crate::model::{LoadedMaskedModel, LoadedModel};
use crate::Result;

/// Everything any method can be configured with; each method reads its own fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSettings {
    /// ReAGent's hyperparameters (its `seed` also seeds gradient SHAP and random).
    pub reagent: ReagentConfig,
    /// ReAGent's replacement sampler.
    pub sampler: SamplerKind,
    /// How the MLM sampler picks a prediction.
    pub mlm_pick: MlmPick,
    /// Integrated gradients: steps and baseline.
    pub ig_steps: usize,
    pub ig_baseline: Baseline,
    /// Gradient SHAP: samples and input-noise standard deviation.
    pub shap_samples: usize,
    pub shap_stdev: f64,
}

impl Default for MethodSettings {
    fn default() -> Self {
        MethodSettings {
            reagent: ReagentConfig::default(),
            sampler: SamplerKind::Pos,
            mlm_pick: MlmPick::Argmax,
            ig_steps: 50,
            ig_baseline: Baseline::Zero,
            shap_samples: 5,
            shap_stdev: 0.1,
        }
    }
}

impl MethodSettings {
    /// The settings any method reads, besides ReAGent's configuration fields.
    pub const KEYS: [&'static str; 6] = [
        "sampler",
        "mlm_pick",
        "ig_steps",
        "ig_baseline",
        "shap_samples",
        "shap_stdev",
    ];

    /// Settings from a ReAGent preset (see [`ReagentConfig::preset`]) and named options, as the
    /// command line's flags or Python's keyword arguments give them: ReAGent's configuration
    /// fields (`probes`, `replacing_ratio`, `readout`, ...) and [`MethodSettings::KEYS`]. Names
    /// and string values may use `-` for `_`. As with the flags, `keep_ratio` without
    /// `keep_top_n` sets `keep_top_n` to 0. Every error names the option; the result is
    /// validated.
    pub fn from_options(
        preset: &str,
        options: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self> {
        let mut s = MethodSettings {
            reagent: ReagentConfig::preset(preset)?,
            ..MethodSettings::default()
        };
        let named =
            |v: &serde_json::Value| -> Option<String> { v.as_str().map(|x| x.replace('-', "_")) };
        let bad = |k: &str, what: &str| crate::Error::input(format!("{k} must be {what}"));
        let mut keep_top_n_given = false;
        for (key, v) in options {
            let key = key.replace('-', "_");
            match key.as_str() {
                "sampler" => {
                    s.sampler = named(v).ok_or_else(|| bad("sampler", "a name"))?.parse()?
                }
                "mlm_pick" | "ig_baseline" => {
                    let n = named(v).ok_or_else(|| bad(&key, "a name"))?;
                    let e = |_| crate::Error::input(format!("{key}: unknown value `{n}`"));
                    let v = serde_json::Value::String(n.clone());
                    if key == "mlm_pick" {
                        s.mlm_pick = serde_json::from_value(v).map_err(e)?;
                    } else {
                        s.ig_baseline = serde_json::from_value(v).map_err(e)?;
                    }
                }
                "ig_steps" | "shap_samples" => {
                    let n = v
                        .as_u64()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad(&key, "a positive whole number"))?
                        as usize;
                    if key == "ig_steps" {
                        s.ig_steps = n;
                    } else {
                        s.shap_samples = n;
                    }
                }
                "shap_stdev" => {
                    s.shap_stdev = v
                        .as_f64()
                        .filter(|x| x.is_finite() && *x >= 0.0)
                        .ok_or_else(|| bad("shap_stdev", "a non-negative number"))?
                }
                _ => {
                    keep_top_n_given |= key == "keep_top_n";
                    s.reagent.set(&key, v.clone()).map_err(|e| match e {
                        crate::Error::InvalidInput(m) if m.starts_with("unknown ReAGent") => {
                            crate::Error::input(format!(
                                "unknown option `{key}` (known: {}, {})",
                                ReagentConfig::FIELDS.join(", "),
                                Self::KEYS.join(", ")
                            ))
                        }
                        e => e,
                    })?;
                }
            }
        }
        if s.reagent.keep_ratio.is_some() && !keep_top_n_given {
            s.reagent.keep_top_n = 0;
        }
        s.reagent.validate()?;
        Ok(s)
    }
}

/// Build `kind` for `model`. The MLM sampler needs `mlm`.
pub fn build(
    kind: MethodKind,
    s: &MethodSettings,
    model: &LoadedModel,
    mlm: Option<&LoadedMaskedModel>,
) -> Result<Box<dyn Attributor>> {
    let unk = model.tokenizer.unk_id();
    let seed = s.reagent.seed;
    Ok(match kind {
        MethodKind::Reagent => {
            let sampler = build_sampler(s.sampler, model, mlm, s.mlm_pick)?;
            Box::new(Reagent::new(s.reagent.clone(), sampler)?)
        }
        MethodKind::GradientNorm => {
            Box::new(Gradient::new(GradientMethod::GradientNorm, unk, seed)?)
        }
        MethodKind::InputXGradient => {
            Box::new(Gradient::new(GradientMethod::InputXGradient, unk, seed)?)
        }
        MethodKind::IntegratedGradients => Box::new(Gradient::new(
            GradientMethod::IntegratedGradients {
                n_steps: s.ig_steps,
                baseline: s.ig_baseline,
            },
            unk,
            seed,
        )?),
        MethodKind::GradientShap => Box::new(Gradient::new(
            GradientMethod::GradientShap {
                n_samples: s.shap_samples,
                stdev: s.shap_stdev,
                baselines: if unk.is_some() {
                    vec![Baseline::Zero, Baseline::Unk]
                } else {
                    vec![Baseline::Zero]
                },
            },
            unk,
            seed,
        )?),
        MethodKind::Attention => Box::new(Attention(AttentionMethod::Mean)),
        MethodKind::LastLayerAttention => Box::new(Attention(AttentionMethod::LastLayer)),
        MethodKind::AttentionRollout => Box::new(Attention(AttentionMethod::Rollout)),
        MethodKind::Occlusion => {
            let kept = super::gradient::unk_kept_token(model.model.info());
            Box::new(Occlusion::new(unk).keeping(kept))
        }
        MethodKind::Random => Box::new(Random { seed }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map, Value};

    fn opts(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn options_override_the_preset() {
        let s = MethodSettings::from_options(
            "paper-token",
            &opts(json!({"replacing-ratio": 0.2, "readout": "mask-diff", "sampler": "uniform", "ig_steps": 7})),
        )
        .unwrap();
        let mut want = ReagentConfig::paper_token();
        want.replacing_ratio = 0.2;
        want.readout = crate::method::reagent::Readout::MaskDiff;
        assert_eq!(s.reagent, want);
        assert_eq!(s.sampler, SamplerKind::Uniform);
        assert_eq!(s.ig_steps, 7);
        // keep_ratio alone turns keep_top_n off, as the flags do; with keep_top_n it is an error.
        let s = MethodSettings::from_options("inseq", &opts(json!({"keep_ratio": 0.5}))).unwrap();
        assert_eq!((s.reagent.keep_top_n, s.reagent.keep_ratio), (0, Some(0.5)));
        assert!(MethodSettings::from_options(
            "inseq",
            &opts(json!({"keep_ratio": 0.5, "keep_top_n": 3}))
        )
        .is_err());
    }

    #[test]
    fn bad_options_name_themselves() {
        let err = |p: &str, v: Value| {
            MethodSettings::from_options(p, &opts(v))
                .unwrap_err()
                .to_string()
        };
        assert!(err("nope", json!({})).starts_with("preset must be one of inseq"));
        assert!(err("inseq", json!({"probez": 3}))
            .starts_with("unknown option `probez` (known: probes"));
        assert!(err("inseq", json!({"probes": "many"})).starts_with("probes: invalid type"));
        assert!(err("inseq", json!({"probes": 0})).starts_with("probes must be at least 1"));
        assert!(err("inseq", json!({"replacing_ratio": 1.5}))
            .starts_with("replacing_ratio must be in (0, 1]"));
        assert!(err("inseq", json!({"sampler": "bogus"})).starts_with("sampler must be one of"));
        assert!(err("inseq", json!({"ig_steps": 0}))
            .starts_with("ig_steps must be a positive whole number"));
        assert!(err("inseq", json!({"readout": "bogus"})).starts_with("readout: unknown variant"));
    }
}
