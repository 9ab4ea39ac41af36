//! Building blocks shared by the model files: linear layers, norms, rotary embeddings, masks and
//! the attention core.
//!
//! Every block has two paths. When the input tracks a gradient (`Tensor::track_op`), it uses
//! composed candle ops, which all have a backward pass; otherwise it uses candle's fused kernels,
//! which are faster but have none (STACK-NOTES pitfall 1: `softmax_last_dim`, `rms_norm` and
//! `layer_norm` drop the gradient silently). The two paths agree to float rounding.

use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Tensor, D};

pub mod bf16;
pub(crate) mod fused;

use crate::Result;

/// Softmax over the last dimension.
pub fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.track_op() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// Log-softmax over the last dimension (composed; always differentiable).
pub fn log_softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::log_softmax(x, D::Minus1)
}

/// The activations used by the supported architectures, named as in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu` / `swish`
    Silu,
    /// exact GELU (`gelu`)
    GeluErf,
    /// tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`)
    GeluTanh,
    /// `relu`
    Relu,
}

impl Activation {
    /// Parse a transformers `hidden_act` / `activation_function` name.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "silu" | "swish" => Activation::Silu,
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_python_tanh" => {
                Activation::GeluTanh
            }
            "relu" => Activation::Relu,
            other => {
                return Err(crate::Error::Unsupported(format!(
                    "activation function `{other}` is not supported"
                )))
            }
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if fused::fusable(*self) && fused::applies(&[x]) {
            return x.contiguous()?.apply_op1(fused::ActOp(*self));
        }
        match self {
            Activation::Silu => x.silu(),
            Activation::GeluErf => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
        }
    }
}

/// `x @ w^T` for a frozen dense weight `w` of shape `[out, in]`.
///
/// A custom op so that the backward pass computes the gradient of `x` only: candle's own matmul
/// backward always computes the weight gradient too (STACK-NOTES pitfall 3), a third of the
/// backward cost spent on a gradient nobody reads.
#[derive(Clone)]
struct FrozenMatmul {
    w: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        // Any rank: the leading dimensions are rows.
        let dims = l.shape().dims();
        let (lead, last) = dims.split_at(dims.len().saturating_sub(1));
        let (m, k): (usize, usize) = (lead.iter().product(), last.first().copied().unwrap_or(0));
        let x = match l.contiguous_offsets() {
            Some((a, b)) => &s.as_slice::<f32>()?[a..b],
            None => candle_core::bail!("frozen-matmul: input must be contiguous"),
        };
        let (ws, wl) = self.w.storage_and_layout();
        let (n, k2) = wl.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("frozen-matmul: shape mismatch x [{m}, {k}] w [{n}, {k2}]");
        }
        let w = match (&*ws, wl.contiguous_offsets()) {
            (candle_core::Storage::Cpu(c), Some((a, b))) => &c.as_slice::<f32>()?[a..b],
            _ => candle_core::bail!("frozen-matmul: weight must be a contiguous cpu tensor"),
        };
        let out = matmul_f32(x, w, m, n, k, candle_core::utils::get_num_threads());
        let mut out_dims = lead.to_vec();
        out_dims.push(n);
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let n = self.w.dim(0)?;
        let g = grad.reshape(((), n))?;
        Ok(Some(g.matmul(&self.w)?.reshape(x.shape())?))
    }
}

/// `x w^T` in f32 for a row-major `x: [m, k]` and `w: [n, k]`, as a row-major `[m, n]`: the
/// `gemm` crate's kernels (AVX-512 or AVX2, chosen at run time), on `threads` threads.
pub fn matmul_f32(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, threads: usize) -> Vec<f32> {
    assert!(
        x.len() == m * k && w.len() == n * k,
        "matmul_f32: x of {} values, w of {}, not [{m}, {k}] and [{n}, {k}]",
        x.len(),
        w.len()
    );
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: the output's capacity holds the [m, n] block at row stride n; gemm writes every
    // element of it, so the length can then be set.
    unsafe {
        gemm_xwt(
            out.spare_capacity_mut().as_mut_ptr() as *mut f32,
            n,
            x,
            w,
            m,
            n,
            k,
            threads,
        );
        out.set_len(m * n);
    }
    out
}

