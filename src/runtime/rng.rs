//! Unguessable values a worker hands out: bridged request ids, per-connection event keys,
//! link challenges. Each worker keeps its own generator, seeded once from the kernel, so a
//! value costs a few arithmetic operations on the worker's own memory instead of a system
//! call; nothing here is shared between threads.
#![forbid(unsafe_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;

/// A cryptographically secure generator (ChaCha12, seeded from the OS) owned by one worker.
pub struct CoreRng(RefCell<StdRng>);

impl Default for CoreRng {
    fn default() -> Self {
        CoreRng::new()
    }
}

impl CoreRng {
    /// Seeds from the kernel's generator (`getrandom(2)`, the same source as the WebSocket
    /// clients' masks); panics only where the OS has no randomness at all, which no supported
    /// Linux lacks.
    pub fn new() -> CoreRng {
        let mut seed = <StdRng as SeedableRng>::Seed::default();
        getrandom::fill(&mut seed).expect("the OS random source (getrandom) is unavailable");
        CoreRng(RefCell::new(StdRng::from_seed(seed)))
    }

    pub fn fill(&self, out: &mut [u8]) {
        self.0.borrow_mut().fill_bytes(out);
    }

    pub fn bytes<const N: usize>(&self) -> [u8; N] {
        let mut b = [0u8; N];
        self.fill(&mut b);
        b
    }

    /// 128 random bits as 32 lower-case hex digits.
    pub fn hex128(&self) -> String {
        hex(&self.bytes::<16>())
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_hex_of_the_right_length_and_differ() {
        let r = CoreRng::new();
        let (a, b) = (r.hex128(), r.hex128());
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        // Two generators seeded separately do not repeat each other.
        assert_ne!(CoreRng::new().hex128(), CoreRng::new().hex128());
        assert_eq!(hex(&[0, 0xab, 0x0f]), "00ab0f");
    }
}
