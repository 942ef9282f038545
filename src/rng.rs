//! A small deterministic random generator whose whole state is one `u64`.
//!
//! The data pipeline must be reproducible from a seed and resumable from a checkpoint, so it
//! does not use a thread-local or OS-seeded generator: every stream of random numbers (an
//! epoch's shuffle, one image's crop and flip, one synthetic image) comes from a
//! [`SplitMix64`] seeded explicitly, and its state can be saved and restored as a plain `u64`.

/// Step added to the state on every draw: 2^64 divided by the golden ratio, odd.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64: a Weyl sequence passed through a 64-bit bit mixer.
///
/// Fast, statistically sound for shuffling and augmentation, and its state is one `u64`
/// ([`SplitMix64::state`] / [`SplitMix64::from_state`]). Not for cryptography.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator started from `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// A generator for the numbered sub-stream `stream` of `seed`: different streams of one
    /// seed (epoch 0 and epoch 1, image 7 and image 8) are statistically independent.
    pub fn stream(seed: u64, stream: u64) -> Self {
        let salt = mix(stream.wrapping_add(GOLDEN_GAMMA));
        SplitMix64::new(mix(seed ^ salt))
    }

    /// The generator with a state saved by [`SplitMix64::state`].
    pub const fn from_state(state: u64) -> Self {
        SplitMix64 { state }
    }

    /// The whole state: restoring it with [`SplitMix64::from_state`] repeats the sequence.
    pub const fn state(&self) -> u64 {
        self.state
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state)
    }

    /// A uniform integer in `0..n`, without modulo bias; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-and-shift, rejecting the few low products that would bias it.
        let threshold = n.wrapping_neg() % n;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(n);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform float in `[low, high)`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// A standard normal sample (Box-Muller; one of the pair is discarded to keep the state
    /// a single `u64`).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // in (0, 1]: ln is finite
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// Shuffles `items` in place (Fisher-Yates), every permutation equally likely.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// SplitMix64's output function: a bijective 64-bit mixer with full avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
