//! Names: the record a name's register holds, and what each event writes to it.
//!
//! A name's register keeps its [`NameState`] for good: the child spec as data (so any node can
//! start it), its restart policy, the fencing token of the latest start, and what runs now, if
//! anything. Every start, by the name's first use, a restart or a takeover after a host was
//! lost, writes the last token plus one, so a process can prove it is the newest start of its
//! name to anything it writes to. A start is a claim: the node that wins the compare-and-set
//! starts the process and then records its pid with [`NameState::started`], which fails if the
//! claim was overtaken in between (the process must then stop: it is not the name's).
//!
//! ```
//! use shoal_registry::core::{NameRestart, NameState, Start};
//!
//! let spec = b"counter".to_vec();
//! let Start::Claimed(claim) = NameState::<&str, u32>::start(None, &spec, NameRestart::Temporary, "a", 7)
//! else { panic!() };
//! assert_eq!(claim.token, 1);
//! let running = NameState::started(Some(&claim), &"a", 1, 100).unwrap();
//! assert!(matches!(NameState::start(Some(&running), &spec, NameRestart::Temporary, "b", 3), Start::Running(_)));
//! ```

use serde::{Deserialize, Serialize};

/// What happens when a name's process exits (Paxtor's two policies; OTP's `transient` is
/// refused by the driver, as in Paxtor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NameRestart {
    /// Not restarted: the name is free again and its next use starts a fresh process.
    Temporary,
    /// Restarted when it exits, and on another node when its host is lost.
    Permanent,
}

/// A name's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameState<N, P> {
    /// The fencing token of the latest start (0 before the first).
    pub token: u64,
    /// The child spec, as the driver encodes it (a factory name and encoded arguments).
    pub spec: Vec<u8>,
    /// What happens when the process exits.
    pub restart: NameRestart,
    /// What runs now (or is being started); `None` when nothing does.
    pub run: Option<Run<N, P>>,
}

/// A start of a name: on which host, under which of its leases, with which pid once known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run<N, P> {
    /// The node hosting the process.
    pub host: N,
    /// The host's lease epoch the start was made under: when that lease ends, so does the run.
    pub epoch: u64,
    /// The process, once started; `None` while the host starts it.
    pub pid: Option<P>,
}

/// What a start decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start<N, P> {
    /// Write this record (by compare-and-set); once written, the caller's node starts the
    /// process with this record's token and then records its pid.
    Claimed(NameState<N, P>),
    /// Something runs (or is being started) already.
    Running(Run<N, P>),
}

/// What an exit decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exited<N, P> {
    /// A temporary name is free again: write this record.
    Freed(NameState<N, P>),
    /// A permanent name is started again on the same host: write this record, then start
    /// the process with its token.
    Restart(NameState<N, P>),
}

impl<N: Clone + PartialEq, P: Clone + PartialEq> NameState<N, P> {
    /// The name is used on `host` (holding its lease at `epoch`) and its register holds
    /// `current`: start it there unless something runs.
    pub fn start(
        current: Option<&Self>,
        spec: &[u8],
        restart: NameRestart,
        host: N,
        epoch: u64,
    ) -> Start<N, P> {
        if let Some(run) = current.and_then(|state| state.run.as_ref()) {
            return Start::Running(run.clone());
        }
        let token = current.map_or(0, |state| state.token) + 1;
        // A name keeps the spec and policy it was first made with.
        let (spec, restart) = match current {
            Some(state) => (state.spec.clone(), state.restart),
            None => (spec.to_vec(), restart),
        };
        Start::Claimed(NameState {
            token,
            spec,
            restart,
            run: Some(Run { host, epoch, pid: None }),
        })
    }

    /// An already running process `pid` on `host` is registered under the name: written if
    /// nothing runs; otherwise the run that holds it.
    pub fn register(
        current: Option<&Self>,
        host: N,
        epoch: u64,
        pid: P,
    ) -> Result<Self, Run<N, P>> {
        if let Some(run) = current.and_then(|state| state.run.as_ref()) {
            return Err(run.clone());
        }
        let (spec, restart) = current.map_or((Vec::new(), NameRestart::Temporary), |state| {
            (state.spec.clone(), state.restart)
        });
        let token = current.map_or(0, |state| state.token) + 1;
        Ok(NameState { token, spec, restart, run: Some(Run { host, epoch, pid: Some(pid) }) })
    }

