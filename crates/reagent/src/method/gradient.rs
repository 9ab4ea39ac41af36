//! Gradient methods: gradient norm, input × gradient, integrated gradients, gradient SHAP.
//!
//! As inseq 0.7.1 runs them (`inseq/attr/feat/gradient_attribution.py` over Captum 0.9): the
//! attributed function is the target's probability `p(y | x)` (inseq's default
//! `probability`), differentiated with respect to the input embeddings (what
//! `get_input_embeddings()` returns). Vector attributions `[L, H]` become one score per token by
//! inseq's default reduction: the L2 norm over the hidden dimension, divided by the sum over
//! tokens (so scores are non-negative and sum to 1; signs are lost).
//!
//! Differences from inseq's defaults, following the project's brief and the ReAGent paper's code:
//! - gradient norm differentiates `log p(y | x)` (the paper's `norm`, `grad.py`), then applies
//!   the reduction above (the paper applied a softmax instead);
//! - integrated gradients default to a zero-embedding baseline (Captum's default; inseq uses
//!   the UNK token's embedding, available as [`Baseline::Unk`]);
//! - gradient SHAP draws from two baselines (zero and UNK embeddings) with input noise of
//!   standard deviation 0.1 ("noisy baselines"; inseq: the UNK baseline only, no noise).
//!
//! Gradients need dense weights: a quantized model is refused before any forward pass.

use candle_core::{IndexOp, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Attributor, Goal, MethodKind, Progress, Requirements, TargetScores};
use crate::model::{CausalLm, Outputs};
use crate::{Error, Result};

/// What the gradient is taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attributed {
    /// `p(y | x)`: inseq's default.
    Probability,
    /// `log p(y | x)`.
    LogProbability,
}

/// The reference input of integrated gradients, gradient SHAP and occlusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// All-zero embeddings (Captum's default).
    Zero,
    /// Each token's embedding replaced by the UNK token's (EOS tokens kept): inseq's default.
    Unk,
}

/// Rows per forward/backward batch.
const CHUNK: usize = 16;

/// Ids and shapes of one attribution.
pub(crate) struct Inputs {
    /// `[1, L, H]`
    pub embeds: Tensor,
    pub len: usize,
}

pub(crate) fn inputs(model: &dyn CausalLm, context: &[u32]) -> Result<Inputs> {
    if context.is_empty() {
        return Err(Error::input("the context is empty"));
    }
    let ids = Tensor::new(context, model.device())?.unsqueeze(0)?;
    Ok(Inputs {
        embeds: model.embed(&ids)?,
        len: context.len(),
    })
}

/// The token the UNK baseline leaves in place: the model's EOS, else its padding token.
pub fn unk_kept_token(info: &crate::model::ModelInfo) -> Option<u32> {
    info.eos_token_ids.first().copied().or(info.pad_token_id)
}

/// The baseline embeddings `[1, L, H]`.
pub(crate) fn baseline(
    kind: Baseline,
    model: &dyn CausalLm,
    context: &[u32],
    embeds: &Tensor,
    unk: Option<u32>,
) -> Result<Tensor> {
    match kind {
        Baseline::Zero => Ok(embeds.zeros_like()?),
        Baseline::Unk => {
            let unk = unk.ok_or_else(|| {
                Error::input("the tokenizer declares no UNK token, so the UNK baseline is unavailable; use the zero baseline")
            })?;
            let eos = unk_kept_token(model.info());
            let ids: Vec<u32> = context
                .iter()
                .map(|&id| if Some(id) == eos { id } else { unk })
                .collect();
            model.embed(&Tensor::new(ids.as_slice(), model.device())?.unsqueeze(0)?)
        }
    }
}

/// `f` of the target at each row of `inputs: [n, L, H]`, without gradients.
pub fn values(
    model: &dyn CausalLm,
    inputs: &Tensor,
    goal: impl Into<Goal>,
    f: Attributed,
) -> Result<Vec<f32>> {
    let goal = goal.into();
    let (n, l, _) = inputs.dims3()?;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(CHUNK) {
        let m = CHUNK.min(n - start);
        let x = inputs.narrow(0, start, m)?.detach();
        let lp = model
            .forward_embeds(&x, &vec![l; m], Outputs::default())?
            .last_log_probs;
        let apply = |v: f32| match f {
            Attributed::Probability => v.exp(),
            Attributed::LogProbability => v,
        };
        let t: Vec<f32> = lp.i((.., goal.target as usize))?.to_vec1()?;
        match goal.contrast {
            None => out.extend(t.into_iter().map(apply)),
            Some(c) => {
                let c: Vec<f32> = lp.i((.., c as usize))?.to_vec1()?;
                out.extend(t.into_iter().zip(c).map(|(a, b)| apply(a) - apply(b)));
            }
        }
    }
    Ok(out)
}

