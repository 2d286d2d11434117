//! Seeded choices from ordered sets, shared by both cores.
//!
//! Every set the cores draw from is a `BTreeSet`, so that with the same seed and the same
//! inputs a core makes the same choices in every run (a `HashSet` would iterate in a
//! different order each time).

use std::collections::BTreeSet;

use rand::RngExt;
use rand::rngs::SmallRng;

/// One element of `set` (not in `except`), chosen uniformly; `None` if there is none.
pub(crate) fn choose<P: Ord + Clone>(
    rng: &mut SmallRng,
    set: &BTreeSet<P>,
    except: &[&P],
) -> Option<P> {
    let candidates: Vec<&P> = set.iter().filter(|p| !except.contains(p)).collect();
    if candidates.is_empty() {
        return None;
    }
    Some(candidates[rng.random_range(0..candidates.len())].clone())
}

/// Up to `amount` distinct elements of `set` (not in `except`), chosen uniformly, in random
/// order (a partial Fisher-Yates shuffle).
pub(crate) fn sample<P: Ord + Clone>(
    rng: &mut SmallRng,
    set: &BTreeSet<P>,
    amount: usize,
    except: &[&P],
) -> Vec<P> {
    let mut candidates: Vec<&P> = set.iter().filter(|p| !except.contains(p)).collect();
    let amount = amount.min(candidates.len());
    for index in 0..amount {
        let pick = rng.random_range(index..candidates.len());
        candidates.swap(index, pick);
    }
    candidates.truncate(amount);
    candidates.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// A sample has no duplicates, respects the exclusions, and is as large as it can be.
    #[test]
    fn sample_is_distinct_and_bounded() {
        let mut rng = SmallRng::seed_from_u64(7);
        let set: BTreeSet<u32> = (0..10).collect();
        let picked = sample(&mut rng, &set, 4, &[&3]);
        assert_eq!(picked.len(), 4);
        assert!(!picked.contains(&3));
        let distinct: BTreeSet<u32> = picked.iter().copied().collect();
        assert_eq!(distinct.len(), 4);
        assert_eq!(sample(&mut rng, &set, 20, &[]).len(), 10);
        assert_eq!(choose(&mut rng, &set, &[&0, &1, &2, &3, &4, &5, &6, &7, &8]), Some(9));
        assert_eq!(choose(&mut rng, &BTreeSet::<u32>::new(), &[]), None);
    }
}