/// `dst[i·ld + j] = Σ_p x[i·k + p] · w[j·k + p]` for a row-major `x: [m, k]` and `w: [n, k]`:
/// the `gemm` crate's kernels (AVX-512 or AVX2, chosen at run time), on `threads` threads.
/// `dst` is only written (`read_dst = false`), every element of the `[m, n]` block.
///
/// # Safety
/// `dst` must be valid for writes at `i·ld + j` for every `i < m`, `j < n`, and not overlap
/// `x` or `w`; `x` and `w` must hold `m·k` and `n·k` values.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_xwt(
    dst: *mut f32,
    ld: usize,
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    threads: usize,
) {
    debug_assert!(x.len() >= m * k && w.len() >= n * k);
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller guarantees dst's extent; lhs is x [m, k] row-major (column stride 1,
    // row stride k); rhs = w^T read from the row-major w [n, k] (column stride k, row stride 1).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            ld as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Values of a quantized weight decoded to f32 at a time by [`matmul_quant_f32`] (16 MB): whole
/// matrices of a small model, 1,024 rows of a 4,096-wide one. Each panel is its own product, which
/// packs `x` again, so panels are kept large.
const QUANT_PANEL_VALUES: usize = 1 << 22;

/// `x w^T` in f32 for a weight kept in its quantized blocks (`w: [n, k]`): panels of rows (at
/// most [`QUANT_PANEL_VALUES`] values) are decoded to f32 (the values a dense load gives) and
/// multiplied by the same `gemm` kernels as [`matmul_f32`], writing their columns of the `[m, n]`
/// output. Only one
/// panel is ever dense, so memory stays near the blocks' size; decoding costs `n·k` operations
/// against the product's `m·n·k`.
pub fn matmul_quant_f32(q: &bf16::QuantBf16, x: &[f32], m: usize, threads: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let (n, k) = bf16::Bf16Matmul::dims(q);
    assert!(
        x.len() == m * k,
        "matmul_quant_f32: x of {} values, not [{m}, {k}]",
        x.len()
    );
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let dst = out.spare_capacity_mut().as_mut_ptr() as *mut f32;
    let panel_rows = (QUANT_PANEL_VALUES / k).max(32).min(n);
    let mut panel = vec![0f32; panel_rows * k];
    for j0 in (0..n).step_by(panel_rows) {
        let cols = panel_rows.min(n - j0);
        let rows = &mut panel[..cols * k];
        if threads > 1 {
            rows.par_chunks_mut(k)
                .enumerate()
                .for_each(|(c, o)| q.dequantize_row(j0 + c, o));
        } else {
            for (c, o) in rows.chunks_mut(k).enumerate() {
                q.dequantize_row(j0 + c, o);
            }
        }
        // SAFETY: columns j0..j0 + cols of the row-major [m, n] output (row stride n) lie
        // inside `out`'s capacity; the panel is [cols, k] and x [m, k].
        unsafe { gemm_xwt(dst.add(j0), n, x, rows, m, cols, k, threads) };
    }
    // SAFETY: the panels' blocks cover every column of every row of the [m, n] output once.
    unsafe { out.set_len(m * n) };
    out
}

/// The weight of a linear layer: dense f32, or quantized (GGUF, forward only).
#[derive(Clone)]
pub enum Weight {
    Dense(Tensor),
    Quantized(Arc<QMatMul>),
    /// Rounded to bf16 and packed for the bf16 kernel (forward only; see [`bf16`]).
    Bf16(Arc<bf16::PackedBf16>),
    /// Quantized blocks unpacked to bf16 a panel at a time (forward only; see
    /// [`bf16::QuantBf16`]).
    QuantBf16(Arc<bf16::QuantBf16>),
    /// Quantized blocks decoded to f32 a panel at a time for the f32 kernel (forward only; see
    /// [`matmul_quant_f32`]): any CPU, the dense f32 path's speed, the blocks' memory.
    QuantF32(Arc<bf16::QuantBf16>),
}

/// A linear layer `y = x W^T + b` with `W: [out, in]`.
#[derive(Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
    out_dim: usize,
}

impl Linear {
    pub fn new(weight: Weight, bias: Option<Tensor>, out_dim: usize) -> Self {
        Linear {
            weight,
            bias,
            out_dim,
        }
    }

    /// The same layer with its dense weight rounded to bf16 and packed (the f32 weight is
    /// dropped): forwards only, no gradients.
    pub fn into_bf16(mut self) -> candle_core::Result<Self> {
        if let Weight::Dense(w) = &self.weight {
            let (n, k) = w.dims2()?;
            let data = w.flatten_all()?.to_vec1::<f32>()?;
            self.weight = Weight::Bf16(Arc::new(bf16::PackedBf16::pack(&data, n, k)));
        }
        Ok(self)
    }