    /// `host` started the process of the start with `token` as `pid`: the record to write,
    /// or `None` if that start was overtaken (the process is not the name's and must stop).
    pub fn started(current: Option<&Self>, host: &N, token: u64, pid: P) -> Option<Self> {
        let state = current?;
        let run = state.run.as_ref()?;
        if state.token != token || run.host != *host || run.pid.is_some() {
            return None;
        }
        Some(NameState { run: Some(Run { pid: Some(pid), ..run.clone() }), ..state.clone() })
    }

    /// The process of the start with `token` exited: the record to write, or `None` if that
    /// start is not the current one (nothing to do).
    pub fn exited(current: Option<&Self>, token: u64) -> Option<Exited<N, P>> {
        let state = current?;
        let run = state.run.as_ref()?;
        if state.token != token {
            return None;
        }
        Some(match state.restart {
            NameRestart::Temporary => Exited::Freed(NameState { run: None, ..state.clone() }),
            NameRestart::Permanent => Exited::Restart(NameState {
                token: token + 1,
                run: Some(Run { pid: None, ..run.clone() }),
                ..state.clone()
            }),
        })
    }

    /// The start with `token` failed before its process ran (the host could not build it):
    /// the record to write with nothing running, or `None` if that start is not the current
    /// one. A permanent name is not restarted after such a failure: its next use tries again.
    pub fn abandon(current: Option<&Self>, token: u64) -> Option<Self> {
        let state = current?;
        (state.token == token && state.run.is_some())
            .then(|| NameState { run: None, ..state.clone() })
    }

