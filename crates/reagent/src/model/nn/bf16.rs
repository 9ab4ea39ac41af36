//! bf16 matrix products for forwards without gradients: `y = x w^T` with bf16 inputs and f32
//! accumulation, on the AVX512-BF16 instruction `vdpbf16ps` (AMD Zen 4 and later, Intel Cooper
//! Lake, Sapphire Rapids and later).
//!
//! The weight `w: [n, k]` is rounded to bf16 once and packed into panels of [`NR`] output columns:
//! panel `j` holds, for each pair of input positions `(2p, 2p + 1)`, the 32 columns' two values
//! side by side, which is the operand layout of `vdpbf16ps`. Each call rounds `x` to bf16 (round
//! to nearest even, as PyTorch's `.bfloat16()`), and a register-blocked kernel of [`MR`] rows ×
//! [`NR`] columns runs the whole reduction in registers. Rounding both inputs costs about three
//! significant decimal digits per product; the sums stay f32. `docs/results/speed.md` measures
//! what that does to next-token probabilities and to attribution scores.
//!
//! Whether the CPU has the instruction is detected at run time ([`available`]); without it,
//! nothing here runs and loading a model in bf16 is refused.

use std::sync::Arc;

use candle_core::quantized::k_quants::GgmlType;
use candle_core::quantized::{GgmlDType, QTensor};
use rayon::prelude::*;

/// Output columns per panel: two 16-lane registers.
pub const NR: usize = 32;
/// Rows per register block: 2 × 14 accumulators, 2 weight registers and 1 broadcast fit the 32
/// vector registers of AVX-512.
pub const MR: usize = 14;
/// Rows per task: a block of `x` that stays in the L2 cache while every panel passes over it.
const MC: usize = 8 * MR;

/// Whether this CPU runs the bf16 kernel (AVX512F and AVX512-BF16, detected at run time).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// f32 → bf16, rounding to nearest even; NaN stays a (quiet) NaN.
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) as u16) | 0x0040;
    }
    let round = 0x7FFF + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// bf16 → f32 (exact).
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// A weight `[n, k]` rounded to bf16 and packed for the kernel.
pub struct PackedBf16 {
    n: usize,
    k: usize,
    /// Pairs of input positions: `ceil(k / 2)`.
    kp: usize,
    /// `[ceil(n / NR)][kp][NR][2]`, zero-padded.
    panels: Vec<u16>,
}