/// Gradients `[n, L, H]` of `f(target)` at each row of `inputs: [n, L, H]` (rows independent).
pub fn gradients(
    model: &dyn CausalLm,
    inputs: &Tensor,
    goal: impl Into<Goal>,
    f: Attributed,
) -> Result<Tensor> {
    let goal = goal.into();
    let (n, l, _) = inputs.dims3()?;
    let mut parts = Vec::new();
    for start in (0..n).step_by(CHUNK) {
        let m = CHUNK.min(n - start);
        let var = Var::from_tensor(&inputs.narrow(0, start, m)?.detach())?;
        let all = model
            .forward_embeds(var.as_tensor(), &vec![l; m], Outputs::default())?
            .last_log_probs;
        let apply = |id: u32| -> candle_core::Result<Tensor> {
            let lp = all.i((.., id as usize))?;
            match f {
                Attributed::Probability => lp.exp(),
                Attributed::LogProbability => Ok(lp),
            }
        };
        let y = match goal.contrast {
            None => apply(goal.target)?,
            Some(c) => (apply(goal.target)? - apply(c)?)?,
        };
        let grads = y.sum_all()?.backward()?;
        let g = grads
            .get(var.as_tensor())
            .ok_or_else(|| Error::Unsupported("no gradient reached the input embeddings".into()))?;
        parts.push(g.clone());
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// inseq's default reduction of `raw: [L, H]`: L2 norm per token, divided by the sum.
pub fn l2_normalized(raw: &Tensor) -> Result<Vec<f32>> {
    let norms: Vec<f32> = raw.sqr()?.sum(1)?.sqrt()?.to_vec1()?;
    let sum: f32 = norms.iter().map(|x| x.abs()).sum();
    Ok(norms.iter().map(|x| x / sum.max(1e-12)).collect())
}

/// Gauss–Legendre nodes and weights on `[0, 1]` (Captum's `gausslegendre` method:
/// `0.5 (1 + t)` and `0.5 w` of numpy's `leggauss(n)`), nodes ascending.
pub fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = vec![0f64; n];
    let mut weights = vec![0f64; n];
    for i in 0..n.div_ceil(2) {
        // Initial guess for the i-th largest root, then Newton on P_n.
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 0.0;
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0, x);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = p2;
            }
            let pn = if n == 0 { 1.0 } else { p1 };
            let pn1 = if n == 0 { 0.0 } else { p0 };
            dp = n as f64 * (x * pn - pn1) / (x * x - 1.0);
            let dx = pn / dp;
            x -= dx;
            if dx.abs() < 1e-16 {
                break;
            }
        }
        let w = 2.0 / ((1.0 - x * x) * dp * dp);
        nodes[n - 1 - i] = x;
        nodes[i] = -x;
        weights[n - 1 - i] = w;
        weights[i] = w;
    }
    (
        nodes.iter().map(|t| 0.5 * (1.0 + t)).collect(),
        weights.iter().map(|w| 0.5 * w).collect(),
    )
}

/// Which gradient method, with its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum GradientMethod {
    /// L2 norm per token of `d log p(y|x) / d embedding`.
    GradientNorm,
    /// `embedding ⊙ d p(y|x) / d embedding`.
    InputXGradient,
    /// `(x - b) ⊙ ∫ d p / d x` along the straight path from the baseline `b`.
    IntegratedGradients { n_steps: usize, baseline: Baseline },
    /// Captum's GradientShap: `n_samples` random points between a random baseline and the
    /// noisy input.
    GradientShap {
        n_samples: usize,
        stdev: f64,
        baselines: Vec<Baseline>,
    },
}

impl GradientMethod {
    pub fn integrated_gradients() -> Self {
        GradientMethod::IntegratedGradients {
            n_steps: 50,
            baseline: Baseline::Zero,
        }
    }

    pub fn gradient_shap() -> Self {
        GradientMethod::GradientShap {
            n_samples: 5,
            stdev: 0.1,
            baselines: vec![Baseline::Zero, Baseline::Unk],
        }
    }
}

