//! Fused CPU ops with backward passes, for the gradient path: f32 on the CPU, with an input
//! that tracks gradients (the gradient baselines differentiate with respect to the input
//! embeddings).
//!
//! Written with candle's composed ops, one RMSNorm is seven graph nodes and one attention about
//! twenty; candle's backward pass then allocates, zero-fills and adds a gradient buffer for
//! every node, which on a CPU costs more than the matrix products (STACK-NOTES pitfall 3). Each
//! op here is one node with a hand-written backward. Weights, masks and rotary tables are
//! captured in the op, not differentiated: the models are frozen.
//!
//! The forward kernels compute what the composed ops compute; `tests/model_parity.rs` checks the
//! gradients of every architecture against transformers.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{dot, Activation};

type R<T> = candle_core::Result<T>;

/// The f32 data of a contiguous CPU storage.
fn data<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> R<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// A copy of a tensor's f32 data (for the backward passes, whose inputs may be strided).
fn host(t: &Tensor) -> R<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

fn last_dim(l: &Layout) -> R<usize> {
    l.dims()
        .last()
        .copied()
        .ok_or_else(|| candle_core::Error::Msg("fused op: scalar input".into()))
}

/// Whether the fused gradient-path ops apply to these tensors.
pub(crate) fn applies(xs: &[&Tensor]) -> bool {
    xs.iter()
        .all(|x| x.device().is_cpu() && x.dtype() == candle_core::DType::F32)
        && xs.iter().any(|x| x.track_op())
}

/// `f(out_row, in_row)` over the rows of `x` (`width` wide; output rows `out_width` wide), in
/// parallel.
fn map_rows(
    x: &[f32],
    width: usize,
    out_width: usize,
    f: impl Fn(&mut [f32], &[f32]) + Sync,
) -> Vec<f32> {
    if width == 0 || out_width == 0 {
        return Vec::new();
    }
    let mut out = vec![0f32; x.len() / width * out_width];
    out.par_chunks_mut(out_width)
        .zip(x.par_chunks(width))
        .for_each(|(o, x)| f(o, x));
    out
}

/// The input gradient of a row-wise op: `f(dx_row, x_row, grad_row)` over the rows of the
/// input `x` (`width` wide) and of `grad` (`grad_width` wide), as a tensor shaped like `x`.
fn row_grads(
    x: &Tensor,
    grad: &Tensor,
    grad_width: usize,
    f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync,
) -> R<Option<Tensor>> {
    let width = x.dim(candle_core::D::Minus1)?;
    let (xs, gs) = (host(x)?, host(grad)?);
    let mut dx = vec![0f32; xs.len()];
    if width > 0 && grad_width > 0 {
        dx.par_chunks_mut(width)
            .zip(xs.par_chunks(width).zip(gs.par_chunks(grad_width)))
            .for_each(|(d, (x, g))| f(d, x, g));
    }
    Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
}

// ---------------------------------------------------------------------------------------------
// Normalisation

