//! A property test of links, trapped exits and monitors against a model of OTP's rules.
//!
//! Random forests of processes are spawned linked to their parent (some trap exits, some do
//! not), and a watcher monitors every one. Random actions (kill, exit signals, stops, panics) hit random
//! processes one at a time; after each, the test waits for exactly the reports the model
//! predicts (who gets a `Down` and with which reason, who traps which `Exit`, who runs
//! `terminate`) and compares them as a multiset. Finally every survivor is killed the same
//! way, so every monitor must have fired exactly once.
//!
//! The rules the model encodes: a killed process exits `Killed`; a process that does not trap
//! exits with the reason of an abnormally exited link (so `Killed` propagates as `Killed`) and
//! ignores a `Normal` one; a trapping process survives and gets `Exit{from, reason}`, except
//! from its parent, which it follows whatever the reason (as `gen_server` does); an exit
//! signal with the reason `Killed` is no kill (trappable, like any reason); every monitor
//! fires exactly once, with the exit reason; `terminate` runs for every process but the one
//! that was killed.
//!
//! Each action's cascade has a single origin, so every process it ends exits with the origin's
//! reason, whatever order the signals travel in: the expected reports are deterministic even on
//! a multi-threaded runtime.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use shoal_process::{ExitReason, Pid, Ref, Runtime, Signal, SpawnOptions};

use crate::support::{Cmd, Event, Inbox, Probe, reports, run, within};

const PANIC_MESSAGE: &str = "model panic";

/// Processes `0..n`; `parents[i]`, if any, is below `i` and linked to it.
#[derive(Clone, Debug)]
struct Forest {
    parents: Vec<Option<usize>>,
    traps: Vec<bool>,
}

/// What happens to a process.
#[derive(Clone, Debug)]
enum Act {
    /// `Runtime::kill`.
    Kill,
    /// `Runtime::exit` with this reason.
    Exit(ExitReason),
    /// The process stops itself with this reason.
    Stop(ExitReason),
    /// A handler panics.
    Panic,
}

fn forests() -> impl Strategy<Value = Forest> {
    let node = (any::<Index>(), prop::bool::weighted(0.8), prop::bool::weighted(0.35));
    prop::collection::vec(node, 1..=10).prop_map(|nodes| Forest {
        parents: nodes
            .iter()
            .enumerate()
            .map(|(i, (parent, linked, _))| (i > 0 && *linked).then(|| parent.index(i)))
            .collect(),
        traps: nodes.iter().map(|(_, _, trap)| *trap).collect(),
    })
}

fn acts() -> impl Strategy<Value = Act> {
    let reasons = || {
        prop_oneof![
            Just(ExitReason::Normal),
            Just(ExitReason::Shutdown),
            Just(ExitReason::custom("boom")),
        ]
    };
    prop_oneof![
        Just(Act::Kill),
        Just(Act::Exit(ExitReason::Killed)),
        reasons().prop_map(Act::Exit),
        reasons().prop_map(Act::Stop),
        Just(Act::Panic),
    ]
}

/// A report, with processes as their index in the forest.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// The watcher's monitor of this process fired.
    Down(usize, ExitReason),
    /// A trapping process got an exit signal, from a process or (`None`) from the runtime.
    Exit { at: usize, from: Option<usize>, reason: ExitReason },
    /// This process ran `terminate`.
    Terminated(usize, ExitReason),
}

/// OTP's rules, on indices.
struct Model {
    parents: Vec<Option<usize>>,
    traps: Vec<bool>,
    links: Vec<BTreeSet<usize>>,
    alive: Vec<bool>,
}

impl Model {
    fn new(forest: &Forest) -> Self {
        let n = forest.parents.len();
        let mut links = vec![BTreeSet::new(); n];
        for (child, parent) in forest.parents.iter().enumerate() {
            if let Some(parent) = *parent {
                links[child].insert(parent);
                links[parent].insert(child);
            }
        }
        Self {
            parents: forest.parents.clone(),
            traps: forest.traps.clone(),
            links,
            alive: vec![true; n],
        }
    }

    /// The reports `act` on `target` causes (none if the target is dead: nothing is done).
    fn apply(&mut self, target: usize, act: &Act) -> Vec<Seen> {
        let mut seen = Vec::new();
        match act {
            Act::Kill => self.spread(target, ExitReason::Killed, Some(target), &mut seen),
            // exit/2: trapped as a message; otherwise ends the process unless normal.
            Act::Exit(reason) if self.traps[target] => {
                seen.push(Seen::Exit { at: target, from: None, reason: reason.clone() });
            }
            Act::Exit(ExitReason::Normal) => {}
            Act::Exit(reason) | Act::Stop(reason) => self.die(target, reason.clone(), &mut seen),
            Act::Panic => self.die(target, ExitReason::Panic(PANIC_MESSAGE.into()), &mut seen),
        }
        seen
    }

    /// `first` exits with `reason`, and the exit spreads along links.
    fn die(&mut self, first: usize, reason: ExitReason, seen: &mut Vec<Seen>) {
        self.spread(first, reason, None, seen);
    }

