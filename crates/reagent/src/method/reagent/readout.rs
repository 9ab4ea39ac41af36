//! How ReAGent's perturbations become scores.
//!
//! - [`Readout::Reference`]: the reference's read-out, the mean of the converged probes'
//!   `softmax(u)` (the recursive logit scores).
//! - [`Readout::MaskDiff`]: every update ReAGent drew is a random ablation with a known mask and
//!   a measured `d = p(y|x) - p(y|x~)`. A position's effect is the mean `d` over the updates that
//!   replaced it minus the mean `d` over those that kept it (a difference of means, as in a
//!   randomized experiment). Pooled over all probes and steps, so no update is wasted, and not
//!   swamped by how often a position happened to be drawn.
//! - [`Readout::Regression`]: the effects as the coefficients of a ridge regression of `d` on the
//!   masks with an intercept (ContextCite's surrogate, without its sparsity), on the same pooled
//!   updates.
//!
//! Both pooled read-outs report the positive part of the effects normalized to sum to 1 (the
//! scale of the reference's scores; all zero gives a uniform vector).

use serde::{Deserialize, Serialize};

/// Which read-out ReAGent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Readout {
    /// The reference's: the mean of the converged probes' recursive scores.
    #[default]
    Reference,
    /// Difference of mean `d` between the updates that replaced a position and those that kept it.
    MaskDiff,
    /// Ridge regression of `d` on the replacement masks.
    Regression,
}

impl Readout {
    pub const ALL: [Readout; 3] = [Readout::Reference, Readout::MaskDiff, Readout::Regression];

    pub fn name(&self) -> &'static str {
        match self {
            Readout::Reference => "reference",
            Readout::MaskDiff => "mask_diff",
            Readout::Regression => "regression",
        }
    }

    pub fn is_pooled(&self) -> bool {
        !matches!(self, Readout::Reference)
    }
}

impl std::str::FromStr for Readout {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        let s = s.replace('-', "_");
        Readout::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                crate::Error::input(format!(
                    "readout must be one of reference, mask_diff, regression; got `{s}`"
                ))
            })
    }
}

/// The pooled (mask, d) pairs of one run, with running sums for the difference of means.
#[derive(Debug, Clone)]
pub struct Pool {
    len: usize,
    masks: Vec<Vec<bool>>,
    ds: Vec<f32>,
    sum_replaced: Vec<f64>,
    sq_replaced: Vec<f64>,
    n_replaced: Vec<usize>,
    sum_all: f64,
    sq_all: f64,
}

impl Pool {
    pub fn new(len: usize) -> Self {
        Pool {
            len,
            masks: Vec::new(),
            ds: Vec::new(),
            sum_replaced: vec![0.0; len],
            sq_replaced: vec![0.0; len],
            n_replaced: vec![0; len],
            sum_all: 0.0,
            sq_all: 0.0,
        }
    }

    pub fn len(&self) -> usize {
        self.ds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ds.is_empty()
    }

    pub fn push(&mut self, mask: &[bool], d: f32) {
        debug_assert_eq!(mask.len(), self.len);
        for (i, &r) in mask.iter().enumerate() {
            if r {
                self.sum_replaced[i] += d as f64;
                self.sq_replaced[i] += (d as f64) * (d as f64);
                self.n_replaced[i] += 1;
            }
        }
        self.sum_all += d as f64;
        self.sq_all += (d as f64) * (d as f64);
        self.masks.push(mask.to_vec());
        self.ds.push(d);
    }

    /// Per position: mean `d` where replaced minus mean `d` where kept (0 where either set is
    /// empty: no evidence either way).
    pub fn mask_diff(&self) -> Vec<f64> {
        let n = self.ds.len();
        (0..self.len)
            .map(|i| {
                let nr = self.n_replaced[i];
                let nk = n - nr;
                if nr == 0 || nk == 0 {
                    return 0.0;
                }
                let sr = self.sum_replaced[i];
                sr / nr as f64 - (self.sum_all - sr) / nk as f64
            })
            .collect()
    }

