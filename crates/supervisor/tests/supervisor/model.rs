//! A one_for_one supervisor against a model (OTP supervisor: restart types and the child
//! management calls), over random sequences of operations.
//!
//! The model is a list of children in start order, each with its restart type and whether it
//! runs (and under which pid, once known). After every operation `which_children` must match
//! it, and the runtime must hold exactly the supervisor and the running children. Each case
//! runs on a current-thread runtime, where a crashed child's exit signal reaches the
//! supervisor before the test's next call (see the crate docs).

use std::time::Duration;

use proptest::prelude::*;
use shoal_process::{ExitReason, Pid, Restart, Runtime};
use shoal_supervisor::{ChildKind, Intensity, SupervisorError, SupervisorRef, SupervisorSpec};

use crate::support::{Journal, Order, crash, within, worker};

/// The ids operations pick from; the first [`INITIAL`] are in the initial spec.
const IDS: [&str; 5] = ["c0", "c1", "c2", "c3", "c4"];
const INITIAL: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    /// The child stops itself with this reason (if it runs).
    Crash(usize, ExitReason),
    Terminate(usize),
    Restart(usize),
    Start(usize, Restart),
    Delete(usize),
}

fn restart_type() -> impl Strategy<Value = Restart> {
    prop_oneof![Just(Restart::Permanent), Just(Restart::Transient), Just(Restart::Temporary)]
}