    /// `x W^T` with a bf16 weight.
    fn forward_bf16(
        &self,
        x: &Tensor,
        packed: &dyn bf16::Bf16Matmul,
    ) -> candle_core::Result<Tensor> {
        if x.track_op() {
            candle_core::bail!(
                "a bf16 weight has no backward pass; load the model in f32 for gradients"
            );
        }
        let dims = x.dims();
        let (lead, last) = dims.split_at(dims.len().saturating_sub(1));
        let m: usize = lead.iter().product();
        let (n, k) = packed.dims();
        if last != [k] {
            candle_core::bail!("bf16 matmul: input {dims:?}, weight [{n}, {k}]");
        }
        let x = x.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let data = match (&*storage, layout.contiguous_offsets()) {
            (candle_core::Storage::Cpu(c), Some((a, b))) => &c.as_slice::<f32>()?[a..b],
            _ => candle_core::bail!("bf16 matmul: input must be a contiguous cpu tensor"),
        };
        let parallel = candle_core::utils::get_num_threads() > 1;
        let Some(y) = packed.matmul(data, m, parallel) else {
            candle_core::bail!("bf16 matmul: this CPU lacks AVX512-BF16");
        };
        let mut out_dims = lead.to_vec();
        out_dims.push(n);
        Tensor::from_vec(y, out_dims, x.device())
    }

    pub fn is_quantized(&self) -> bool {
        matches!(
            self.weight,
            Weight::Quantized(_) | Weight::QuantBf16(_) | Weight::QuantF32(_)
        )
    }

    /// One layer computing all of `parts` at once (their outputs concatenated), when all are
    /// dense and agree on having a bias: one larger matrix product instead of several.
    pub fn fuse(parts: &[&Linear]) -> candle_core::Result<Option<Linear>> {
        let mut ws = Vec::with_capacity(parts.len());
        let in_bf16 = parts.iter().all(|p| matches!(p.weight, Weight::Bf16(_)));
        for p in parts {
            match &p.weight {
                Weight::Dense(w) if !in_bf16 => ws.push(w.clone()),
                // bf16 values are exact in f32: unpacked, joined and packed again, they are
                // the same numbers.
                Weight::Bf16(b) if in_bf16 => {
                    let (n, k) = b.dims();
                    ws.push(Tensor::from_vec(
                        b.unpack(),
                        (n, k),
                        &candle_core::Device::Cpu,
                    )?)
                }
                _ => return Ok(None),
            }
        }
        let with_bias = parts.iter().filter(|p| p.bias.is_some()).count();
        let bias = if with_bias == parts.len() {
            let bs: Vec<&Tensor> = parts.iter().filter_map(|p| p.bias.as_ref()).collect();
            Some(Tensor::cat(&bs, 0)?)
        } else if with_bias == 0 {
            None
        } else {
            return Ok(None);
        };
        let out_dim = parts.iter().map(|p| p.out_dim).sum();
        let fused = Linear::new(
            Weight::Dense(Tensor::cat(&ws, 0)?.contiguous()?),
            bias,
            out_dim,
        );
        Ok(Some(if in_bf16 { fused.into_bf16()? } else { fused }))
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let packed: Option<&dyn bf16::Bf16Matmul> = match &self.weight {
            Weight::Bf16(p) => Some(p.as_ref()),
            Weight::QuantBf16(q) => Some(q.as_ref()),
            _ => None,
        };
        if let Some(packed) = packed {
            let y = self.forward_bf16(x, packed)?;
            return match &self.bias {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            };
        }
        let dims = x.dims();
        let (lead, k) = dims.split_at(dims.len() - 1);
        let m: usize = lead.iter().product();
        if let Weight::QuantF32(q) = &self.weight {
            if x.track_op() {
                candle_core::bail!(
                    "a quantized weight has no backward pass; load the model dense for gradients"
                );
            }
            let (n, kq) = bf16::Bf16Matmul::dims(q.as_ref());
            if k != [kq] {
                candle_core::bail!("quantized matmul: input {dims:?}, weight [{n}, {kq}]");
            }
            let x = x.contiguous()?;
            let (storage, layout) = x.storage_and_layout();
            let data = match (&*storage, layout.contiguous_offsets()) {
                (candle_core::Storage::Cpu(c), Some((a, b))) => &c.as_slice::<f32>()?[a..b],
                _ => candle_core::bail!("quantized matmul: input must be a contiguous cpu tensor"),
            };
            let y = matmul_quant_f32(q, data, m, candle_core::utils::get_num_threads());
            let mut out_dims = lead.to_vec();
            out_dims.push(n);
            let y = Tensor::from_vec(y, out_dims, x.device())?;
            return match &self.bias {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            };
        }
        if let Weight::Dense(w) = &self.weight {
            if x.device().is_cpu() && x.dtype() == DType::F32 {
                // Any rank in and out: no reshape nodes in the gradient graph.
                let y = x.contiguous()?.apply_op1(FrozenMatmul { w: w.clone() })?;
                return match &self.bias {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                };
            }
        }
        let x2 = x.reshape((m, k[0]))?;
        let y = match &self.weight {
            Weight::Dense(w) => x2.contiguous()?.matmul(&w.t()?)?,
            Weight::Quantized(q) => q.forward(&x2)?,
            Weight::Bf16(p) => self.forward_bf16(&x2, p.as_ref())?,
            Weight::QuantBf16(q) => self.forward_bf16(&x2, q.as_ref())?,
            Weight::QuantF32(_) => unreachable!("handled above"),
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = lead.to_vec();
        out_dims.push(self.out_dim);
        y.reshape(out_dims)
    }
}

/// Several projections of the same input (q/k/v, or gate/up), run as one fused matrix product
/// when the weights allow it.
#[derive(Clone)]
pub struct Projections {
    fused: Option<Linear>,
    /// The separate layers, kept only when they could not be fused.
    parts: Vec<Linear>,
    sizes: Vec<usize>,
}

impl Projections {
    pub fn new(parts: Vec<Linear>) -> candle_core::Result<Self> {
        let refs: Vec<&Linear> = parts.iter().collect();
        let fused = Linear::fuse(&refs)?;
        let sizes = parts.iter().map(|p| p.out_dim).collect();
        // The fused weight is a copy: the parts' weights would only take memory.
        let parts = if fused.is_some() { Vec::new() } else { parts };
        Ok(Projections {
            fused,
            parts,
            sizes,
        })
    }

