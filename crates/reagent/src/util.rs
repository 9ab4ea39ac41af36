//! Small numeric helpers shared by methods and the evaluation: softmax, top-n and rank. A leaf
//! module: it imports nothing from this crate.

/// Softmax in f32 (max-subtracted).
pub fn softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// How many entries are strictly larger than the target's (0 = the most likely).
pub fn rank_of(scores: &[f32], target: u32) -> usize {
    let t = scores[target as usize];
    scores.iter().filter(|&&x| x > t).count()
}

/// Indices of the `n` largest values, largest first; ties keep the lower index first.
pub fn top_n(values: &[f32], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(n);
    idx
}

/// A stable 64-bit key of some strings and numbers (FNV-1a), for random streams that must not
/// depend on the order in which work is done.
pub fn stream_key(parts: &[&str], numbers: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    for p in parts {
        eat(p.as_bytes());
    }
    for n in numbers {
        eat(&n.to_le_bytes());
    }
    h
}

/// A stable key of a token sequence and a number (FNV-1a over the ids).
pub fn ids_key(ids: &[u32], n: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &id in ids.iter().chain(std::iter::once(&0xffff_ffff)) {
        for b in id.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    for b in n.to_le_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > p[1] && p[1] > p[0]);
    }

    #[test]
    fn ids_keys_differ_by_sequence_and_number() {
        let k = ids_key(&[1, 2, 3], 0);
        assert_eq!(k, ids_key(&[1, 2, 3], 0));
        assert_ne!(k, ids_key(&[1, 2, 4], 0));
        assert_ne!(k, ids_key(&[1, 2, 3], 1));
        assert_ne!(ids_key(&[1, 2], 3), ids_key(&[1, 2, 3], 0));
    }

    #[test]
    fn keys_differ_by_every_part() {
        let k = stream_key(&["row-1", "reagent"], &[0]);
        assert_ne!(k, stream_key(&["row-1", "reagent"], &[1]));
        assert_ne!(k, stream_key(&["row-1", "occlusion"], &[0]));
        assert_ne!(k, stream_key(&["row-", "1reagent"], &[0]));
        assert_eq!(k, stream_key(&["row-1", "reagent"], &[0]));
        // Past 1,000 targets, keys still differ (the old i * 1000 + k collided).
        assert_ne!(
            stream_key(&["a", "m"], &[1000]),
            stream_key(&["b", "m"], &[0])
        );
    }
}