/// The random draws of one gradient SHAP attribution (Captum's order: baseline rows, input
/// noise, path coefficients).
#[derive(Debug, Clone)]
pub struct ShapDraws {
    /// Which baseline each sample starts from.
    pub baseline_indices: Vec<usize>,
    /// `[n_samples, L, H]` noise added to the input, or none.
    pub noise: Option<Tensor>,
    /// Position along the path, per sample.
    pub coefficients: Vec<f32>,
}

/// A gradient method, ready to run.
pub struct Gradient {
    pub method: GradientMethod,
    /// The tokenizer's UNK id, for the UNK baseline.
    pub unk: Option<u32>,
    pub seed: u64,
}

impl Gradient {
    pub fn new(method: GradientMethod, unk: Option<u32>, seed: u64) -> Result<Self> {
        match &method {
            GradientMethod::IntegratedGradients { n_steps, .. } if *n_steps == 0 => {
                return Err(Error::input("integrated gradients need at least one step"))
            }
            GradientMethod::GradientShap {
                n_samples,
                baselines,
                stdev,
            } if *n_samples == 0 || baselines.is_empty() || stdev.is_nan() || *stdev < 0.0 => {
                return Err(Error::input(
                    "gradient SHAP needs at least one sample, one baseline and a non-negative noise deviation",
                ));
            }
            _ => {}
        }
        Ok(Gradient { method, unk, seed })
    }

    /// Draw gradient SHAP's random numbers for target `index`.
    pub fn shap_draws(
        &self,
        n_samples: usize,
        n_baselines: usize,
        stdev: f64,
        shape: (usize, usize),
        index: usize,
        model: &dyn CausalLm,
    ) -> Result<ShapDraws> {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ (index as u64).wrapping_mul(0x2545_F491_4F6C_DD1D),
        );
        let baseline_indices = (0..n_samples)
            .map(|_| rng.random_range(0..n_baselines))
            .collect();
        let noise = if stdev > 0.0 {
            let (l, h) = shape;
            let v: Vec<f32> = (0..n_samples * l * h)
                .map(|_| (normal(&mut rng) * stdev) as f32)
                .collect();
            Some(Tensor::from_vec(v, (n_samples, l, h), model.device())?)
        } else {
            None
        };
        let coefficients = (0..n_samples).map(|_| rng.random::<f64>() as f32).collect();
        Ok(ShapDraws {
            baseline_indices,
            noise,
            coefficients,
        })
    }

    /// Gradient SHAP with given draws (exposed for replaying recorded draws).
    pub fn gradient_shap(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        target: impl Into<Goal>,
        baselines: &[Baseline],
        draws: &ShapDraws,
    ) -> Result<(Tensor, Vec<f32>)> {
        let target = target.into();
        let x = inputs(model, context)?.embeds;
        let bases = baselines
            .iter()
            .map(|&b| baseline(b, model, context, &x, self.unk))
            .collect::<Result<Vec<_>>>()?;
        let n = draws.coefficients.len();
        let mut xs = Vec::with_capacity(n);
        let mut bs = Vec::with_capacity(n);
        for k in 0..n {
            let xk = match &draws.noise {
                Some(noise) => x.broadcast_add(&noise.i(k)?.unsqueeze(0)?)?,
                None => x.clone(),
            };
            xs.push(xk);
            bs.push(bases[draws.baseline_indices[k]].clone());
        }
        let xs = Tensor::cat(&xs, 0)?;
        let bs = Tensor::cat(&bs, 0)?;
        let r = Tensor::new(draws.coefficients.as_slice(), model.device())?.reshape((n, 1, 1))?;
        // z = r x + (1 - r) b
        let z = (xs.broadcast_mul(&r)? + bs.broadcast_mul(&(1.0 - &r)?)?)?;
        let g = gradients(model, &z, target, Attributed::Probability)?;
        let a = ((&xs - &bs)? * g)?;
        let raw = (a.sum(0)? * (1.0 / n as f64))?;
        Ok((raw.clone(), l2_normalized(&raw)?))
    }

    /// Integrated gradients: `(raw [L, H], convergence delta)`.
    pub fn integrated_gradients(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        target: impl Into<Goal>,
        n_steps: usize,
        kind: Baseline,
    ) -> Result<(Tensor, f32)> {
        let target = target.into();
        let x = inputs(model, context)?.embeds;
        let b = baseline(kind, model, context, &x, self.unk)?;
        let (alphas, weights) = gauss_legendre(n_steps);
        let diff = (&x - &b)?;
        let scaled: Vec<Tensor> = alphas
            .iter()
            .map(|&a| b.broadcast_add(&(&diff * (a as f32 as f64))?))
            .collect::<candle_core::Result<_>>()?;
        let g = gradients(
            model,
            &Tensor::cat(&scaled, 0)?,
            target,
            Attributed::Probability,
        )?;
        let w: Vec<f32> = weights.iter().map(|&w| w as f32).collect();
        let w = Tensor::new(w.as_slice(), model.device())?.reshape((n_steps, 1, 1))?;
        let total = g.broadcast_mul(&w)?.sum(0)?;
        let raw = (total * diff.squeeze(0)?)?;
        let ends = values(
            model,
            &Tensor::cat(&[&x, &b], 0)?,
            target,
            Attributed::Probability,
        )?;
        let delta = raw.sum_all()?.to_scalar::<f32>()? - (ends[0] - ends[1]);
        Ok((raw, delta))
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

impl Attributor for Gradient {
    fn kind(&self) -> MethodKind {
        match self.method {
            GradientMethod::GradientNorm => MethodKind::GradientNorm,
            GradientMethod::InputXGradient => MethodKind::InputXGradient,
            GradientMethod::IntegratedGradients { .. } => MethodKind::IntegratedGradients,
            GradientMethod::GradientShap { .. } => MethodKind::GradientShap,
        }
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            gradients: true,
            ..Requirements::default()
        }
    }

    fn config(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.method).unwrap_or_default();
        v["attributed"] = match self.method {
            GradientMethod::GradientNorm => "log_probability".into(),
            _ => "probability".into(),
        };
        v["reduction"] = "l2 norm over the hidden dimension, divided by the sum over tokens".into();
        v["seed"] = self.seed.into();
        v
    }

    fn attribute_contrastive(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        goal: Goal,
        index: usize,
        _progress: &dyn Progress,
    ) -> Option<Result<TargetScores>> {
        Some(self.scores(model, context, goal, index))
    }

    fn attribute(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        target: u32,
        index: usize,
        _progress: &dyn Progress,
    ) -> Result<TargetScores> {
        self.scores(model, context, target.into(), index)
    }
}

