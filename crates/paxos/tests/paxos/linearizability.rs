//! The linearisability checker (shoal-sim) on the register model the simulations use: it
//! accepts what a sequential register does, and rejects a history with one answer changed.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use shoal_paxos::{Change, Entry, Outcome, Register};
use shoal_sim::linearizability::{Model, Operation, check};

use super::sim::RegisterModel;

fn any_change() -> impl Strategy<Value = Change> {
    let value = prop_oneof![Just(None), Just(Some(Entry::new("a"))), Just(Some(Entry::new("b"))),];
    prop_oneof![
        Just(Change::Read),
        value.clone().prop_map(|v| Change::Set(v.unwrap_or_else(|| Entry::new("c")))),
        (value.clone(), value).prop_map(|(expected, new)| Change::CompareAndSet { expected, new }),
        Just(Change::Delete),
        Just(Change::Add(1)),
    ]
}

/// Runs `changes` one after another on a register, each taking 10 ms and the next starting
/// when it answered; `lost[i]` makes operation i indeterminate (no answer).
fn sequential(changes: &[Change], lost: &[bool]) -> Vec<Operation<Change, Outcome>> {
    let t0 = Instant::now();
    let mut state = RegisterModel.init();
    let mut history = Vec::new();
    for (i, change) in changes.iter().enumerate() {
        let (after, applied) = change.apply(&state);
        let outcome = Outcome { before: state.clone(), after: after.clone(), applied, epoch: 0 };
        let call = t0 + Duration::from_millis(10 * i as u64);
        let response = (!lost[i]).then(|| (call + Duration::from_millis(5), outcome));
        history.push(Operation { op: change.clone(), call, response });
        state = after;
    }
    history
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// What a sequential register does is linearisable, with any operations indeterminate.
    #[test]
    fn sequential_histories_pass(
        changes in proptest::collection::vec(any_change(), 1..12),
        lost in proptest::collection::vec(any::<bool>(), 12),
    ) {
        prop_assert!(check(&RegisterModel, &sequential(&changes, &lost)).is_ok());
    }

    /// Changing one answer of a sequential history (whose order real time fixes) is caught.
    #[test]
    fn a_wrong_answer_is_caught(
        changes in proptest::collection::vec(any_change(), 1..12),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut history = sequential(&changes, &[false; 12]);
        let i = pick.index(history.len());
        let (_, outcome) = history[i].response.as_mut().unwrap();
        outcome.after = Register { version: outcome.after.version + 7, entry: None };
        prop_assert!(check(&RegisterModel, &history).is_err());
    }
}