    /// The projections kept apart, each its own matrix product (as the upstream model runs
    /// them, where that is the reference's numerics).
    pub fn separate(parts: Vec<Linear>) -> Self {
        let sizes = parts.iter().map(|p| p.out_dim).collect();
        Projections {
            fused: None,
            parts,
            sizes,
        }
    }

    /// q, k and v (this holds those three projections) of `x`, split into heads
    /// `[b, heads, t, d]`: `heads` for the queries, `kv_heads` for the keys and values.
    pub fn qkv_heads(
        &self,
        x: &Tensor,
        heads: usize,
        kv_heads: usize,
    ) -> candle_core::Result<[Tensor; 3]> {
        let [q, k, v]: [Tensor; 3] = self.forward(x)?.try_into().expect("three projections");
        Ok([
            split_heads(&q, heads)?,
            split_heads(&k, kv_heads)?,
            split_heads(&v, kv_heads)?,
        ])
    }

    /// The outputs, concatenated along the last dimension.
    pub fn forward_cat(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.fused {
            Some(f) => f.forward(x),
            None => {
                let outs = self
                    .parts
                    .iter()
                    .map(|p| p.forward(x))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&outs, D::Minus1)
            }
        }
    }

    /// The outputs, one per part.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        match &self.fused {
            Some(f) => {
                let y = f.forward(x)?;
                let mut at = 0;
                self.sizes
                    .iter()
                    .map(|&n| {
                        let part = y.narrow(D::Minus1, at, n);
                        at += n;
                        part
                    })
                    .collect()
            }
            None => self.parts.iter().map(|p| p.forward(x)).collect(),
        }
    }
}

/// RMSNorm, `x / sqrt(mean(x^2) + eps) * w`. For Gemma's `(1 + w)` convention the loader passes
/// `1 + w` as the weight.
#[derive(Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        RmsNorm { weight, eps }
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if fused::applies(&[x]) {
            let w = self.weight.to_vec1::<f32>()?;
            return x.contiguous()?.apply_op1(fused::RmsNormOp {
                w,
                eps: self.eps as f32,
            });
        }
        if x.track_op() {
            let hidden = x.dim(D::Minus1)? as f64;
            let ms = (x.sqr()?.sum_keepdim(D::Minus1)? / hidden)?;
            x.broadcast_div(&(ms + self.eps)?.sqrt()?)?
                .broadcast_mul(&self.weight)
        } else {
            candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps as f32)
        }
    }
}

