//! Uncertainty for the evaluation summaries: percentile bootstrap intervals over examples, a
//! paired sign-flip permutation test, and the agreement of two rankings (Spearman's rho, top-k
//! overlap). Every resampling is seeded, so a summary is reproducible.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Bootstrap resamples per interval.
pub const RESAMPLES: usize = 2000;

/// A 95 % interval.
pub type Interval = (f64, f64);

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The 2.5 % and 97.5 % percentiles (linear interpolation) of `v`, which is sorted in place.
fn percentiles(v: &mut [f64]) -> Interval {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let x = q * (v.len() - 1) as f64;
        let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
    };
    (at(0.025), at(0.975))
}

/// Bootstrap interval of the mean of `xs` (per-example values). `None` for fewer than 2.
pub fn mean_interval(xs: &[f64], seed: u64) -> Option<Interval> {
    if xs.len() < 2 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = xs.len();
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| (0..n).map(|_| xs[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    Some(percentiles(&mut means))
}

/// Bootstrap interval of `ln(mean(a) / mean(b))` for paired per-example values (the same
/// examples resampled for both). Resamples where either mean is not positive are dropped; `None`
/// when more than 5 % are.
pub fn ln_ratio_interval(a: &[f64], b: &[f64], seed: u64) -> Option<Interval> {
    if a.len() < 2 || a.len() != b.len() {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = a.len();
    let mut out = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        let (mut sa, mut sb) = (0.0, 0.0);
        for _ in 0..n {
            let i = rng.random_range(0..n);
            sa += a[i];
            sb += b[i];
        }
        if sa > 0.0 && sb > 0.0 {
            out.push((sa / sb).ln());
        }
    }
    if out.len() < RESAMPLES * 95 / 100 {
        return None;
    }
    Some(percentiles(&mut out))
}

/// A paired comparison of two methods on the same examples.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Paired {
    /// Examples both methods have.
    pub n: usize,
    /// Mean of `a - b`.
    pub mean_diff: f64,
    /// Bootstrap 95 % interval of the mean difference.
    pub interval: Option<Interval>,
    /// Two-sided p-value of the sign-flip permutation test (exact below 16 examples).
    pub p_value: f64,
}

/// Compare paired values `a` and `b` (same length, same examples).
pub fn paired(a: &[f64], b: &[f64], seed: u64) -> Option<Paired> {
    if a.is_empty() || a.len() != b.len() {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len();
    let observed = mean(&d).abs();
    // A small tolerance so that ties with the observed statistic count as extreme.
    let tol = 1e-12 * (1.0 + observed);
    let p_value = if n < 16 {
        let total = 1usize << n;
        let extreme = (0..total)
            .filter(|signs| {
                let s: f64 = d
                    .iter()
                    .enumerate()
                    .map(|(i, x)| if signs >> i & 1 == 1 { -x } else { *x })
                    .sum();
                (s / n as f64).abs() >= observed - tol
            })
            .count();
        extreme as f64 / total as f64
    } else {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5151);
        let flips = 20_000;
        let extreme = (0..flips)
            .filter(|_| {
                let s: f64 = d
                    .iter()
                    .map(|x| if rng.random::<bool>() { -x } else { *x })
                    .sum();
                (s / n as f64).abs() >= observed - tol
            })
            .count();
        (extreme + 1) as f64 / (flips + 1) as f64
    };
    Some(Paired {
        n,
        mean_diff: mean(&d),
        interval: mean_interval(&d, seed),
        p_value,
    })
}

/// Ranks (average ranks for ties), 1-based.
fn ranks(v: &[f32]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation (Pearson on average ranks); `None` when either side is constant.
pub fn spearman(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let (ma, mb) = (mean(&ra), mean(&rb));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    (saa > 0.0 && sbb > 0.0).then(|| sab / (saa * sbb).sqrt())
}

/// How many of the `k` highest positions two score vectors share.
pub fn top_k_overlap(a: &[f32], b: &[f32], k: usize) -> usize {
    let ta = crate::util::top_n(a, k);
    let tb = crate::util::top_n(b, k);
    ta.iter().filter(|i| tb.contains(i)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_cover_the_mean_and_shrink_with_n() {
        let xs: Vec<f64> = (0..40).map(|i| (i % 7) as f64).collect();
        let (lo, hi) = mean_interval(&xs, 1).unwrap();
        let m = mean(&xs);
        assert!(lo < m && m < hi);
        let more: Vec<f64> = (0..400).map(|i| (i % 7) as f64).collect();
        let (lo2, hi2) = mean_interval(&more, 1).unwrap();
        assert!(hi2 - lo2 < (hi - lo) / 2.0);
        assert!(mean_interval(&[1.0], 1).is_none());
        assert_eq!(mean_interval(&[2.0, 2.0, 2.0], 1), Some((2.0, 2.0)));
    }

    #[test]
    fn ln_ratio_interval_of_a_doubling() {
        let b: Vec<f64> = (1..30).map(|i| i as f64).collect();
        let a: Vec<f64> = b.iter().map(|x| 2.0 * x).collect();
        let (lo, hi) = ln_ratio_interval(&a, &b, 3).unwrap();
        assert!((lo - 2f64.ln()).abs() < 1e-9 && (hi - 2f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn permutation_test_exact_values() {
        // All four differences positive: only the all-plus and all-minus sign patterns are as
        // extreme, p = 2/16.
        let p = paired(&[2.0, 3.0, 4.0, 5.0], &[1.0, 1.0, 1.0, 1.0], 0).unwrap();
        assert!((p.p_value - 0.125).abs() < 1e-12, "{p:?}");
        assert_eq!(p.mean_diff, 2.5);
        // No difference: p = 1.
        let p = paired(&[1.0, 2.0], &[1.0, 2.0], 0).unwrap();
        assert_eq!(p.p_value, 1.0);
        // Large n, a clear shift: tiny p; no shift: large p.
        let a: Vec<f64> = (0..50).map(|i| (i % 5) as f64 + 1.0).collect();
        let b: Vec<f64> = (0..50).map(|i| (i % 5) as f64).collect();
        assert!(paired(&a, &b, 0).unwrap().p_value < 0.001);
        let c: Vec<f64> = (0..50)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let z = vec![0.0; 50];
        assert!(paired(&c, &z, 0).unwrap().p_value > 0.5);
    }

    #[test]
    fn spearman_and_overlap() {
        let a = [0.1, 0.4, 0.3, 0.2];
        assert!((spearman(&a, &a).unwrap() - 1.0).abs() < 1e-12);
        let rev = [0.4, 0.1, 0.2, 0.3];
        assert!((spearman(&a, &rev).unwrap() + 1.0).abs() < 1e-12);
        // scipy.stats.spearmanr([1,2,2,3],[1,3,2,4]) = 0.9486832980505138
        let r = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((r - 0.948_683_298_050_513_8).abs() < 1e-12);
        assert!(spearman(&[1.0, 1.0], &[1.0, 2.0]).is_none());
        assert_eq!(top_k_overlap(&a, &[0.4, 0.3, 0.2, 0.1], 3), 2);
        assert_eq!(top_k_overlap(&a, &a, 3), 3);
    }
}
