//! A small, fast, seedable generator (wyrand) for tuple keys, root ids and shuffle starts. Not cryptographic: keys
//! only need to make an accidental XOR of zero vanishingly unlikely (2^-64 per tree).

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct FastRng(u64);

impl FastRng {
    pub fn new(seed: u64) -> Self {
        FastRng(seed)
    }

    /// Seeded from the clock, the process id and `salt` (e.g. the task id), so tasks and restarts differ.
    pub fn from_entropy(salt: u64) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut r = FastRng(nanos ^ (std::process::id() as u64) << 32 ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.0 as u128).wrapping_mul((self.0 ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) ^ t) as u64
    }

    /// Never zero: zero means "no key" on the wire and would not change an XOR.
    pub fn next_key(&mut self) -> u64 {
        loop {
            let k = self.next_u64();
            if k != 0 {
                return k;
            }
        }
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}