    /// [`Pool::mask_diff`] shrunk towards 0 by `z` standard errors (Welch's, of the difference
    /// of the two means): `sign(e) * max(0, |e| - z * se)`. Positions whose effect is within
    /// noise get 0 instead of a share of the mass; with `z = 0` it is the plain difference.
    pub fn mask_diff_shrunk(&self, z: f64) -> Vec<f64> {
        let e = self.mask_diff();
        if z == 0.0 {
            return e;
        }
        e.iter()
            .zip(self.standard_errors())
            .map(|(&e, se)| e.signum() * (e.abs() - z * se).max(0.0))
            .collect()
    }

    /// Welch's standard error of each position's difference of means (0 where either side has
    /// fewer than two updates).
    pub fn standard_errors(&self) -> Vec<f64> {
        let n = self.ds.len();
        (0..self.len)
            .map(|i| {
                let (nr, nk) = (self.n_replaced[i], n - self.n_replaced[i]);
                if nr < 2 || nk < 2 {
                    return 0.0;
                }
                let var = |sum: f64, sq: f64, k: usize| {
                    let m = sum / k as f64;
                    ((sq - k as f64 * m * m) / (k - 1) as f64).max(0.0)
                };
                let sr = self.sum_replaced[i];
                let qr = self.sq_replaced[i];
                (var(sr, qr, nr) / nr as f64
                    + var(self.sum_all - sr, self.sq_all - qr, nk) / nk as f64)
                    .sqrt()
            })
            .collect()
    }

    /// Ridge regression `d ≈ b + sum_i w_i m_i`, the intercept unpenalized; returns `w`.
    /// `lambda` is scaled by the number of rows.
    pub fn regression(&self, lambda: f64) -> Vec<f64> {
        let l = self.len;
        let n = self.ds.len();
        if n == 0 {
            return vec![0.0; l];
        }
        // Normal equations on [1, m]: (X'X + n*lambda*I') beta = X'y.
        let dim = l + 1;
        let mut a = vec![0f64; dim * dim];
        let mut b = vec![0f64; dim];
        let mut idx = Vec::with_capacity(l + 1);
        for (mask, &d) in self.masks.iter().zip(&self.ds) {
            idx.clear();
            idx.push(0);
            idx.extend(
                mask.iter()
                    .enumerate()
                    .filter(|(_, &r)| r)
                    .map(|(i, _)| i + 1),
            );
            for &p in &idx {
                b[p] += d as f64;
                for &q in &idx {
                    a[p * dim + q] += 1.0;
                }
            }
        }
        let ridge = lambda * n as f64;
        for i in 1..dim {
            a[i * dim + i] += ridge;
        }
        // A tiny jitter on the intercept keeps the system positive definite when n is 1.
        a[0] += 1e-9;
        match cholesky_solve(&mut a, &mut b, dim) {
            true => b[1..].to_vec(),
            false => self.mask_diff(),
        }
    }
}

/// Solve `A x = b` in place for a symmetric positive definite `A` (row-major `n × n`); `false`
/// when `A` is not positive definite.
fn cholesky_solve(a: &mut [f64], b: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let mut s = a[j * n + j];
        for k in 0..j {
            s -= a[j * n + k] * a[j * n + k];
        }
        if s <= 0.0 || !s.is_finite() {
            return false;
        }
        let d = s.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i * n + k] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= a[k * n + i] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    true
}

