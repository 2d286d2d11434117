//! FNV-1a, 64 bits: a stable hash for picking a key's designated proposer (the same on every
//! node and every run) and for telling a torn storage frame from a good one.

/// The FNV-1a hash of `bytes`.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