/// LayerNorm with weight and bias.
#[derive(Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        LayerNorm { weight, bias, eps }
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if fused::applies(&[x]) {
            return x.contiguous()?.apply_op1(fused::LayerNormOp {
                w: self.weight.to_vec1::<f32>()?,
                b: self.bias.to_vec1::<f32>()?,
                eps: self.eps as f32,
            });
        }
        if x.track_op() {
            let hidden = x.dim(D::Minus1)? as f64;
            let mean = (x.sum_keepdim(D::Minus1)? / hidden)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = (xc.sqr()?.sum_keepdim(D::Minus1)? / hidden)?;
            xc.broadcast_div(&(var + self.eps)?.sqrt()?)?
                .broadcast_mul(&self.weight)?
                .broadcast_add(&self.bias)
        } else {
            candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps as f32)
        }
    }
}

/// A token or position embedding table `[n, dim]`: dense, or kept in its quantized blocks
/// (GGUF, `--quantized`) and dequantized row by row when looked up (the same values).
#[derive(Clone)]
pub struct Embedding {
    table: Table,
}

#[derive(Clone)]
enum Table {
    Dense(Tensor),
    Quantized {
        blocks: Arc<bf16::QuantBf16>,
        device: candle_core::Device,
    },
}

impl Embedding {
    pub fn new(table: Tensor) -> Self {
        Embedding {
            table: Table::Dense(table),
        }
    }

    /// Rows kept in their quantized blocks.
    pub fn quantized(blocks: Arc<bf16::QuantBf16>, device: &candle_core::Device) -> Self {
        Embedding {
            table: Table::Quantized {
                blocks,
                device: device.clone(),
            },
        }
    }

    /// The dense table; `None` when the rows are kept quantized.
    pub fn table(&self) -> Option<&Tensor> {
        match &self.table {
            Table::Dense(t) => Some(t),
            Table::Quantized { .. } => None,
        }
    }

    /// `(rows, dim)`.
    pub fn dims(&self) -> candle_core::Result<(usize, usize)> {
        match &self.table {
            Table::Dense(t) => t.dims2(),
            Table::Quantized { blocks, .. } => Ok(bf16::Bf16Matmul::dims(blocks.as_ref())),
        }
    }

    pub fn device(&self) -> &candle_core::Device {
        match &self.table {
            Table::Dense(t) => t.device(),
            Table::Quantized { device, .. } => device,
        }
    }

    /// `ids: [..]` (u32) → `[.., dim]`.
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (rows, dim) = self.dims()?;
        let mut dims = ids.dims().to_vec();
        dims.push(dim);
        match &self.table {
            Table::Dense(t) => t.index_select(&ids.flatten_all()?, 0)?.reshape(dims),
            Table::Quantized { blocks, device } => {
                let ids = ids.flatten_all()?.to_vec1::<u32>()?;
                let mut out = vec![0f32; ids.len() * dim];
                for (&i, o) in ids.iter().zip(out.chunks_mut(dim)) {
                    let i = i as usize;
                    if i >= rows {
                        candle_core::bail!("token id {i} is outside the embedding's {rows} rows");
                    }
                    blocks.dequantize_row(i, o);
                }
                Tensor::from_vec(out, dims, device)
            }
        }
    }
}

impl Module for Embedding {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Embedding::forward(self, xs)
    }
}

/// How inverse frequencies of a rotary embedding are scaled (`rope_scaling` /
/// `rope_parameters` in `config.json`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Divide all frequencies by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama 3.1's piecewise scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

impl RopeScaling {
    /// Parse a transformers `rope_scaling` / `rope_parameters` object (`null` → none).
    pub fn from_json(v: Option<&serde_json::Value>) -> Result<Self> {
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return Ok(RopeScaling::None);
        };
        let kind = v
            .get("rope_type")
            .or_else(|| v.get("type"))
            .and_then(|t| t.as_str())
            .unwrap_or("default");
        let num = |k: &str| -> Result<f64> {
            v.get(k).and_then(|x| x.as_f64()).ok_or_else(|| {
                crate::Error::missing(format!("rope scaling key `{k}`"), "config.json")
            })
        };
        Ok(match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: num("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            },
            other => {
                return Err(crate::Error::Unsupported(format!(
                "rope scaling type `{other}` is not supported (supported: default, linear, llama3)"
            )))
            }
        })
    }

    fn apply(&self, inv_freq: &mut [f32]) {
        match *self {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => {
                for f in inv_freq.iter_mut() {
                    *f /= factor as f32;
                }
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                // transformers `_compute_llama3_parameters`, in float32 as there.
                let (factor, lo, hi, old) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                    old as f32,
                );
                let low_wavelen = old / lo;
                let high_wavelen = old / hi;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    let scaled = if wavelen > low_wavelen {
                        *f / factor
                    } else {
                        *f
                    };
                    let medium = (high_wavelen..=low_wavelen).contains(&wavelen);
                    *f = if medium {
                        let smooth = (old / wavelen - lo) / (hi - lo);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    };
                }
            }
        }
    }
}

