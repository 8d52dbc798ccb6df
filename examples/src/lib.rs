//! Example topologies, shared by the example binaries (`bin/`), their tests and `egret-bench`.

pub mod exclamation;
pub mod reliable_word_count;
pub mod stateful_word_count;
pub mod streamlets;
pub mod windowed_sums;
pub mod word_count;

/// A tiny deterministic generator for the examples (a real topology would use the `rand` crate).
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}