/// The positive part normalized to sum to 1; uniform when nothing is positive.
pub fn positive_unit(effects: &[f64]) -> Vec<f32> {
    let pos: Vec<f64> = effects
        .iter()
        .map(|&e| if e.is_finite() && e > 0.0 { e } else { 0.0 })
        .collect();
    let s: f64 = pos.iter().sum();
    if s > 0.0 {
        pos.iter().map(|&e| (e / s) as f32).collect()
    } else {
        vec![1.0 / effects.len().max(1) as f32; effects.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// d = 0.5 * m_2 + 0.2 * m_0 + noise: both read-outs rank 2 first, 0 second.
    fn synthetic(n: usize) -> Pool {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut pool = Pool::new(5);
        for _ in 0..n {
            let m: Vec<bool> = (0..5).map(|_| rng.random::<f32>() < 0.3).collect();
            let noise = (rng.random::<f32>() - 0.5) * 0.05;
            let d = 0.5 * m[2] as u8 as f32 + 0.2 * m[0] as u8 as f32 + noise;
            pool.push(&m, d);
        }
        pool
    }

    #[test]
    fn mask_diff_recovers_effects() {
        // The other positions' effects are noise to a difference of means: its standard error
        // here is about 0.027, so allow three of them.
        let e = synthetic(400).mask_diff();
        assert!((e[2] - 0.5).abs() < 0.08, "{e:?}");
        assert!((e[0] - 0.2).abs() < 0.08, "{e:?}");
        assert!(
            e[1].abs() < 0.08 && e[3].abs() < 0.08 && e[4].abs() < 0.08,
            "{e:?}"
        );
    }

    #[test]
    fn shrinkage_zeroes_noise_and_keeps_real_effects() {
        let pool = synthetic(400);
        let plain = pool.mask_diff();
        let shrunk = pool.mask_diff_shrunk(2.0);
        // The two real effects survive, smaller by about two standard errors (~0.05).
        assert!(shrunk[2] > 0.35 && shrunk[2] < plain[2], "{shrunk:?}");
        assert!(shrunk[0] > 0.08 && shrunk[0] < plain[0], "{shrunk:?}");
        // Pure noise positions go to (or very near) zero.
        for i in [1, 3, 4] {
            assert!(shrunk[i].abs() < 0.02, "{shrunk:?}");
        }
        assert_eq!(pool.mask_diff_shrunk(0.0), plain);
    }

    #[test]
    fn regression_recovers_effects() {
        let w = synthetic(200).regression(1e-3);
        assert!((w[2] - 0.5).abs() < 0.02, "{w:?}");
        assert!((w[0] - 0.2).abs() < 0.02, "{w:?}");
        assert!(w[1].abs() < 0.02);
    }

    #[test]
    fn regression_matches_a_direct_solve() {
        // Two features, exact data: d = 1 + 2 m0 - m1 over all four masks.
        let mut pool = Pool::new(2);
        for (m0, m1) in [(false, false), (true, false), (false, true), (true, true)] {
            pool.push(&[m0, m1], 1.0 + 2.0 * m0 as u8 as f32 - m1 as u8 as f32);
        }
        let w = pool.regression(0.0);
        assert!(
            (w[0] - 2.0).abs() < 1e-6 && (w[1] + 1.0).abs() < 1e-6,
            "{w:?}"
        );
    }

    #[test]
    fn degenerate_pools_are_finite() {
        let mut pool = Pool::new(3);
        assert_eq!(pool.mask_diff(), vec![0.0; 3]);
        pool.push(&[true, true, true], 0.4);
        assert_eq!(pool.mask_diff(), vec![0.0; 3]);
        assert!(pool.regression(1e-3).iter().all(|w| w.is_finite()));
        let u = positive_unit(&[-1.0, 0.0, f64::NAN]);
        assert!(u.iter().all(|&x| (x - 1.0 / 3.0).abs() < 1e-7));
        let p = positive_unit(&[3.0, -1.0, 1.0]);
        assert_eq!(p, vec![0.75, 0.0, 0.25]);
    }

    #[test]
    fn names_round_trip() {
        for r in Readout::ALL {
            assert_eq!(r.name().parse::<Readout>().unwrap(), r);
        }
        assert!("mask-diff".parse::<Readout>().is_ok());
        assert!("nope".parse::<Readout>().is_err());
    }
}