/// Rotary position embedding over the first `rot_dim` channels of each head.
///
/// `interleaved` rotates adjacent channel pairs (GPT-J, and llama.cpp's layout for GGUF Llama
/// weights); otherwise the two halves are rotated (`rotate_half`, the transformers Llama layout).
#[derive(Clone)]
pub struct Rotary {
    cos: Tensor,
    sin: Tensor,
    /// The same tables as host vectors, for the fused gradient-path kernel.
    cos_host: Arc<Vec<f32>>,
    sin_host: Arc<Vec<f32>>,
    rot_dim: usize,
    interleaved: bool,
}

impl Rotary {
    /// Tables for `max_pos` positions, computed in f32 the way transformers computes them.
    pub fn new(
        rot_dim: usize,
        base: f64,
        scaling: &RopeScaling,
        max_pos: usize,
        interleaved: bool,
        device: &Device,
    ) -> Result<Self> {
        if rot_dim > 1 << 16 || !(base.is_finite() && base > 0.0) {
            return Err(crate::Error::input(format!(
                "rotary embedding of width {rot_dim} with base {base}: not a valid model configuration"
            )));
        }
        let half = rot_dim / 2;
        // At most 2^25 entries per table (128 MiB), however long a context a file declares:
        // 524,288 positions at 128-wide heads. Longer inputs fail in one line, not in memory.
        let max_pos = max_pos.min((1 << 25) / half.max(1));
        let mut inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0f32 / (base as f32).powf((2 * i) as f32 / rot_dim as f32))
            .collect();
        scaling.apply(&mut inv_freq);
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for f in &inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok(Rotary {
            cos: Tensor::from_vec(cos.clone(), (max_pos, half), device)?,
            sin: Tensor::from_vec(sin.clone(), (max_pos, half), device)?,
            cos_host: Arc::new(cos),
            sin_host: Arc::new(sin),
            rot_dim,
            interleaved,
        })
    }

    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// The fused gradient-path kernel for heads of width `head_dim`, when the rotation covers
    /// the whole head.
    pub(crate) fn fused_op(&self, head_dim: usize) -> Option<fused::RopeOp> {
        (self.rot_dim == head_dim).then(|| fused::RopeOp {
            cos: self.cos_host.clone(),
            sin: self.sin_host.clone(),
            interleaved: self.interleaved,
        })
    }

    /// Rotate `x: [b, heads, t, head_dim]` for positions `0..t`.
    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, t, d) = x.dims4()?;
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        let (rot, pass) = if self.rot_dim < d {
            (
                x.narrow(D::Minus1, 0, self.rot_dim)?,
                Some(x.narrow(D::Minus1, self.rot_dim, d - self.rot_dim)?),
            )
        } else {
            (x.clone(), None)
        };
        let rotated = match self.fused_op(self.rot_dim) {
            Some(op) if fused::applies(&[&rot]) => rot.contiguous()?.apply_op1(op)?,
            _ => self.rotate_candle(&rot, &cos, &sin, x.track_op())?,
        };
        match pass {
            Some(p) => Tensor::cat(&[&rotated, &p], D::Minus1),
            None => Ok(rotated),
        }
    }

    fn rotate_candle(
        &self,
        rot: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        track: bool,
    ) -> candle_core::Result<Tensor> {
        use candle_nn::rotary_emb as re;
        match (self.interleaved, track) {
            (true, true) => re::rope_i_slow(rot, cos, sin),
            (true, false) => re::rope_i(&rot.contiguous()?, cos, sin),
            (false, true) => re::rope_slow(rot, cos, sin),
            (false, false) => re::rope(&rot.contiguous()?, cos, sin),
        }
    }
}