fn exit_reason() -> impl Strategy<Value = ExitReason> {
    prop_oneof![
        Just(ExitReason::Normal),
        Just(ExitReason::Shutdown),
        Just(ExitReason::custom("crash")),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let child = 0..IDS.len();
    prop_oneof![
        3 => (child.clone(), exit_reason()).prop_map(|(child, reason)| Op::Crash(child, reason)),
        1 => child.clone().prop_map(Op::Terminate),
        1 => child.clone().prop_map(Op::Restart),
        1 => (child.clone(), restart_type()).prop_map(|(child, restart)| Op::Start(child, restart)),
        1 => child.prop_map(Op::Delete),
    ]
}

/// What the model expects of a child's pid.
#[derive(Clone, Copy, Debug)]
enum Expected {
    /// Running as this pid.
    Running(Pid),
    /// Running, restarted: under any pid but this one.
    Restarted(Pid),
    /// Not running.
    Stopped,
}

#[derive(Debug)]
struct Entry {
    id: &'static str,
    restart: Restart,
    pid: Expected,
}

/// OTP's restart types, written out independently of `Restart::restarts_after`.
fn is_restarted(restart: Restart, reason: &ExitReason) -> bool {
    match restart {
        Restart::Permanent => true,
        Restart::Transient => !matches!(reason, ExitReason::Normal | ExitReason::Shutdown),
        Restart::Temporary => false,
    }
}

struct Case {
    runtime: Runtime,
    journal: Journal,
    supervisor: SupervisorRef,
    model: Vec<Entry>,
}

impl Case {
    async fn start(initial: &[Restart]) -> Self {
        let runtime = Runtime::new().expect("a runtime builds inside tokio");
        let journal = Journal::new();
        let spec = initial.iter().zip(IDS).fold(
            SupervisorSpec::new(shoal_supervisor::Strategy::OneForOne)
                .intensity(Intensity { max_restarts: 1000, period: Duration::from_secs(60) }),
            |spec, (restart, id)| spec.child(worker(id, &journal).restart(*restart)),
        );
        let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
        let infos = within(supervisor.which_children()).await.expect("it answers");
        let model = initial
            .iter()
            .zip(IDS)
            .zip(infos)
            .map(|((restart, id), info)| Entry {
                id,
                restart: *restart,
                pid: Expected::Running(info.pid.expect("an initial child runs")),
            })
            .collect();
        Self { runtime, journal, supervisor, model }
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.model.iter().position(|entry| entry.id == id)
    }

    async fn apply(&mut self, op: Op) {
        match op {
            Op::Crash(child, reason) => self.crash(IDS[child], reason).await,
            Op::Terminate(child) => self.terminate(IDS[child]).await,
            Op::Restart(child) => self.restart(IDS[child]).await,
            Op::Start(child, restart) => self.start_child(IDS[child], restart).await,
            Op::Delete(child) => self.delete(IDS[child]).await,
        }
    }

    async fn crash(&mut self, id: &str, reason: ExitReason) {
        let Some(index) = self.position(id) else { return };
        let Expected::Running(pid) = self.model[index].pid else { return };
        assert_eq!(crash(&self.runtime, pid, Order::Stop(reason.clone())).await, reason);
        let restart = self.model[index].restart;
        if is_restarted(restart, &reason) {
            self.model[index].pid = Expected::Restarted(pid);
        } else if restart == Restart::Temporary {
            self.model.remove(index);
        } else {
            self.model[index].pid = Expected::Stopped;
        }
    }

    async fn terminate(&mut self, id: &str) {
        let result = within(self.supervisor.terminate_child(id)).await;
        let Some(index) = self.position(id) else {
            return assert_eq!(result, Err(SupervisorError::NotFound(id.into())));
        };
        assert_eq!(result, Ok(()));
        if let Expected::Running(pid) = self.model[index].pid {
            assert!(!self.runtime.is_alive(pid), "{id} ({pid}) was terminated");
        }
        if self.model[index].restart == Restart::Temporary {
            self.model.remove(index);
        } else {
            self.model[index].pid = Expected::Stopped;
        }
    }

    async fn restart(&mut self, id: &str) {
        let result = within(self.supervisor.restart_child(id)).await;
        let Some(index) = self.position(id) else {
            return assert_eq!(result, Err(SupervisorError::NotFound(id.into())));
        };
        match self.model[index].pid {
            Expected::Running(pid) => {
                assert_eq!(result, Err(SupervisorError::AlreadyStarted { id: id.into(), pid }));
            }
            Expected::Stopped => {
                self.model[index].pid =
                    Expected::Running(result.expect("a stopped child restarts"));
            }
            Expected::Restarted(_) => unreachable!("resolved by the check after every step"),
        }
    }

    async fn start_child(&mut self, id: &'static str, restart: Restart) {
        let child = worker(id, &self.journal).restart(restart);
        let result = within(self.supervisor.start_child(child)).await;
        match self.position(id).map(|index| self.model[index].pid) {
            None => {
                let pid = result.expect("a new child starts");
                self.model.push(Entry { id, restart, pid: Expected::Running(pid) });
            }
            Some(Expected::Running(pid)) => {
                assert_eq!(result, Err(SupervisorError::AlreadyStarted { id: id.into(), pid }));
            }
            Some(Expected::Stopped) => {
                assert_eq!(result, Err(SupervisorError::AlreadyPresent(id.into())));
            }
            Some(Expected::Restarted(_)) => unreachable!("resolved by the check after every step"),
        }
    }

    async fn delete(&mut self, id: &str) {
        let result = within(self.supervisor.delete_child(id)).await;
        match self.position(id) {
            None => assert_eq!(result, Err(SupervisorError::NotFound(id.into()))),
            Some(index) => match self.model[index].pid {
                Expected::Stopped => {
                    assert_eq!(result, Ok(()));
                    self.model.remove(index);
                }
                _ => assert_eq!(result, Err(SupervisorError::Running(id.into()))),
            },
        }
    }

    /// Compares `which_children` with the model, and learns the pids of restarted children.
    async fn check(&mut self, after: &Op) {
        let infos = within(self.supervisor.which_children()).await.expect("it answers");
        let ids: Vec<&str> = infos.iter().map(|info| info.id.as_str()).collect();
        let expected: Vec<&str> = self.model.iter().map(|entry| entry.id).collect();
        assert_eq!(ids, expected, "after {after:?}");
        for (entry, info) in self.model.iter_mut().zip(&infos) {
            assert_eq!((info.restart, info.kind), (entry.restart, ChildKind::Worker));
            match (entry.pid, info.pid) {
                (Expected::Running(pid), actual) => {
                    assert_eq!(actual, Some(pid), "after {after:?}")
                }
                (Expected::Restarted(old), Some(new)) => {
                    assert_ne!(new, old, "{} restarted after {after:?}", entry.id);
                    entry.pid = Expected::Running(new);
                }
                (Expected::Stopped, None) => {}
                (expected, actual) => {
                    panic!("{}: expected {expected:?}, found {actual:?} after {after:?}", entry.id)
                }
            }
        }
        let running: Vec<Pid> = infos.iter().filter_map(|info| info.pid).collect();
        assert!(running.iter().all(|pid| self.runtime.is_alive(*pid)));
        assert_eq!(self.runtime.process_count(), 1 + running.len(), "after {after:?}");
    }
}

async fn run(initial: Vec<Restart>, ops: Vec<Op>) {
    let mut case = Case::start(&initial).await;
    for op in ops {
        case.apply(op.clone()).await;
        case.check(&op).await;
    }
    assert_eq!(within(case.supervisor.stop()).await, ExitReason::Shutdown);
    assert_eq!(case.runtime.process_count(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    // OTP one_for_one with permanent, transient and temporary children: after any sequence of
    // exits and of start/terminate/restart/delete_child, which_children is what the restart
    // types and the management calls say it must be.
    #[test]
    fn one_for_one_follows_the_model(
        initial in proptest::collection::vec(restart_type(), INITIAL),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime builds");
        tokio.block_on(run(initial, ops));
    }
}