    /// `first` exits with `reason` (it was killed if it is `killed`), and the exit spreads
    /// along links.
    fn spread(
        &mut self,
        first: usize,
        reason: ExitReason,
        killed: Option<usize>,
        seen: &mut Vec<Seen>,
    ) {
        self.alive[first] = false;
        let mut dying = vec![first];
        while let Some(process) = dying.pop() {
            seen.push(Seen::Down(process, reason.clone()));
            // terminate runs for every exit but a kill (those killed through a link were not
            // killed: they got an exit signal with the reason `Killed`).
            if killed != Some(process) {
                seen.push(Seen::Terminated(process, reason.clone()));
            }
            for peer in std::mem::take(&mut self.links[process]) {
                self.links[peer].remove(&process);
                // gen_server: even a trapping process follows its parent, whatever the reason.
                let from_parent = self.parents[peer] == Some(process);
                if self.traps[peer] && !from_parent {
                    let reason = reason.clone();
                    seen.push(Seen::Exit { at: peer, from: Some(process), reason });
                } else if self.traps[peer] || reason != ExitReason::Normal {
                    self.alive[peer] = false;
                    dying.push(peer);
                }
            }
        }
    }
}

/// The forest as it runs.
struct Live {
    runtime: Runtime,
    watcher: shoal_process::Addr<Probe>,
    processes: Vec<shoal_process::Addr<Probe>>,
    monitors: Vec<Ref>,
    inbox: Inbox,
}

impl Live {
    async fn start(forest: &Forest) -> Self {
        let runtime = Runtime::new().expect("inside tokio");
        let (events, inbox) = reports();
        let watcher = runtime.spawn(Probe::new(&events));
        let mut processes: Vec<shoal_process::Addr<Probe>> = Vec::new();
        let mut monitors = Vec::new();
        for (parent, trap) in forest.parents.iter().zip(&forest.traps) {
            let probe = if *trap { Probe::trapping(&events) } else { Probe::new(&events) };
            let options = match parent {
                Some(parent) => SpawnOptions::new().link(processes[*parent].pid()),
                None => SpawnOptions::new(),
            };
            let process = within(runtime.start_with(probe, options)).await.expect("started");
            let pid = process.pid();
            monitors.push(run(&watcher, move |_, ctx| ctx.monitor(pid)).await);
            processes.push(process);
        }
        Self { runtime, watcher, processes, monitors, inbox }
    }

    async fn perform(&self, target: usize, act: &Act) {
        let process = &self.processes[target];
        match act {
            Act::Kill => self.runtime.kill(process.pid()),
            Act::Exit(reason) => self.runtime.exit(process.pid(), reason.clone()),
            Act::Stop(reason) => {
                let reason = reason.clone();
                let stop = Cmd::Run(Box::new(move |_, ctx| ctx.stop(reason)));
                process.cast(stop).await.expect("alive");
            }
            Act::Panic => {
                let panic = Cmd::Run(Box::new(|_, _| panic!("{PANIC_MESSAGE}")));
                process.cast(panic).await.expect("alive");
            }
        }
    }

    fn index(&self, pid: Pid) -> Result<usize, TestCaseError> {
        self.processes
            .iter()
            .position(|process| process.pid() == pid)
            .ok_or_else(|| TestCaseError::fail(format!("a report about unknown pid {pid}")))
    }

    fn translate(&self, event: Event) -> Result<Seen, TestCaseError> {
        Ok(match event {
            Event::Signal(at, Signal::Down { monitor, pid, reason }) => {
                prop_assert_eq!(at, self.watcher.pid(), "only the watcher monitors");
                let process = self.index(pid)?;
                prop_assert_eq!(monitor, self.monitors[process], "the Down names its monitor");
                Seen::Down(process, reason)
            }
            Event::Signal(at, Signal::Exit { from, reason }) => {
                let from =
                    if from == self.runtime.system_pid() { None } else { Some(self.index(from)?) };
                Seen::Exit { at: self.index(at)?, from, reason }
            }
            Event::Terminated(pid, reason) => Seen::Terminated(self.index(pid)?, reason),
            other => return Err(TestCaseError::fail(format!("unexpected report {other:?}"))),
        })
    }

    /// Waits for as many reports as expected and compares them, in any order.
    async fn check(&mut self, mut expected: Vec<Seen>) -> Result<(), TestCaseError> {
        let events = self.inbox.take(expected.len()).await;
        let mut seen =
            events.into_iter().map(|event| self.translate(event)).collect::<Result<Vec<_>, _>>()?;
        let key = |seen: &Seen| format!("{seen:?}");
        seen.sort_by_key(key);
        expected.sort_by_key(key);
        prop_assert_eq!(seen, expected);
        Ok(())
    }
}

async fn check_forest(forest: Forest, actions: Vec<(Index, Act)>) -> Result<(), TestCaseError> {
    let n = forest.parents.len();
    let mut model = Model::new(&forest);
    let mut live = Live::start(&forest).await;
    for (target, act) in &actions {
        let target = target.index(n);
        if !model.alive[target] {
            continue;
        }
        let expected = model.apply(target, act);
        live.perform(target, act).await;
        live.check(expected).await?;
    }
    for target in 0..n {
        if model.alive[target] {
            let expected = model.apply(target, &Act::Kill);
            live.perform(target, &Act::Kill).await;
            live.check(expected).await?;
        }
    }
    // Every process has exited and its one Down was seen; nothing else may follow.
    prop_assert_eq!(live.runtime.processes(), [live.watcher.pid()]);
    run(&live.watcher, |_, _| ()).await;
    live.inbox.assert_empty();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    // OTP links, trapped exits and monitors: every Down, Exit and terminate is as the model says.
    #[test]
    fn links_and_monitors_follow_the_otp_model(
        forest in forests(),
        actions in prop::collection::vec((any::<Index>(), acts()), 1..=8),
    ) {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("a tokio runtime");
        tokio.block_on(check_forest(forest, actions))?;
    }
}