/// Additive attention masks for a right-padded batch.
///
/// Sequences are right-padded, so position ids are simply `0..len` and padding never sits
/// before a real token: in a causal model a real query cannot see a pad key. The pad keys are
/// still masked so that bidirectional encoders (BERT) ignore them too.
pub struct Masks {
    lengths: Vec<usize>,
    t: usize,
    device: Device,
}

/// The value transformers' eager attention adds at masked positions.
const MASKED: f32 = f32::MIN;

impl Masks {
    pub fn new(lengths: &[usize], t: usize, device: &Device) -> Self {
        Masks {
            lengths: lengths.to_vec(),
            t,
            device: device.clone(),
        }
    }

    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// `[b, 1, t, t]`: query `i` sees key `j` when `j` is a real token, and, if `causal`,
    /// `j <= i`, and, with a sliding `window`, `i - j < window`.
    pub fn build(&self, causal: bool, window: Option<usize>) -> candle_core::Result<Tensor> {
        let t = self.t;
        let b = self.lengths.len();
        let mut m = vec![0f32; b * t * t];
        for (bi, &len) in self.lengths.iter().enumerate() {
            for i in 0..t {
                let row = &mut m[(bi * t + i) * t..(bi * t + i + 1) * t];
                for (j, v) in row.iter_mut().enumerate() {
                    let visible =
                        j < len && (!causal || j <= i) && window.is_none_or(|w| i < j + w);
                    if !visible {
                        *v = MASKED;
                    }
                }
            }
        }
        Tensor::from_vec(m, (b, 1, t, t), &self.device)
    }
}

/// Run `f` on the f32 data of a contiguous CPU tensor.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (s, l) = t.storage_and_layout();
    match (&*s, l.contiguous_offsets()) {
        (candle_core::Storage::Cpu(c), Some((a, b))) => Ok(f(&c.as_slice::<f32>()?[a..b])),
        _ => candle_core::bail!("expected a contiguous f32 cpu tensor"),
    }
}

/// Whether the fused CPU kernels apply: f32 on the CPU, and no gradient to track.
fn fast_path(xs: &[&Tensor]) -> bool {
    xs.iter()
        .all(|x| !x.track_op() && x.device().is_cpu() && x.dtype() == DType::F32)
}

/// `act(gate) * up` where `gate_up: [.., 2n]` holds `gate` then `up` (one fused projection).
pub fn gated(gate_up: &Tensor, act: Activation) -> candle_core::Result<Tensor> {
    let dims = gate_up.dims().to_vec();
    let two_n = *dims.last().expect("rank >= 1");
    let n = two_n / 2;
    if fused::fusable(act) && fused::applies(&[gate_up]) {
        return gate_up.contiguous()?.apply_op1(fused::GatedOp(act));
    }
    let fused = matches!(act, Activation::Silu | Activation::GeluTanh);
    if !(fused && fast_path(&[gate_up])) {
        let gate = gate_up.narrow(D::Minus1, 0, n)?;
        let up = gate_up.narrow(D::Minus1, n, n)?;
        return act.forward(&gate)? * up;
    }
    let x = gate_up.contiguous()?;
    let rows = x.elem_count() / two_n;
    let mut out = vec![0f32; rows * n];
    with_f32(&x, |src| {
        use rayon::prelude::*;
        out.par_chunks_mut(n)
            .zip(src.par_chunks(two_n))
            .for_each(|(o, row)| {
                let (g, u) = row.split_at(n);
                match act {
                    Activation::Silu => {
                        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                            *o = g / (1.0 + (-g).exp()) * u;
                        }
                    }
                    _ => {
                        // 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
                        const C: f32 = 0.797_884_6;
                        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                            *o = 0.5 * g * (1.0 + (C * (g + 0.044715 * g * g * g)).tanh()) * u;
                        }
                    }
                }
            })
    })?;
    let mut out_dims = dims;
    *out_dims.last_mut().expect("rank >= 1") = n;
    Tensor::from_vec(out, out_dims, gate_up.device())
}

/// Scaled dot-product attention over `q: [b, h, t, d]`, `k, v: [b, kv_h, t, d]` (grouped-query
/// attention repeats the kv heads). Returns `[b, t, h * d]` and, on request, the attention
/// probabilities `[b, h, t, t]`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
    want_probs: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    attention_softcapped(q, k, v, mask, scale, None, want_probs)
}