impl PackedBf16 {
    /// Pack a row-major `[n, k]` weight.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(
            w.len(),
            n * k,
            "bf16 pack: weight of {} values, not {n} x {k}",
            w.len()
        );
        let kp = k.div_ceil(2);
        let np = n.div_ceil(NR);
        let mut panels = vec![0u16; np * kp * NR * 2];
        if panels.is_empty() {
            return PackedBf16 { n, k, kp, panels };
        }
        panels
            .par_chunks_mut(kp * NR * 2)
            .enumerate()
            .for_each(|(j, panel)| {
                for c in 0..NR.min(n - j * NR) {
                    let row = &w[(j * NR + c) * k..(j * NR + c + 1) * k];
                    for (i, &v) in row.iter().enumerate() {
                        panel[(i / 2) * NR * 2 + c * 2 + i % 2] = to_bf16(v);
                    }
                }
            });
        PackedBf16 { n, k, kp, panels }
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// The weight back as a row-major `[n, k]` f32 (exactly the bf16 values).
    pub fn unpack(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.n * self.k];
        for (r, row) in w.chunks_mut(self.k).enumerate() {
            let panel = &self.panels[(r / NR) * self.kp * NR * 2..];
            for (i, x) in row.iter_mut().enumerate() {
                *x = from_bf16(panel[(i / 2) * NR * 2 + (r % NR) * 2 + i % 2]);
            }
        }
        w
    }

    /// Bytes held by the packed weight.
    pub fn bytes(&self) -> usize {
        self.panels.len() * 2
    }

    /// `x w^T` for a row-major `x: [m, k]`, as a row-major `[m, n]`. `None` when the CPU lacks
    /// the instruction (see [`available`]).
    pub fn matmul(&self, x: &[f32], m: usize, parallel: bool) -> Option<Vec<f32>> {
        check_input(x, m, self.k);
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: the CPU has AVX512F and AVX512-BF16 (checked just above).
            return Some(unsafe { self.matmul_avx512(x, m, parallel) });
        }
        let _ = (x, m, parallel);
        None
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn matmul_avx512(&self, x: &[f32], m: usize, parallel: bool) -> Vec<f32> {
        let (n, k, kp) = (self.n, self.k, self.kp);
        if m == 0 || n == 0 || k == 0 {
            // An empty product, or sums over nothing.
            return vec![0f32; m * n];
        }
        // SAFETY: the features were checked by the caller.
        let a = unsafe { round_rows(x, m, k, kp, parallel) };
        let mut out: Vec<f32> = Vec::with_capacity(m * n);
        let np = n.div_ceil(NR);
        let blocks = m.div_ceil(MC);
        // Tasks: row blocks × groups of panels, enough of them for the threads to share.
        let groups = if parallel {
            np.min((4 * rayon::current_num_threads()).div_ceil(blocks))
                .max(1)
        } else {
            1
        };
        let per_group = np.div_ceil(groups);
        let dst = SendPtr(out.as_mut_ptr());
        let task = |t: usize| {
            let (rb, g) = (t / groups, t % groups);
            let rows = rb * MC..((rb + 1) * MC).min(m);
            for j in g * per_group..((g + 1) * per_group).min(np) {
                let panel = &self.panels[j * kp * NR * 2..(j + 1) * kp * NR * 2];
                let cols = NR.min(n - j * NR);
                let mut r0 = rows.start;
                while r0 < rows.end {
                    let r = MR.min(rows.end - r0);
                    // SAFETY: rows r0..r0 + r and columns j * NR..j * NR + cols lie inside the
                    // [m, n] output; tasks write disjoint (row block, panel) tiles.
                    unsafe {
                        avx512::block(
                            r,
                            a.as_ptr().add(r0 * kp * 2) as *const u32,
                            kp,
                            panel.as_ptr(),
                            dst.get().add(r0 * n + j * NR),
                            n,
                            cols,
                        )
                    };
                    r0 += r;
                }
            }
        };
        if parallel {
            (0..blocks * groups).into_par_iter().for_each(task);
        } else {
            (0..blocks * groups).for_each(task);
        }
        // SAFETY: the tiles cover every element of the [m, n] output exactly once.
        unsafe { out.set_len(m * n) };
        out
    }
}

/// A product's input is `[m, k]` (a caller's bug otherwise, as a slice index out of bounds).
fn check_input(x: &[f32], m: usize, k: usize) {
    assert_eq!(
        x.len(),
        m * k,
        "bf16 matmul: input of {} values, not {m} x {k}",
        x.len()
    );
}

/// `x: [m, k]` in bf16, rows of `2 * kp` values (the last one zero when `k` is odd).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn round_rows(x: &[f32], m: usize, k: usize, kp: usize, parallel: bool) -> Vec<u16> {
    let mut a = vec![0u16; m * kp * 2];
    let convert = |(row, out): (usize, &mut [u16])| {
        // SAFETY: the features were checked by the caller.
        unsafe { avx512::round_row(&x[row * k..(row + 1) * k], out) }
    };
    if parallel {
        a.par_chunks_mut(kp * 2).enumerate().for_each(convert);
    } else {
        a.chunks_mut(kp * 2).enumerate().for_each(convert);
    }
    a
}

/// What the bf16 kernel multiplies by: a packed bf16 weight, or quantized blocks unpacked one
/// panel at a time.
pub trait Bf16Matmul: Send + Sync {
    /// `(n, k)` of the weight `[n, k]`.
    fn dims(&self) -> (usize, usize);
    /// `x w^T` for a row-major `x: [m, k]`, as a row-major `[m, n]`; `None` when the CPU lacks
    /// the instruction.
    fn matmul(&self, x: &[f32], m: usize, parallel: bool) -> Option<Vec<f32>>;
}

impl Bf16Matmul for PackedBf16 {
    fn dims(&self) -> (usize, usize) {
        PackedBf16::dims(self)
    }
    fn matmul(&self, x: &[f32], m: usize, parallel: bool) -> Option<Vec<f32>> {
        PackedBf16::matmul(self, x, m, parallel)
    }
}

/// A GGUF-quantized weight `[n, k]` kept in its blocks (about the file's size in memory) and
/// multiplied in bf16: each call dequantizes one panel of [`NR`] output rows at a time (candle's
/// block decoders, the same values a dense load gives), rounds it to bf16 into the kernel's
/// layout, and runs the kernel over every row of `x` before the next panel. The result equals
/// that of [`PackedBf16`] on the dequantized weight, bit for bit.
pub struct QuantBf16 {
    q: Arc<QTensor>,
    n: usize,
    k: usize,
    kp: usize,
    /// Bytes of one output row's blocks.
    row_bytes: usize,
    dequant: fn(&[u8], &mut [f32]),
}