/// RMSNorm over the last dimension, `x / sqrt(mean(x^2) + eps) * w`.
pub(crate) struct RmsNormOp {
    pub w: Vec<f32>,
    pub eps: f32,
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp1 for RmsNormOp {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> R<(CpuStorage, Shape)> {
        let h = last_dim(l)?;
        let out = map_rows(data(s, l, self.name())?, h, h, |o, x| {
            let r = inv_rms(x, self.eps);
            for ((o, &x), &w) in o.iter_mut().zip(x).zip(&self.w) {
                *o = x * r * w;
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> R<Option<Tensor>> {
        let h = x.dim(candle_core::D::Minus1)?;
        row_grads(x, grad, h, |d, x, g| {
            // y_i = x_i r w_i with r = (mean x^2 + eps)^-1/2:
            // dx_i = r w_i g_i - x_i r^3 (sum_j w_j g_j x_j) / h
            let r = inv_rms(x, self.eps);
            let dot: f32 = x
                .iter()
                .zip(g)
                .zip(&self.w)
                .map(|((x, g), w)| x * g * w)
                .sum();
            let c = r * r * r * dot / h as f32;
            for (((d, &x), &g), &w) in d.iter_mut().zip(x).zip(g).zip(&self.w) {
                *d = r * w * g - x * c;
            }
        })
    }
}

/// LayerNorm over the last dimension with weight and bias.
pub(crate) struct LayerNormOp {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub eps: f32,
}

fn mean_inv_std(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp1 for LayerNormOp {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> R<(CpuStorage, Shape)> {
        let h = last_dim(l)?;
        let out = map_rows(data(s, l, self.name())?, h, h, |o, x| {
            let (mean, r) = mean_inv_std(x, self.eps);
            for (((o, &x), &w), &b) in o.iter_mut().zip(x).zip(&self.w).zip(&self.b) {
                *o = (x - mean) * r * w + b;
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> R<Option<Tensor>> {
        let h = x.dim(candle_core::D::Minus1)?;
        row_grads(x, grad, h, |d, x, g| {
            // with x^ = (x - mean) r and u = w g: dx = r (u - mean(u) - x^ mean(u x^))
            let (mean, r) = mean_inv_std(x, self.eps);
            let n = h as f32;
            let (mut su, mut sux) = (0f32, 0f32);
            for ((&x, &g), &w) in x.iter().zip(g).zip(&self.w) {
                let u = w * g;
                su += u;
                sux += u * (x - mean) * r;
            }
            let (mu, mux) = (su / n, sux / n);
            for (((d, &x), &g), &w) in d.iter_mut().zip(x).zip(g).zip(&self.w) {
                let xh = (x - mean) * r;
                *d = r * (w * g - mu - xh * mux);
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Activations

/// `act(z)` and `act'(z)`, for the activations with a fused gradient kernel.
#[inline]
fn act_and_slope(act: Activation, z: f32) -> (f32, f32) {
    match act {
        Activation::Silu => {
            let s = 1.0 / (1.0 + (-z).exp());
            (z * s, s * (1.0 + z * (1.0 - s)))
        }
        Activation::GeluTanh => {
            // 0.5 z (1 + tanh(a)), a = C (z + 0.044715 z^3)
            const C: f32 = 0.797_884_6;
            let t = (C * (z + 0.044715 * z * z * z)).tanh();
            let da = C * (1.0 + 3.0 * 0.044715 * z * z);
            (
                0.5 * z * (1.0 + t),
                0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * da,
            )
        }
        Activation::Relu => {
            if z > 0.0 {
                (z, 1.0)
            } else {
                (0.0, 0.0)
            }
        }
        Activation::GeluErf => unreachable!("no fused kernel for erf GELU"),
    }
}

/// Whether `act` has a fused gradient kernel (erf GELU keeps candle's ops).
pub(crate) fn fusable(act: Activation) -> bool {
    !matches!(act, Activation::GeluErf)
}

/// An element-wise activation.
pub(crate) struct ActOp(pub Activation);

impl CustomOp1 for ActOp {
    fn name(&self) -> &'static str {
        "fused-activation"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> R<(CpuStorage, Shape)> {
        let h = last_dim(l)?;
        let out = map_rows(data(s, l, self.name())?, h, h, |o, x| {
            for (o, &z) in o.iter_mut().zip(x) {
                *o = act_and_slope(self.0, z).0;
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> R<Option<Tensor>> {
        let h = x.dim(candle_core::D::Minus1)?;
        row_grads(x, grad, h, |d, x, g| {
            for ((d, &z), &g) in d.iter_mut().zip(x).zip(g) {
                *d = g * act_and_slope(self.0, z).1;
            }
        })
    }
}

/// `act(gate) * up` where the input `[.., 2n]` holds `gate` then `up`.
pub(crate) struct GatedOp(pub Activation);

impl CustomOp1 for GatedOp {
    fn name(&self) -> &'static str {
        "fused-gated-activation"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> R<(CpuStorage, Shape)> {
        let two_n = last_dim(l)?;
        let n = two_n / 2;
        let out = map_rows(data(s, l, self.name())?, two_n, n, |o, row| {
            let (g, u) = row.split_at(n);
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = act_and_slope(self.0, g).0 * u;
            }
        });
        let mut dims = l.dims().to_vec();
        *dims.last_mut().expect("rank >= 1") = n;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> R<Option<Tensor>> {
        let n = x.dim(candle_core::D::Minus1)? / 2;
        row_grads(x, grad, n, |d, row, g| {
            let (gate, up) = row.split_at(n);
            let (dgate, dup) = d.split_at_mut(n);
            for i in 0..n {
                let (a, da) = act_and_slope(self.0, gate[i]);
                dgate[i] = g[i] * up[i] * da;
                dup[i] = g[i] * a;
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding

/// Rotary embedding of `x: [b, h, t, d]` with tables `cos, sin: [t, d/2]` (rows = positions):
/// channel pairs `(i, i + d/2)`, or `(2i, 2i + 1)` when `interleaved`, are rotated by the
/// position's angle. The backward pass rotates the gradient back.
pub(crate) struct RopeOp {
    pub cos: std::sync::Arc<Vec<f32>>,
    pub sin: std::sync::Arc<Vec<f32>>,
    pub interleaved: bool,
}

impl RopeOp {
    /// Rotate `x: [heads, t, d]` in place (no parallelism: called per batch row).
    fn rotate_in_place(&self, x: &mut [f32], t: usize, d: usize, sign: f32) {
        let half = d / 2;
        for block in x.chunks_exact_mut(t * d) {
            for p in 0..t {
                let (c, s) = (&self.cos[p * half..][..half], &self.sin[p * half..][..half]);
                let row = &mut block[p * d..][..d];
                for i in 0..half {
                    let (a, b) = if self.interleaved {
                        (2 * i, 2 * i + 1)
                    } else {
                        (i, i + half)
                    };
                    let sn = sign * s[i];
                    let (xa, xb) = (row[a], row[b]);
                    row[a] = xa * c[i] - xb * sn;
                    row[b] = xb * c[i] + xa * sn;
                }
            }
        }
    }

    fn rotate(&self, x: &[f32], t: usize, d: usize, sign: f32) -> Vec<f32> {
        let mut out = x.to_vec();
        out.par_chunks_mut(t * d)
            .for_each(|block| self.rotate_in_place(block, t, d, sign));
        out
    }
}

impl CustomOp1 for RopeOp {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> R<(CpuStorage, Shape)> {
        let x = data(s, l, self.name())?;
        let (_, _, t, d) = l.shape().dims4()?;
        if self.cos.len() < t * (d / 2) {
            candle_core::bail!("fused-rope: tables shorter than the sequence");
        }
        Ok((
            CpuStorage::F32(self.rotate(x, t, d, 1.0)),
            l.shape().clone(),
        ))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> R<Option<Tensor>> {
        let (_, _, t, d) = x.dims4()?;
        let g = host(grad)?;
        let dx = self.rotate(&g, t, d, -1.0);
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

// ---------------------------------------------------------------------------------------------
// Attention

/// The scoring rule shared by the attention ops: an additive mask `[b, 1, t, t]` whose masked
/// entries equal `masked`, a scale, and optional soft-capping `cap * tanh(s / cap)`.
pub(crate) struct Scores {
    pub mask: Vec<f32>,
    pub masked: f32,
    pub scale: f32,
    pub softcap: Option<f32>,
}

/// Head layout of one batch row: `q: [h, t, d]`, `k: [kv_h, t, d]`, `v: [kv_h, t, dv]`;
/// query head `hi` reads kv head `hi / (h / kv_h)`.
#[derive(Clone, Copy)]
struct Heads {
    h: usize,
    kv_h: usize,
    t: usize,
    d: usize,
    dv: usize,
}

impl Scores {
    /// Query row `qi` of batch row `bi` against keys `kh: [t, d]`: the probabilities into `p`
    /// and the capped scores' slope `ds/dz` into `slope` (1 without a cap). Masked keys get
    /// probability 0.
    fn probs(&self, bi: usize, i: usize, qi: &[f32], kh: &[f32], p: &mut [f32], slope: &mut [f32]) {
        let t = p.len();
        let d = qi.len();
        let m = &self.mask[(bi * t + i) * t..][..t];
        let mut max = f32::NEG_INFINITY;
        for (j, (x, &mj)) in p.iter_mut().zip(m).enumerate() {
            if mj == self.masked {
                *x = f32::NEG_INFINITY;
                continue;
            }
            let mut s = dot(qi, &kh[j * d..(j + 1) * d]) * self.scale;
            if let Some(c) = self.softcap {
                let th = (s / c).tanh();
                slope[j] = 1.0 - th * th;
                s = th * c;
            } else {
                slope[j] = 1.0;
            }
            s += mj;
            *x = s;
            max = max.max(s);
        }
        let mut sum = 0f32;
        for x in p.iter_mut() {
            *x = if *x == f32::NEG_INFINITY {
                0.0
            } else {
                (*x - max).exp()
            };
            sum += *x;
        }
        let inv = 1.0 / sum;
        for x in p.iter_mut() {
            *x *= inv;
        }
    }

    /// Forward for batch row `bi`: `out: [t, h * dv]` and, on request, the probabilities
    /// `probs: [h, t, t]`.
    #[allow(clippy::too_many_arguments)]
    fn forward_row(
        &self,
        bi: usize,
        n: Heads,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
        mut probs: Option<&mut [f32]>,
    ) {
        let Heads { h, kv_h, t, d, dv } = n;
        let rep = h / kv_h;
        let (mut p, mut slope) = (vec![0f32; t], vec![0f32; t]);
        for hi in 0..h {
            let kvl = hi / rep;
            let qh = &q[hi * t * d..][..t * d];
            let kh = &k[kvl * t * d..][..t * d];
            let vh = &v[kvl * t * dv..][..t * dv];
            for i in 0..t {
                self.probs(bi, i, &qh[i * d..][..d], kh, &mut p, &mut slope);
                if let Some(pr) = probs.as_deref_mut() {
                    pr[(hi * t + i) * t..][..t].copy_from_slice(&p);
                }
                let oi = &mut out[(i * h + hi) * dv..][..dv];
                for (&w, vj) in p.iter().zip(vh.chunks_exact(dv)) {
                    if w != 0.0 {
                        for (a, &x) in oi.iter_mut().zip(vj) {
                            *a += w * x;
                        }
                    }
                }
            }
        }
    }

    /// Backward for batch row `bi`, given `go: [t, h * dv]`: accumulates into `dq`, `dk`, `dv`
    /// (laid out like `q`, `k`, `v`).
    #[allow(clippy::too_many_arguments)]
    fn backward_row(
        &self,
        bi: usize,
        n: Heads,
        (q, k, v): (&[f32], &[f32], &[f32]),
        go: &[f32],
        dq: &mut [f32],
        dk: &mut [f32],
        dvb: &mut [f32],
    ) {
        let Heads { h, kv_h, t, d, dv } = n;
        let rep = h / kv_h;
        let (mut p, mut slope, mut dp) = (vec![0f32; t], vec![0f32; t], vec![0f32; t]);
        for hi in 0..h {
            let kvl = hi / rep;
            let qh = &q[hi * t * d..][..t * d];
            let kh = &k[kvl * t * d..][..t * d];
            let vh = &v[kvl * t * dv..][..t * dv];
            for i in 0..t {
                let qi = &qh[i * d..][..d];
                self.probs(bi, i, qi, kh, &mut p, &mut slope);
                let goi = &go[(i * h + hi) * dv..][..dv];
                // dV_j += P_ij dO_i; dP_ij = dO_i . V_j
                let mut rowdot = 0f32;
                for j in 0..t {
                    if p[j] == 0.0 {
                        dp[j] = 0.0;
                        continue;
                    }
                    for (a, &g) in dvb[(kvl * t + j) * dv..][..dv].iter_mut().zip(goi) {
                        *a += p[j] * g;
                    }
                    dp[j] = dot(goi, &vh[j * dv..][..dv]);
                    rowdot += p[j] * dp[j];
                }
                // dZ_ij = P_ij (dP_ij - sum_j' P_ij' dP_ij') * cap slope * scale
                for j in 0..t {
                    if p[j] == 0.0 {
                        continue;
                    }
                    let dz = p[j] * (dp[j] - rowdot) * slope[j] * self.scale;
                    let kj = &kh[j * d..][..d];
                    for (a, &x) in dq[(hi * t + i) * d..][..d].iter_mut().zip(kj) {
                        *a += dz * x;
                    }
                    for (a, &x) in dk[(kvl * t + j) * d..][..d].iter_mut().zip(qi) {
                        *a += dz * x;
                    }
                }
            }
        }
    }
}

/// Attention over a whole batch of host data, `q: [b, h, t, d]`, `k: [b, kv_h, t, d]`,
/// `v: [b, kv_h, t, dv]`: the output `[b, t, h * dv]` and, when `want_probs`, the
/// probabilities `[b, h, t, t]` (else empty). One task per batch row.
pub(crate) fn attention_batch(
    scores: &Scores,
    (q, k, v): (&[f32], &[f32], &[f32]),
    (b, h, kv_h, t, d, dv): (usize, usize, usize, usize, usize, usize),
    want_probs: bool,
) -> R<(Vec<f32>, Vec<f32>)> {
    if scores.mask.len() != b * t * t || kv_h == 0 || h % kv_h != 0 {
        candle_core::bail!("attention: mask is not [b, 1, t, t] or heads do not group");
    }
    let n = Heads { h, kv_h, t, d, dv };
    let row = |bi: usize, o: &mut [f32], p: Option<&mut [f32]>| {
        scores.forward_row(
            bi,
            n,
            &q[bi * h * t * d..][..h * t * d],
            &k[bi * kv_h * t * d..][..kv_h * t * d],
            &v[bi * kv_h * t * dv..][..kv_h * t * dv],
            o,
            p,
        )
    };
    let mut out = vec![0f32; b * t * h * dv];
    let mut probs = Vec::new();
    if want_probs {
        probs = vec![0f32; b * h * t * t];
        out.par_chunks_mut(t * h * dv)
            .zip(probs.par_chunks_mut(h * t * t))
            .enumerate()
            .for_each(|(bi, (o, p))| row(bi, o, Some(p)));
    } else {
        out.par_chunks_mut(t * h * dv)
            .enumerate()
            .for_each(|(bi, o)| row(bi, o, None));
    }
    Ok((out, probs))
}

/// Scaled dot-product attention of `q: [b, h, t, d]` over `k: [b, kv_h, t, d]`,
/// `v: [b, kv_h, t, dv]` (grouped-query heads share kv heads by index). Output `[b, t, h * dv]`.
pub(crate) struct AttentionOp(pub Scores);

fn heads4(q: &Shape, k: &Shape, v: &Shape) -> R<(usize, Heads)> {
    let (b, h, t, d) = q.dims4()?;
    let kv_h = k.dims4()?.1;
    let dv = v.dims4()?.3;
    Ok((b, Heads { h, kv_h, t, d, dv }))
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> R<(CpuStorage, Shape)> {
        let (q, k, v) = (
            data(s1, l1, self.name())?,
            data(s2, l2, self.name())?,
            data(s3, l3, self.name())?,
        );
        let (b, Heads { h, kv_h, t, d, dv }) = heads4(l1.shape(), l2.shape(), l3.shape())?;
        let (out, _) = attention_batch(&self.0, (q, k, v), (b, h, kv_h, t, d, dv), false)?;
        Ok((CpuStorage::F32(out), Shape::from((b, t, h * dv))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> R<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, n) = heads4(q.shape(), k.shape(), v.shape())?;
        let Heads { h, kv_h, t, d, dv } = n;
        let (qs, ks, vs, gs) = (host(q)?, host(k)?, host(v)?, host(grad)?);
        let mut dq = vec![0f32; qs.len()];
        let mut dk = vec![0f32; ks.len()];
        let mut dvv = vec![0f32; vs.len()];
        // One task per batch row: its dq, dk and dv slices are disjoint from the others'.
        dq.par_chunks_mut(h * t * d)
            .zip(dk.par_chunks_mut(kv_h * t * d))
            .zip(dvv.par_chunks_mut(kv_h * t * dv))
            .enumerate()
            .for_each(|(bi, ((dq, dk), dvb))| {
                let row = (
                    &qs[bi * h * t * d..][..h * t * d],
                    &ks[bi * kv_h * t * d..][..kv_h * t * d],
                    &vs[bi * kv_h * t * dv..][..kv_h * t * dv],
                );
                let go = &gs[bi * t * h * dv..][..t * h * dv];
                self.0.backward_row(bi, n, row, go, dq, dk, dvb);
            });
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dvv, v.shape(), dev)?),
        ))
    }
}

/// A whole Llama-style attention from the fused projection `qkv: [b, t, (h + 2 kv_h) d]`:
/// split into heads, rotary embedding of `q` and `k` over the full head dimension, attention.
/// Output `[b, t, h * d]`. One graph node instead of about fifteen (narrows, reshapes,
/// transposes, copies, two rotations and the attention).
pub(crate) struct QkvAttentionOp {
    pub scores: Scores,
    pub rope: RopeOp,
    pub heads: usize,
    pub kv_heads: usize,
}

impl QkvAttentionOp {
    fn heads(&self, l: &Shape) -> R<(usize, Heads)> {
        let (b, t, w) = l.dims3()?;
        let (h, kv_h) = (self.heads, self.kv_heads);
        let d = w / (h + 2 * kv_h);
        if d * (h + 2 * kv_h) != w || d % 2 != 0 {
            candle_core::bail!("fused-qkv-attention: width {w} does not split into heads");
        }
        Ok((
            b,
            Heads {
                h,
                kv_h,
                t,
                d,
                dv: d,
            },
        ))
    }

    /// Batch row `qkv: [t, (h + 2 kv_h) d]` → rotated `q: [h, t, d]`, rotated `k`, and `v`
    /// (`[kv_h, t, d]` each).
    fn split(&self, n: Heads, qkv: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let Heads { h, kv_h, t, d, .. } = n;
        let w = (h + 2 * kv_h) * d;
        let gather = |first: usize, heads: usize| {
            let mut x = vec![0f32; heads * t * d];
            for hi in 0..heads {
                for i in 0..t {
                    x[(hi * t + i) * d..][..d]
                        .copy_from_slice(&qkv[i * w + (first + hi) * d..][..d]);
                }
            }
            x
        };
        let mut q = gather(0, h);
        let mut k = gather(h, kv_h);
        let v = gather(h + kv_h, kv_h);
        self.rope.rotate_in_place(&mut q, t, d, 1.0);
        self.rope.rotate_in_place(&mut k, t, d, 1.0);
        (q, k, v)
    }
}

impl CustomOp1 for QkvAttentionOp {
    fn name(&self) -> &'static str {
        "fused-qkv-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> R<(CpuStorage, Shape)> {
        let x = data(s, l, self.name())?;
        let (b, n) = self.heads(l.shape())?;
        let Heads { h, t, d, .. } = n;
        if self.scores.mask.len() != b * t * t || self.rope.cos.len() < t * d / 2 {
            candle_core::bail!("fused-qkv-attention: mask or rotary tables do not fit");
        }
        let w = x.len() / (b * t).max(1);
        let mut out = vec![0f32; b * t * h * d];
        out.par_chunks_mut(t * h * d)
            .enumerate()
            .for_each(|(bi, o)| {
                let (q, k, v) = self.split(n, &x[bi * t * w..][..t * w]);
                self.scores.forward_row(bi, n, &q, &k, &v, o, None);
            });
        Ok((CpuStorage::F32(out), Shape::from((b, t, h * d))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> R<Option<Tensor>> {
        let (_, n) = self.heads(x.shape())?;
        let Heads { h, kv_h, t, d, .. } = n;
        let w = (h + 2 * kv_h) * d;
        let (xs, gs) = (host(x)?, host(grad)?);
        let mut dx = vec![0f32; xs.len()];
        dx.par_chunks_mut(t * w).enumerate().for_each(|(bi, dxb)| {
            let (q, k, v) = self.split(n, &xs[bi * t * w..][..t * w]);
            let (mut dq, mut dk, mut dv) = (
                vec![0f32; q.len()],
                vec![0f32; k.len()],
                vec![0f32; v.len()],
            );
            let go = &gs[bi * t * h * d..][..t * h * d];
            self.scores
                .backward_row(bi, n, (&q, &k, &v), go, &mut dq, &mut dk, &mut dv);
            // Back through the rotations, then scatter into the fused layout.
            self.rope.rotate_in_place(&mut dq, t, d, -1.0);
            self.rope.rotate_in_place(&mut dk, t, d, -1.0);
            for (first, heads, g) in [(0, h, &dq), (h, kv_h, &dk), (h + kv_h, kv_h, &dv)] {
                for hi in 0..heads {
                    for i in 0..t {
                        dxb[i * w + (first + hi) * d..][..d]
                            .copy_from_slice(&g[(hi * t + i) * d..][..d]);
                    }
                }
            }
        });
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

#[cfg(test)]
mod tests {
    //! Each fused op against the same function written with candle's composed ops: values and
    //! input gradients of a random linear functional of the output.
    use super::*;
    use crate::model::nn;
    use candle_core::{Device, Var, D};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        // A small deterministic generator: no dependency on candle's RNG.
        let n: usize = shape.iter().product();
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Value and gradient of `sum(f(x) * r)` for a fixed random `r`.
    fn value_and_grad(x: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
        let var = Var::from_tensor(x).unwrap();
        let y = f(var.as_tensor());
        let r = rand(y.dims(), 99);
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads.get(var.as_tensor()).expect("a gradient").clone();
        (y.detach(), g)
    }

    fn check(
        name: &str,
        x: &Tensor,
        fused: impl Fn(&Tensor) -> Tensor,
        composed: impl Fn(&Tensor) -> Tensor,
    ) {
        let (y1, g1) = value_and_grad(x, fused);
        let (y2, g2) = value_and_grad(x, composed);
        let (dy, dg) = (max_diff(&y1, &y2), max_diff(&g1, &g2));
        assert!(dy < 1e-5, "{name}: values differ by {dy}");
        assert!(dg < 1e-4, "{name}: gradients differ by {dg}");
        assert!(
            max_diff(&g1, &g1.zeros_like().unwrap()) > 1e-3,
            "{name}: zero gradient"
        );
    }

    #[test]
    fn norms_match_composed_ops() {
        let x = rand(&[3, 5, 16], 1);
        let w = (rand(&[16], 2) + 1.5).unwrap();
        let b = rand(&[16], 3);
        let wv = w.to_vec1::<f32>().unwrap();
        check(
            "rms",
            &x,
            |x| {
                x.apply_op1(RmsNormOp {
                    w: wv.clone(),
                    eps: 1e-6,
                })
                .unwrap()
            },
            |x| {
                let ms = (x.sqr().unwrap().sum_keepdim(D::Minus1).unwrap() / 16.0).unwrap();
                x.broadcast_div(&(ms + 1e-6).unwrap().sqrt().unwrap())
                    .unwrap()
                    .broadcast_mul(&w)
                    .unwrap()
            },
        );
        let bv = b.to_vec1::<f32>().unwrap();
        check(
            "layer",
            &x,
            |x| {
                x.apply_op1(LayerNormOp {
                    w: wv.clone(),
                    b: bv.clone(),
                    eps: 1e-5,
                })
                .unwrap()
            },
            |x| {
                let mean = (x.sum_keepdim(D::Minus1).unwrap() / 16.0).unwrap();
                let xc = x.broadcast_sub(&mean).unwrap();
                let var = (xc.sqr().unwrap().sum_keepdim(D::Minus1).unwrap() / 16.0).unwrap();
                xc.broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
                    .unwrap()
                    .broadcast_mul(&w)
                    .unwrap()
                    .broadcast_add(&b)
                    .unwrap()
            },
        );
    }

    #[test]
    fn activations_match_composed_ops() {
        let x = (rand(&[4, 24], 4) * 3.0).unwrap();
        for act in [Activation::Silu, Activation::GeluTanh, Activation::Relu] {
            check(
                "act",
                &x,
                |x| x.apply_op1(ActOp(act)).unwrap(),
                |x| match act {
                    Activation::Silu => x.silu().unwrap(),
                    Activation::GeluTanh => x.gelu().unwrap(),
                    _ => x.relu().unwrap(),
                },
            );
            check(
                "gated",
                &x,
                |x| x.apply_op1(GatedOp(act)).unwrap(),
                |x| {
                    let g = x.narrow(D::Minus1, 0, 12).unwrap();
                    let u = x.narrow(D::Minus1, 12, 12).unwrap();
                    let a = match act {
                        Activation::Silu => g.silu().unwrap(),
                        Activation::GeluTanh => g.gelu().unwrap(),
                        _ => g.relu().unwrap(),
                    };
                    (a * u).unwrap()
                },
            );
        }
    }

    #[test]
    fn rope_matches_candle() {
        let (t, d) = (6, 8);
        let x = rand(&[2, 3, t, d], 5);
        let angles: Vec<f32> = (0..t * d / 2).map(|i| 0.37 * i as f32).collect();
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        let ct = Tensor::from_vec(cos.clone(), (t, d / 2), &Device::Cpu).unwrap();
        let st = Tensor::from_vec(sin.clone(), (t, d / 2), &Device::Cpu).unwrap();
        for interleaved in [false, true] {
            let op = || RopeOp {
                cos: std::sync::Arc::new(cos.clone()),
                sin: std::sync::Arc::new(sin.clone()),
                interleaved,
            };
            check(
                "rope",
                &x,
                |x| x.apply_op1(op()).unwrap(),
                |x| {
                    if interleaved {
                        candle_nn::rotary_emb::rope_i_slow(x, &ct, &st).unwrap()
                    } else {
                        candle_nn::rotary_emb::rope_slow(x, &ct, &st).unwrap()
                    }
                },
            );
        }
    }

    #[test]
    fn attention_matches_composed_ops() {
        // Grouped-query heads (4 query heads over 2 kv heads), a padded row, soft-capping.
        let (b, h, kv_h, t, d) = (2, 4, 2, 5, 8);
        let q = rand(&[b, h, t, d], 6);
        let k = rand(&[b, kv_h, t, d], 7);
        let v = rand(&[b, kv_h, t, d], 8);
        let mask = nn::Masks::new(&[5, 3], t, &Device::Cpu)
            .build(true, None)
            .unwrap();
        for softcap in [None, Some(0.5)] {
            // want_probs = true takes the composed path, false the fused op.
            let run = |q: &Tensor, k: &Tensor, v: &Tensor, composed: bool| {
                nn::attention_softcapped(q, k, v, &mask, 0.35, softcap, composed)
                    .unwrap()
                    .0
            };
            check(
                "attention q",
                &q,
                |q| run(q, &k, &v, false),
                |q| run(q, &k, &v, true),
            );
            check(
                "attention k",
                &k,
                |k| run(&q, k, &v, false),
                |k| run(&q, k, &v, true),
            );
            check(
                "attention v",
                &v,
                |v| run(&q, &k, v, false),
                |v| run(&q, &k, v, true),
            );
        }
    }

    #[test]
    fn qkv_attention_matches_composed_ops() {
        // 4 query heads over 2 kv heads of width 8, a padded row, both rotary layouts.
        let (b, h, kv_h, t, d) = (2, 4, 2, 5, 8);
        let qkv = rand(&[b, t, (h + 2 * kv_h) * d], 9);
        let mask = nn::Masks::new(&[5, 3], t, &Device::Cpu)
            .build(true, None)
            .unwrap();
        let angles: Vec<f32> = (0..t * d / 2).map(|i| 0.21 * i as f32).collect();
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        let ct = Tensor::from_vec(cos.clone(), (t, d / 2), &Device::Cpu).unwrap();
        let st = Tensor::from_vec(sin.clone(), (t, d / 2), &Device::Cpu).unwrap();
        for interleaved in [false, true] {
            let fused = |x: &Tensor| {
                let op = QkvAttentionOp {
                    scores: Scores {
                        mask: mask.flatten_all().unwrap().to_vec1().unwrap(),
                        masked: f32::MIN,
                        scale: 0.35,
                        softcap: None,
                    },
                    rope: RopeOp {
                        cos: std::sync::Arc::new(cos.clone()),
                        sin: std::sync::Arc::new(sin.clone()),
                        interleaved,
                    },
                    heads: h,
                    kv_heads: kv_h,
                };
                x.apply_op1(op).unwrap()
            };
            let composed = |x: &Tensor| {
                let part = |first: usize, n: usize| {
                    let p = x.narrow(D::Minus1, first * d, n * d).unwrap();
                    nn::split_heads(&p, n).unwrap().contiguous().unwrap()
                };
                let rot = |x: &Tensor| {
                    if interleaved {
                        candle_nn::rotary_emb::rope_i_slow(x, &ct, &st).unwrap()
                    } else {
                        candle_nn::rotary_emb::rope_slow(x, &ct, &st).unwrap()
                    }
                };
                let (q, k, v) = (rot(&part(0, h)), rot(&part(h, kv_h)), part(h + kv_h, kv_h));
                nn::attention_softcapped(&q, &k, &v, &mask, 0.35, None, true)
                    .unwrap()
                    .0
            };
            check("qkv attention", &qkv, fused, composed);
        }
    }
}