impl Gradient {
    /// The scores of `goal` (a target, or a target against a contrast).
    fn scores(
        &self,
        model: &dyn CausalLm,
        context: &[u32],
        target: Goal,
        index: usize,
    ) -> Result<TargetScores> {
        super::check_requirements(self.kind(), self.requirements(), model)?;
        match &self.method {
            GradientMethod::GradientNorm => {
                let x = inputs(model, context)?.embeds;
                let g = gradients(model, &x, target, Attributed::LogProbability)?.squeeze(0)?;
                Ok(TargetScores::plain(l2_normalized(&g)?).with_rows(1))
            }
            GradientMethod::InputXGradient => {
                let x = inputs(model, context)?.embeds;
                let g = gradients(model, &x, target, Attributed::Probability)?;
                Ok(TargetScores::plain(l2_normalized(&(x * g)?.squeeze(0)?)?).with_rows(1))
            }
            GradientMethod::IntegratedGradients { n_steps, baseline } => {
                let (raw, delta) =
                    self.integrated_gradients(model, context, target, *n_steps, *baseline)?;
                Ok(TargetScores {
                    convergence_delta: Some(delta),
                    ..TargetScores::plain(l2_normalized(&raw)?).with_rows(*n_steps)
                })
            }
            GradientMethod::GradientShap {
                n_samples,
                stdev,
                baselines,
            } => {
                let h = model.info().hidden_size;
                let x = inputs(model, context)?;
                let (l, h) = (x.len, x.embeds.dim(2).unwrap_or(h));
                let draws =
                    self.shap_draws(*n_samples, baselines.len(), *stdev, (l, h), index, model)?;
                let (_, scores) = self.gradient_shap(model, context, target, baselines, &draws)?;
                Ok(TargetScores::plain(scores).with_rows(draws.coefficients.len()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_integrates_polynomials() {
        let (x, w) = gauss_legendre(5);
        assert!(x.windows(2).all(|p| p[0] < p[1]));
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // ∫_0^1 t^7 dt = 1/8, exact for 5 nodes (degree <= 9).
        let i: f64 = x.iter().zip(&w).map(|(t, w)| w * t.powi(7)).sum();
        assert!((i - 0.125).abs() < 1e-12);
    }
}