/// Decode whole blocks of `T` from their bytes.
fn dequant_blocks<T: GgmlType>(bytes: &[u8], out: &mut [f32]) {
    // SAFETY: `bytes` holds a whole number of `T` blocks at `T`'s alignment (checked in
    // `QuantBf16::new`), and blocks are plain data.
    let blocks = unsafe {
        std::slice::from_raw_parts(
            bytes.as_ptr() as *const T,
            bytes.len() / std::mem::size_of::<T>(),
        )
    };
    T::to_float(blocks, out);
}

/// The block decoder of a format: the function, elements and bytes per block, alignment.
type Decoder = (fn(&[u8], &mut [f32]), usize, usize, usize);

fn decoder(dtype: GgmlDType) -> Option<Decoder> {
    use candle_core::quantized::k_quants::*;
    fn of<T: GgmlType>() -> Option<Decoder> {
        Some((
            dequant_blocks::<T>,
            T::BLCK_SIZE,
            std::mem::size_of::<T>(),
            std::mem::align_of::<T>(),
        ))
    }
    match dtype {
        GgmlDType::Q4_0 => of::<BlockQ4_0>(),
        GgmlDType::Q4_1 => of::<BlockQ4_1>(),
        GgmlDType::Q5_0 => of::<BlockQ5_0>(),
        GgmlDType::Q5_1 => of::<BlockQ5_1>(),
        GgmlDType::Q8_0 => of::<BlockQ8_0>(),
        GgmlDType::Q2K => of::<BlockQ2K>(),
        GgmlDType::Q3K => of::<BlockQ3K>(),
        GgmlDType::Q4K => of::<BlockQ4K>(),
        GgmlDType::Q5K => of::<BlockQ5K>(),
        GgmlDType::Q6K => of::<BlockQ6K>(),
        GgmlDType::Q8K => of::<BlockQ8K>(),
        _ => None,
    }
}

impl QuantBf16 {
    /// `None` for a format without a block decoder here (F16, F32, BF16 tensors), a weight that
    /// is not `[n, k]` with whole blocks per row, or storage off the CPU.
    pub fn new(q: Arc<QTensor>) -> Option<Self> {
        let (n, k) = q.shape().dims2().ok()?;
        let (dequant, block, bytes, align) = decoder(q.dtype())?;
        if k % block != 0 {
            return None;
        }
        let row_bytes = k / block * bytes;
        let data = q.data().ok()?;
        if data.len() != n * row_bytes || !(data.as_ptr() as usize).is_multiple_of(align) {
            return None;
        }
        drop(data);
        Some(QuantBf16 {
            q,
            n,
            k,
            kp: k.div_ceil(2),
            row_bytes,
            dequant,
        })
    }

    /// Bytes held by the blocks.
    pub fn bytes(&self) -> usize {
        self.n * self.row_bytes
    }