/// [`attention`] with optional soft-capping of the scores, `cap * tanh(s / cap)` (Gemma 2).
pub fn attention_softcapped(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
    softcap: Option<f64>,
    want_probs: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let (b, h, t, _) = q.dims4()?;
    let kv_h = k.dim(1)?;
    if fast_path(&[q, k, v, mask]) {
        return attention_cpu(q, k, v, mask, scale, softcap, want_probs);
    }
    if !want_probs && fused::applies(&[q, k, v]) && mask.dims4()? == (b, 1, t, t) {
        let op = fused::AttentionOp(fused::Scores {
            mask: mask.flatten_all()?.to_vec1::<f32>()?,
            masked: MASKED,
            scale: scale as f32,
            softcap: softcap.map(|c| c as f32),
        });
        let out = q
            .contiguous()?
            .apply_op3(&k.contiguous()?, &v.contiguous()?, op)?;
        return Ok((out, None));
    }
    let (k, v) = if kv_h != h {
        let rep = h / kv_h;
        let expand = |x: &Tensor| -> candle_core::Result<Tensor> {
            let dv = x.dim(3)?;
            x.unsqueeze(2)?
                .broadcast_as((b, kv_h, rep, t, dv))?
                .reshape((b, h, t, dv))
        };
        (expand(k)?, expand(v)?)
    } else {
        (k.clone(), v.clone())
    };
    let mut scores = (q.contiguous()? * scale)?.matmul(&k.contiguous()?.t()?)?;
    if let Some(cap) = softcap {
        scores = ((scores / cap)?.tanh()? * cap)?;
    }
    let scores = scores.broadcast_add(mask)?;
    let probs = softmax_last(&scores)?;
    let out = probs.matmul(&v.contiguous()?)?; // [b, h, t, dv]
    let dv = out.dim(3)?;
    let out = out.transpose(1, 2)?.reshape((b, t, h * dv))?;
    Ok((out, want_probs.then_some(probs)))
}

/// Llama-style attention straight from the fused projection `qkv: [b, t, (h + 2 kv_h) d]`
/// (query heads, then key heads, then value heads), with the rotary embedding over whole heads:
/// one fused op on the gradient path. `None` when that op does not apply; then split the
/// projection and call [`attention`].
pub fn fused_qkv_attention(
    qkv: &Tensor,
    mask: &Tensor,
    rotary: &Rotary,
    heads: usize,
    kv_heads: usize,
    scale: f64,
) -> candle_core::Result<Option<Tensor>> {
    let (b, t, w) = qkv.dims3()?;
    let d = w / (heads + 2 * kv_heads);
    if !fused::applies(&[qkv]) || mask.dims4()? != (b, 1, t, t) {
        return Ok(None);
    }
    let Some(rope) = rotary.fused_op(d) else {
        return Ok(None);
    };
    let op = fused::QkvAttentionOp {
        scores: fused::Scores {
            mask: mask.flatten_all()?.to_vec1::<f32>()?,
            masked: MASKED,
            scale: scale as f32,
            softcap: None,
        },
        rope,
        heads,
        kv_heads,
    };
    Ok(Some(qkv.contiguous()?.apply_op1(op)?))
}

/// `[b, t, heads * d]` → `[b, heads, t, d]`.
pub fn split_heads(x: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (b, t, hd) = x.dims3()?;
    x.reshape((b, t, heads, hd / heads))?.transpose(1, 2)
}

/// [`attention_softcapped`] on the CPU without a gradient: one task per batch row, the kv
/// heads shared by index instead of copied, masked keys skipped, the output written directly in
/// `[b, t, h * dv]` layout.
fn attention_cpu(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
    softcap: Option<f64>,
    want_probs: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let (b, h, t, d) = q.dims4()?;
    let kv_h = k.dim(1)?;
    let dv = v.dim(3)?;
    let scores = fused::Scores {
        mask: mask.flatten_all()?.to_vec1::<f32>()?,
        masked: MASKED,
        scale: scale as f32,
        softcap: softcap.map(|c| c as f32),
    };
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let (out, probs) = with_f32(&q, |qs| {
        with_f32(&k, |ks| {
            with_f32(&v, |vs| {
                fused::attention_batch(&scores, (qs, ks, vs), (b, h, kv_h, t, d, dv), want_probs)
            })
        })
    })????;
    let out = Tensor::from_vec(out, (b, t, h * dv), q.device())?;
    let probs = if want_probs {
        Some(Tensor::from_vec(probs, (b, h, t, t), q.device())?)
    } else {
        None
    };
    Ok((out, probs))
}

/// A dot product with eight independent accumulators (so it vectorizes).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}