    /// The lease `epoch` of `host` has ended (its deadline passed and the lease was claimed):
    /// the name's run under it is over. The record to write (nothing runs; a permanent name is
    /// then started again, on the next candidate, by whoever took the lease over), or `None`
    /// if the name does not run under that lease.
    pub fn lease_ended(current: Option<&Self>, host: &N, epoch: u64) -> Option<Self> {
        let state = current?;
        let run = state.run.as_ref()?;
        (run.host == *host && run.epoch == epoch).then(|| NameState { run: None, ..state.clone() })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Step {
        /// A node uses the name (and starts it if nothing runs, then records the pid).
        Use { host: u8, records_pid: bool },
        /// A running process registers under the name.
        Register { host: u8 },
        /// The process of the start `back` tokens ago exits.
        Exit { back: u64 },
        /// A host's lease ends.
        LeaseEnds { host: u8 },
        /// The host of the current run reports a pid for the start `back` tokens ago.
        Started { back: u64 },
    }

    fn steps() -> impl Strategy<Value = (bool, Vec<Step>)> {
        let host = 0u8..3;
        let step = prop_oneof![
            (host.clone(), any::<bool>())
                .prop_map(|(host, records_pid)| Step::Use { host, records_pid }),
            host.clone().prop_map(|host| Step::Register { host }),
            (0u64..3).prop_map(|back| Step::Exit { back }),
            host.prop_map(|host| Step::LeaseEnds { host }),
            (0u64..3).prop_map(|back| Step::Started { back }),
        ];
        (any::<bool>(), proptest::collection::vec(step, 0..60))
    }

    proptest! {
        /// Applied one after another to one register, any events keep the rules: one run at
        /// most; every new run has a token above every token before; a pid is recorded only
        /// for the current start; a temporary name is free after its process exits, a
        /// permanent one is started again; a run ends with its host's lease.
        #[test]
        fn one_run_at_a_time_with_growing_tokens((permanent, steps) in steps()) {
            let restart = if permanent { NameRestart::Permanent } else { NameRestart::Temporary };
            let mut record: Option<NameState<u8, u64>> = None;
            let mut highest = 0u64;
            let mut next_pid = 0u64;
            // Each host's lease epoch: bumped when a lease ends.
            let mut epochs = [0u64; 3];
            for step in steps {
                match step {
                    Step::Use { host, records_pid } => {
                        let epoch = epochs[usize::from(host)];
                        match NameState::start(record.as_ref(), b"spec", restart, host, epoch) {
                            Start::Claimed(claim) => {
                                prop_assert!(record.as_ref().is_none_or(|r| r.run.is_none()));
                                prop_assert!(claim.token > highest);
                                highest = claim.token;
                                prop_assert_eq!(claim.restart, record.as_ref().map_or(restart, |r| r.restart));
                                record = Some(claim);
                                if records_pid {
                                    next_pid += 1;
                                    let written = NameState::started(record.as_ref(), &host, highest, next_pid);
                                    prop_assert!(written.is_some());
                                    record = written;
                                    let again = NameState::started(record.as_ref(), &host, highest, next_pid + 1);
                                    prop_assert!(again.is_none(), "a pid is recorded once");
                                }
                            }
                            Start::Running(run) => {
                                prop_assert_eq!(Some(&run), record.as_ref().and_then(|r| r.run.as_ref()));
                            }
                        }
                    }
                    Step::Register { host } => {
                        next_pid += 1;
                        let epoch = epochs[usize::from(host)];
                        match NameState::register(record.as_ref(), host, epoch, next_pid) {
                            Ok(written) => {
                                prop_assert!(written.token > highest);
                                highest = written.token;
                                record = Some(written);
                            }
                            Err(run) => prop_assert_eq!(Some(&run), record.as_ref().and_then(|r| r.run.as_ref())),
                        }
                    }
                    Step::Exit { back } => {
                        let token = highest.saturating_sub(back);
                        let current = record.as_ref().is_some_and(|r| r.run.is_some() && r.token == token);
                        match NameState::exited(record.as_ref(), token) {
                            Some(Exited::Freed(written)) => {
                                prop_assert!(current);
                                prop_assert_eq!(written.restart, NameRestart::Temporary);
                                prop_assert!(written.run.is_none());
                                record = Some(written);
                            }
                            Some(Exited::Restart(written)) => {
                                prop_assert!(current);
                                prop_assert_eq!(written.restart, NameRestart::Permanent);
                                prop_assert!(written.token > highest);
                                highest = written.token;
                                prop_assert_eq!(written.run.as_ref().map(|r| r.pid), Some(None));
                                record = Some(written);
                            }
                            None => prop_assert!(!current, "the current start's exit is handled"),
                        }
                    }
                    Step::Started { back } => {
                        let Some(run) = record.as_ref().and_then(|r| r.run.clone()) else { continue };
                        next_pid += 1;
                        let token = highest.saturating_sub(back);
                        let written = NameState::started(record.as_ref(), &run.host, token, next_pid);
                        let expected = back == 0 && token == highest && run.pid.is_none();
                        prop_assert_eq!(written.is_some(), expected, "only the current start records its pid, once");
                        if let Some(written) = written {
                            record = Some(written);
                        }
                    }
                    Step::LeaseEnds { host } => {
                        let epoch = epochs[usize::from(host)];
                        epochs[usize::from(host)] += 1;
                        let runs_there = record.as_ref().and_then(|r| r.run.as_ref()).is_some_and(|run| run.host == host && run.epoch == epoch);
                        match NameState::lease_ended(record.as_ref(), &host, epoch) {
                            Some(written) => {
                                prop_assert!(runs_there);
                                prop_assert!(written.run.is_none());
                                prop_assert_eq!(written.token, highest);
                                record = Some(written);
                            }
                            None => prop_assert!(!runs_there),
                        }
                    }
                }
                if let Some(state) = &record {
                    prop_assert_eq!(state.token, highest);
                }
            }
        }
    }

    #[test]
    fn a_start_overtaken_records_no_pid() {
        let Start::Claimed(first) =
            NameState::<u8, u64>::start(None, b"s", NameRestart::Permanent, 1, 0)
        else {
            panic!("free")
        };
        let ended = NameState::lease_ended(Some(&first), &1, 0).expect("runs under that lease");
        let Start::Claimed(second) =
            NameState::start(Some(&ended), b"s", NameRestart::Permanent, 2, 0)
        else {
            panic!("free again")
        };
        assert_eq!(second.token, 2);
        assert_eq!(NameState::started(Some(&second), &1, 1, 10), None, "the first start lost");
        let running = NameState::started(Some(&second), &2, 2, 11).expect("the current start");
        let Some(Exited::Restart(again)) = NameState::exited(Some(&running), 2) else {
            panic!("a permanent name restarts")
        };
        assert_eq!(again.token, 3);
        assert_eq!(NameState::started(Some(&again), &2, 2, 12), None, "the old start, same host");
    }
}