    /// Row `r` of the weight as f32 into `out` (`k` values; what a dense load of the file gives).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let data = self
            .q
            .data()
            .expect("the blocks were readable at construction");
        (self.dequant)(&data[r * self.row_bytes..(r + 1) * self.row_bytes], out);
    }

    /// Rows `rows` of the weight as f32.
    pub fn dequantize_rows(&self, rows: std::ops::Range<usize>) -> Vec<f32> {
        let mut out = vec![0f32; rows.len() * self.k];
        for (r, o) in rows.zip(out.chunks_mut(self.k)) {
            self.dequantize_row(r, o);
        }
        out
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn matmul_avx512(&self, x: &[f32], m: usize, parallel: bool) -> Vec<f32> {
        let (n, k, kp) = (self.n, self.k, self.kp);
        if m == 0 || n == 0 || k == 0 {
            return vec![0f32; m * n];
        }
        // SAFETY: the features were checked by the caller.
        let a = unsafe { round_rows(x, m, k, kp, parallel) };
        let data = self
            .q
            .data()
            .expect("the blocks were readable at construction");
        let mut out: Vec<f32> = Vec::with_capacity(m * n);
        let dst = SendPtr(out.as_mut_ptr());
        // One task per panel: unpack its rows, then pass it over every row of x.
        type Bufs = (Vec<f32>, Vec<u16>, Vec<u16>);
        let task = |(f, row, panel): &mut Bufs, j: usize| {
            let cols = NR.min(n - j * NR);
            if cols < NR {
                panel.fill(0);
            }
            for c in 0..cols {
                let r = j * NR + c;
                (self.dequant)(&data[r * self.row_bytes..(r + 1) * self.row_bytes], f);
                // SAFETY: the features were checked by the caller.
                unsafe { avx512::round_row(f, row) };
                // Pair p of the row is the panel's pair (p, c): one u32 each.
                for p in 0..kp {
                    panel[(p * NR + c) * 2] = row[2 * p];
                    panel[(p * NR + c) * 2 + 1] = row[2 * p + 1];
                }
            }
            let mut r0 = 0;
            while r0 < m {
                let r = MR.min(m - r0);
                // SAFETY: rows r0..r0 + r and columns j * NR..j * NR + cols lie inside the
                // [m, n] output; tasks write disjoint panels' columns.
                unsafe {
                    avx512::block(
                        r,
                        a.as_ptr().add(r0 * kp * 2) as *const u32,
                        kp,
                        panel.as_ptr(),
                        dst.get().add(r0 * n + j * NR),
                        n,
                        cols,
                    )
                };
                r0 += r;
            }
        };
        let init = || (vec![0f32; k], vec![0u16; kp * 2], vec![0u16; kp * NR * 2]);
        let np = n.div_ceil(NR);
        if parallel {
            (0..np).into_par_iter().for_each_init(init, task);
        } else {
            let mut bufs = init();
            (0..np).for_each(|j| task(&mut bufs, j));
        }
        // SAFETY: the panels cover every column of every row of the [m, n] output once.
        unsafe { out.set_len(m * n) };
        out
    }
}

