//! Where a name's process starts: every node computes the same ordered list of candidate hosts
//! from the name and the members running the registry, with no coordination.
//!
//! The order is rendezvous (highest-random-weight) hashing: each member gets a weight from a
//! hash of the name and the member, and the candidates are the members by falling weight. The
//! first is the preferred host; the next ones are the fallbacks, in order, when a host refuses
//! or fails. Names spread evenly over the members, a member's arrival takes over only names
//! for which it now weighs most (about `1/N` of them), and a member's departure moves only the
//! names it was first for. Consensus then fixes the host that actually started the process;
//! this order only decides whom to ask.
//!
//! The hash is FNV-1a over the name, a separator and the member, finished by a 64-bit mixer:
//! written out here, so every node of every build computes the same weights (the standard
//! library's hasher promises no such thing across versions).
//!
//! ```
//! use shoal_registry::core::candidates;
//!
//! let members = vec!["a".to_string(), "b".to_string(), "c".to_string()];
//! let order = candidates("room/42", &members);
//! assert_eq!(order.len(), 3);
//! // Any node, whatever order it lists the members in, computes the same candidates.
//! assert_eq!(candidates("room/42", ["c", "a", "b"]), order);
//! ```

/// The members able to host `name`, preferred first (see the module docs). Members listed
/// twice count once.
pub fn candidates<'m, M>(name: &str, members: impl IntoIterator<Item = &'m M>) -> Vec<&'m M>
where
    M: AsRef<str> + ?Sized + 'm,
{
    let mut weighted: Vec<(u64, &str, &M)> = members
        .into_iter()
        .map(|member| (weight(name, member.as_ref()), member.as_ref(), member))
        .collect();
    // Heaviest first; ties (a 64-bit collision) broken by the member's name, so the order is
    // total and the same everywhere.
    weighted.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    weighted.dedup_by(|a, b| a.1 == b.1);
    weighted.into_iter().map(|(_, _, member)| member).collect()
}

/// The weight of `member` for `name`.
fn weight(name: &str, member: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    // The separator (a byte UTF-8 never contains) keeps ("ab", "c") apart from ("a", "bc").
    for byte in name.bytes().chain([0xff]).chain(member.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    mix(hash)
}

/// A 64-bit finaliser (splitmix64's), so that names differing in their last byte get
/// unrelated weights.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}@10.0.0.{i}")).collect()
    }

    fn first<'a>(name: &str, members: &'a [String]) -> &'a str {
        candidates(name, members)[0]
    }

    /// The weights are fixed by this file, not by the toolchain: a node of another build
    /// computes these same candidates.
    #[test]
    fn the_order_is_fixed_across_builds() {
        assert_eq!(weight("room/42", "a"), 0x2cf5_43df_9ed4_1979);
        assert_eq!(candidates("room/42", ["a", "b", "c"]), vec!["b", "c", "a"]);
    }

    /// 10,000 names over 32 members: the busiest member's share is within 15% of the mean.
    #[test]
    fn names_spread_evenly() {
        let members = members(32);
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for n in 0..10_000 {
            *counts.entry(first(&format!("name-{n}"), &members)).or_default() += 1;
        }
        let mean = 10_000.0 / 32.0;
        let most = *counts.values().max().expect("counts") as f64;
        assert_eq!(counts.len(), 32, "every member hosts some names");
        assert!(most / mean <= 1.15, "the busiest member has {most} names, the mean is {mean}");
    }

    proptest! {
        /// The candidates are every member once, in an order that does not depend on the
        /// order the members are listed in.
        #[test]
        fn every_node_computes_the_same_order(name in ".{1,40}", n in 1usize..12, seed in any::<u64>()) {
            let members = members(n);
            let mut shuffled = members.clone();
            let len = shuffled.len();
            shuffled.rotate_left((seed as usize) % len);
            shuffled.reverse();
            let (one, other) = (candidates(&name, &members), candidates(&name, &shuffled));
            prop_assert_eq!(&one, &other);
            prop_assert_eq!(one.len(), n);
        }

        /// A member leaving moves only the names it was first for, to their next candidate;
        /// a member arriving takes only names (and no others move).
        #[test]
        fn a_membership_change_moves_only_the_names_it_must(n in 2usize..12, leaving in any::<prop::sample::Index>()) {
            let all = members(n);
            let gone = leaving.index(n);
            let rest: Vec<String> = all.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, m)| m.clone()).collect();
            for k in 0..200 {
                let name = format!("name-{k}");
                let before = first(&name, &all);
                let after = first(&name, &rest);
                if before != all[gone] {
                    prop_assert_eq!(before, after, "{} moved though {} was not its host", name, all[gone]);
                } else {
                    prop_assert_eq!(after, candidates(&name, &all)[1].as_str(), "to its next candidate");
                }
            }
        }
    }
}
