//! Where a handshake draws its ephemeral keys from: the operating system's generator on every
//! real network, or a node's seed on a network that is a simulation inside this process (see
//! [`crate::Network::deterministic`]), so that a simulated run, handshakes included, is a
//! function of its seed.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

/// The randomness of a node's handshakes: the operating system's generator
/// ([`Entropy::os`], the default), or a seed ([`Entropy::seeded`]).
#[derive(Debug, Default)]
pub struct Entropy {
    /// The seed and the count of handshakes drawn from it so far, when seeded.
    seeded: Option<(u64, AtomicU64)>,
}

impl Entropy {
    /// The operating system's generator.
    pub fn os() -> Self {
        Self::default()
    }

    /// Drawn from `seed`, each handshake its own stream (the count of handshakes drawn so far
    /// mixed in). For simulations only: whoever knows the seed can read the traffic.
    pub fn seeded(seed: u64) -> Self {
        Self { seeded: Some((seed, AtomicU64::new(0))) }
    }

    /// The resolver for one handshake: `None` for snow's default (the OS generator).
    pub(crate) fn resolver(&self) -> Option<Box<dyn CryptoResolver + Send>> {
        let (seed, handshakes) = self.seeded.as_ref()?;
        let drawn = handshakes.fetch_add(1, Ordering::Relaxed);
        Some(Box::new(Seeded(seed ^ drawn.wrapping_mul(0x9e37_79b9_7f4a_7c15))))
    }
}

/// snow's default primitives, with a seeded generator.
struct Seeded(u64);

impl CryptoResolver for Seeded {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(SmallRng::seed_from_u64(self.0))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// A seeded generator in the shape snow takes. It claims to be cryptographically secure,
/// which it is not: it exists only for [`Entropy::Seeded`].
struct SeededRandom(SmallRng);

impl snow_rand_core::RngCore for SeededRandom {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow_rand_core::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl snow_rand_core::CryptoRng for SeededRandom {}

impl Random for SeededRandom {}