impl Bf16Matmul for QuantBf16 {
    fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }
    fn matmul(&self, x: &[f32], m: usize, parallel: bool) -> Option<Vec<f32>> {
        check_input(x, m, self.k);
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: the CPU has AVX512F and AVX512-BF16 (checked just above).
            return Some(unsafe { self.matmul_avx512(x, m, parallel) });
        }
        let _ = (x, m, parallel);
        None
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to write disjoint tiles from the tasks of one call.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// Round a row of f32 to bf16 (nearest even), zero-padding `out` past the row.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn round_row(row: &[f32], out: &mut [u16]) {
        let mut i = 0;
        while i + 32 <= row.len() {
            let lo = _mm512_loadu_ps(row.as_ptr().add(i));
            let hi = _mm512_loadu_ps(row.as_ptr().add(i + 16));
            let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(out.as_mut_ptr().add(i) as *mut __m512i, packed);
            i += 32;
        }
        for j in i..row.len() {
            out[j] = super::to_bf16(row[j]);
        }
        for o in out.iter_mut().skip(row.len()) {
            *o = 0;
        }
    }

    /// One block of `r ≤ MR` rows × one panel.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn block(
        r: usize,
        a: *const u32,
        kp: usize,
        b: *const u16,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        macro_rules! dispatch {
            ($($n:literal)*) => {
                match r {
                    $($n => kernel::<$n>(a, kp, b, c, ldc, cols),)*
                    _ => unreachable!("bf16 kernel: block of {r} rows"),
                }
            };
        }
        const _: () = assert!(MR == 14);
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12 13 14)
    }

    /// `R` rows × `NR` columns over the whole reduction: `a` holds the rows' bf16 pairs
    /// (row stride `kp` pairs), `b` the panel, `c` the output tile (row stride `ldc`, `cols`
    /// valid columns).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn kernel<const R: usize>(
        a: *const u32,
        kp: usize,
        b: *const u16,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for p in 0..kp {
            let b0: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(b.add(p * 2 * NR) as *const __m512i));
            let b1: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(b.add(p * 2 * NR + NR) as *const __m512i));
            for (i, acc) in acc.iter_mut().enumerate() {
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(
                    a.add(i * kp + p).read_unaligned() as i32,
                ));
                acc[0] = _mm512_dpbf16_ps(acc[0], x, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], x, b1);
            }
        }
        let m0: __mmask16 = if cols >= 16 {
            0xFFFF
        } else {
            (1u32 << cols) as u16 - 1
        };
        let m1: __mmask16 = if cols >= 32 {
            0xFFFF
        } else if cols > 16 {
            (1u32 << (cols - 16)) as u16 - 1
        } else {
            0
        };
        for (i, acc) in acc.iter().enumerate() {
            let row = c.add(i * ldc);
            _mm512_mask_storeu_ps(row, m0, acc[0]);
            _mm512_mask_storeu_ps(row.add(16), m1, acc[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3F80);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3F80);
        // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: up, to the even one.
        assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3F82);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    }

    /// The kernel against a float64 sum of the same bf16-rounded products, on shapes with every
    /// kind of edge: rows not a multiple of MR or MC, columns not a multiple of NR, odd k.
    #[test]
    fn kernel_matches_a_float64_reference() {
        if !available() {
            eprintln!("bf16 kernel: this CPU lacks AVX512-BF16; checking that matmul declines");
            let w = PackedBf16::pack(&[1.0; 6], 2, 3);
            assert!(w.matmul(&[1.0; 3], 1, false).is_none());
            return;
        }
        let mut seed = 7u64;
        let mut rnd = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        for &(m, n, k) in &[
            (1, 1, 1),
            (13, 31, 7),
            (15, 33, 64),
            (130, 70, 129),
            (7, 96, 576),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
            let packed = PackedBf16::pack(&w, n, k);
            for parallel in [false, true] {
                let y = packed.matmul(&x, m, parallel).unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|t| {
                                from_bf16(to_bf16(x[i * k + t])) as f64
                                    * from_bf16(to_bf16(w[j * k + t])) as f64
                            })
                            .sum();
                        let got = y[i * n + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * (k as f64).sqrt() + 1e-6 * want.abs(),
                            "[{m}, {n}, {k}] at ({i}, {j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// Quantized blocks unpacked a panel at a time give exactly the product of the packed
    /// dequantized weight, for each block format the loader meets, on edge shapes; formats
    /// without a decoder here are declined.
    #[test]
    fn quantized_panels_equal_the_dequantized_weight() {
        use candle_core::{Device, Tensor};
        let mut seed = 11u64;
        let mut rnd = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        for (dtype, n, k) in [
            (GgmlDType::Q4_0, 33, 64),
            (GgmlDType::Q4_1, 70, 96),
            (GgmlDType::Q5_0, 32, 32),
            (GgmlDType::Q8_0, 45, 160),
            (GgmlDType::Q4K, 40, 256),
            (GgmlDType::Q5K, 31, 512),
            (GgmlDType::Q6K, 65, 256),
            // Rows wider than one f32 panel holds (256 rows of 16,384), and a short last panel.
            (GgmlDType::Q8_0, 300, 16384),
        ] {
            let w: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
            let t = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
            let q = Arc::new(QTensor::quantize(&t, dtype).unwrap());
            let dense = q.dequantize(&Device::Cpu).unwrap();
            let dense: Vec<f32> = dense.flatten_all().unwrap().to_vec1().unwrap();
            let qp = QuantBf16::new(q).expect("a block format with a decoder");
            assert_eq!(qp.dequantize_rows(0..n), dense, "{dtype:?}: rows");
            assert_eq!(Bf16Matmul::dims(&qp), (n, k));
            let packed = PackedBf16::pack(&dense, n, k);
            for m in [1, 13, 29] {
                let x: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
                for parallel in [false, true] {
                    let (a, b) = (
                        Bf16Matmul::matmul(&qp, &x, m, parallel),
                        packed.matmul(&x, m, parallel),
                    );
                    assert_eq!(a, b, "{dtype:?} [{m}, {n}, {k}]");
                    assert_eq!(a.is_some(), available());
                }
                // The f32 panels: the dense f32 kernel's product on the dequantized weight, up
                // to the order of the sums (each panel is its own product; rounding grows with
                // the k terms of each sum).
                let want = super::super::matmul_f32(&x, &dense, m, n, k, 1);
                for threads in [1, 2] {
                    let got = super::super::matmul_quant_f32(&qp, &x, m, threads);
                    assert_eq!(got.len(), want.len());
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
                        .fold(0f32, f32::max);
                    let tol = 1e-7 * k as f32;
                    assert!(
                        worst < tol,
                        "{dtype:?} [{m}, {n}, {k}], {threads} threads: {worst} (tolerance {tol})"
                    );
                }
            }
        }
        let t = Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        let f16 = Arc::new(QTensor::quantize(&t, GgmlDType::F16).unwrap());
        assert!(QuantBf16::new(f16).is_none());
    }
}
