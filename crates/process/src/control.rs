//! The part of a process's shared state that does not depend on its behaviour: pending exits,
//! trap flag, links, monitors on it, timers aimed at it, and its registered name.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use tokio::sync::oneshot;

use crate::timer::TimerShared;
use crate::{ExitReason, Pid, Ref};

/// Who is told when a monitored process exits.
pub(crate) enum Watcher {
    /// A process, local or remote, through a `Down` signal.
    Process(Pid),
    /// A future waiting in [`crate::Runtime::watch`].
    Future(oneshot::Sender<ExitReason>),
}

/// How much may interrupt the code a process is running.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interruptible {
    /// Any pending exit ends a handler.
    ByAnyExit,
    /// Only a kill ends `terminate` (which runs because of an exit).
    ByKill,
}

const EXIT: u8 = 1;
const KILL: u8 = 2;

/// Returned by operations on a process that has already exited.
pub(crate) struct Exited;

/// Who a process is tied to: links, monitors on it, timers aimed at it, its name. Handed to
/// the runtime when the process exits, to notify and clean up.
///
/// Monitors and timers are maps by reference: a server watched by many short-lived clients,
/// each of which removes its monitor when it exits, or a process that re-arms a timer at
/// every message, must not pay for a search of all the others at every removal.
#[derive(Default)]
pub(crate) struct Relations {
    pub(crate) links: Vec<Pid>,
    pub(crate) monitors: HashMap<Ref, Watcher>,
    pub(crate) timers: HashMap<Ref, Arc<TimerShared>>,
    pub(crate) name: Option<String>,
}

/// `repr(C)`: the atomics the process touches for every letter last (see `Cell`).
#[repr(C)]
pub(crate) struct Control {
    /// The process's pid (here rather than in `Cell`, so that a running process's mark can
    /// name it: see `crate::current`).
    pub(crate) pid: Pid,
    state: Mutex<ControlState>,
    /// Messages in the batch the process took but has not handled yet.
    batch_len: AtomicUsize,
    /// `EXIT` and `KILL` bits: read on every message, so kept outside the lock.
    interrupt: AtomicU8,
    trapping: AtomicBool,
}

/// Every process has a control block, but most never link, are never monitored or named, and
/// only exit once: those parts are boxed and allocated on first use, so that an idle process
/// costs 32 bytes here rather than 200.
#[derive(Default)]
struct ControlState {
    /// The task, when a handler is waiting on something other than the mailbox.
    handler_waker: Option<Waker>,
    /// `None` until the first link, monitor, timer or name.
    relations: Option<Box<Relations>>,
    /// `None` until an exit is requested or begins.
    exit: Option<Box<ExitState>>,
}

#[derive(Default)]
struct ExitState {
    pending_exit: Option<ExitReason>,
    /// Why the process is ending, from the moment that is decided until it has exited.
    ending: Option<ExitReason>,
    exited: Option<ExitReason>,
    /// The plan of a hand-off ([`crate::Runtime::hand_off`]): who takes the process's mail once
    /// it has exited. Typed by the hand-off module, which the process's task hands it back to
    /// (kept as `Any` here so that this module, which every other one uses, uses none of them).
    successor: Option<Box<dyn Any + Send>>,
}

impl ControlState {
    fn exited(&self) -> Option<&ExitReason> {
        self.exit.as_ref().and_then(|exit| exit.exited.as_ref())
    }

    fn exit_mut(&mut self) -> &mut ExitState {
        self.exit.get_or_insert_default()
    }

    fn relations(&self) -> Option<&Relations> {
        self.relations.as_deref()
    }

    fn relations_mut(&mut self) -> &mut Relations {
        self.relations.get_or_insert_default()
    }
}

impl Control {
    /// Where the fields the process touches for every letter begin.
    #[cfg(test)]
    pub(crate) const PER_LETTER_OFFSET: usize = std::mem::offset_of!(Control, batch_len);

    pub(crate) fn new(pid: Pid) -> Self {
        Self {
            pid,
            interrupt: AtomicU8::new(0),
            trapping: AtomicBool::new(false),
            batch_len: AtomicUsize::new(0),
            state: Mutex::new(ControlState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // The small accessors below run for every letter, from the process loop, which is generic
    // over the behaviour and so compiled in the crate that defines it: `#[inline]` lets them
    // be inlined there.

    pub(crate) fn set_trapping(&self, trapping: bool) {
        self.trapping.store(trapping, Ordering::Release);
    }

    #[inline]
    pub(crate) fn is_trapping(&self) -> bool {
        self.trapping.load(Ordering::Acquire)
    }

    #[inline]
    pub(crate) fn set_batch_len(&self, len: usize) {
        self.batch_len.store(len, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn batch_len(&self) -> usize {
        self.batch_len.load(Ordering::Relaxed)
    }

    /// Asks the process to exit with `reason`: the first reason stays (a reason of `Killed`
    /// relayed from a link is an exit like any other). Returns the waker of a handler to wake,
    /// if any; the caller must also wake the mailbox.
    pub(crate) fn request_exit(&self, reason: ExitReason) -> Option<Waker> {
        self.request(reason, EXIT)
    }

    /// Kills the process: a kill always wins, even over an exit already pending, and it also
    /// interrupts `terminate` (or keeps it from running). Returns the waker as
    /// [`Control::request_exit`] does.
    pub(crate) fn request_kill(&self) -> Option<Waker> {
        self.request(ExitReason::Killed, EXIT | KILL)
    }

    fn request(&self, reason: ExitReason, bits: u8) -> Option<Waker> {
        let mut state = self.lock();
        if state.exited().is_some() {
            return None;
        }
        let exit = state.exit_mut();
        if bits & KILL != 0 || exit.pending_exit.is_none() {
            exit.pending_exit = Some(reason);
        }
        self.interrupt.fetch_or(bits, Ordering::SeqCst);
        state.handler_waker.take()
    }

    /// Whether running code of this kind must stop now.
    #[inline]
    pub(crate) fn is_interrupted(&self, scope: Interruptible) -> bool {
        let bits = self.interrupt.load(Ordering::SeqCst);
        match scope {
            Interruptible::ByAnyExit => bits != 0,
            Interruptible::ByKill => bits & KILL != 0,
        }
    }

    /// The reason of the pending exit (`Killed` if somehow none was recorded).
    pub(crate) fn pending_reason(&self) -> ExitReason {
        let state = self.lock();
        let pending = state.exit.as_ref().and_then(|exit| exit.pending_exit.clone());
        pending.unwrap_or(ExitReason::Killed)
    }

    /// Remembers the task to wake if an exit arrives while a handler waits.
    pub(crate) fn register_handler_waker(&self, waker: &Waker) {
        let mut state = self.lock();
        match &state.handler_waker {
            Some(known) if known.will_wake(waker) => {}
            _ => state.handler_waker = Some(waker.clone()),
        }
    }

    pub(crate) fn add_link(&self, peer: Pid) -> Result<(), Exited> {
        let mut state = self.lock();
        if state.exited().is_some() {
            return Err(Exited);
        }
        let links = &mut state.relations_mut().links;
        if !links.contains(&peer) {
            links.push(peer);
        }
        Ok(())
    }

    /// Removes a link; `false` if there was none.
    pub(crate) fn remove_link(&self, peer: Pid) -> bool {
        let mut state = self.lock();
        let Some(relations) = state.relations.as_mut() else { return false };
        let before = relations.links.len();
        relations.links.retain(|linked| *linked != peer);
        relations.links.len() != before
    }

    pub(crate) fn links(&self) -> Vec<Pid> {
        self.lock().relations().map(|relations| relations.links.clone()).unwrap_or_default()
    }

    pub(crate) fn add_monitor(&self, monitor: Ref, watcher: Watcher) -> Result<(), Watcher> {
        let mut state = self.lock();
        if state.exited().is_some() {
            return Err(watcher);
        }
        state.relations_mut().monitors.insert(monitor, watcher);
        Ok(())
    }

    pub(crate) fn remove_monitor(&self, monitor: Ref) {
        // Taken out under the lock, dropped after it (a watch's sender wakes its future).
        let removed = self.lock().relations.as_mut().and_then(|r| r.monitors.remove(&monitor));
        drop(removed);
    }

    pub(crate) fn monitor_count(&self) -> usize {
        self.lock().relations().map_or(0, |relations| relations.monitors.len())
    }

    pub(crate) fn add_timer(&self, id: Ref, timer: Arc<TimerShared>) -> Result<(), Exited> {
        let mut state = self.lock();
        if state.exited().is_some() {
            return Err(Exited);
        }
        state.relations_mut().timers.insert(id, timer);
        Ok(())
    }

    /// Forgets a timer that fired or was cancelled.
    pub(crate) fn forget_timer(&self, id: Ref) {
        if let Some(relations) = self.lock().relations.as_mut() {
            relations.timers.remove(&id);
        }
    }

    /// Timers aimed at the process that have neither fired nor been cancelled.
    pub(crate) fn timer_count(&self) -> usize {
        self.lock().relations().map_or(0, |relations| relations.timers.len())
    }

    /// Records the registered name; refused if the process has one or has exited.
    pub(crate) fn set_name(&self, name: &str) -> Result<(), Option<String>> {
        let mut state = self.lock();
        if state.exited().is_some() {
            return Err(None);
        }
        let relations = state.relations_mut();
        if let Some(current) = &relations.name {
            return Err(Some(current.clone()));
        }
        relations.name = Some(name.to_owned());
        Ok(())
    }

    pub(crate) fn clear_name(&self) {
        if let Some(relations) = self.lock().relations.as_mut() {
            relations.name = None;
        }
    }

    pub(crate) fn name(&self) -> Option<String> {
        self.lock().relations().and_then(|relations| relations.name.clone())
    }

    /// Marks the process exited and hands over what must be notified or cleaned up. From now
    /// on links and monitors are refused.
    pub(crate) fn finish(&self, reason: ExitReason) -> Relations {
        let mut state = self.lock();
        state.exit_mut().exited = Some(reason);
        state.handler_waker = None;
        state.relations.take().map(|relations| *relations).unwrap_or_default()
    }

    /// The exit reason, once the process has exited.
    pub(crate) fn exit_reason(&self) -> Option<ExitReason> {
        self.lock().exited().cloned()
    }

    /// Records why the process is ending, as soon as that is decided: before the reply handles
    /// it holds (in a handler, in its state, in `terminate`) are dropped, so their callers learn
    /// this reason rather than `NoReply`. The first reason stays, but a kill wins, as in
    /// [`Control::request_kill`].
    pub(crate) fn begin_exit(&self, reason: &ExitReason) {
        let killed = self.is_interrupted(Interruptible::ByKill);
        let mut state = self.lock();
        let exit = state.exit_mut();
        if exit.ending.is_none() || killed {
            exit.ending = Some(if killed { ExitReason::Killed } else { reason.clone() });
        }
    }

    /// Replaces the reason the process is ending with: `terminate` panicked, and the panic is
    /// now why it exits.
    pub(crate) fn revise_exit(&self, reason: &ExitReason) {
        self.lock().exit_mut().ending = Some(reason.clone());
    }

    /// Records the plan of a hand-off, for the process's task to carry out as it exits.
    pub(crate) fn set_successor(&self, plan: Box<dyn Any + Send>) {
        self.lock().exit_mut().successor = Some(plan);
    }

    /// Takes the plan of a hand-off, if the process was handed off.
    pub(crate) fn take_successor(&self) -> Option<Box<dyn Any + Send>> {
        self.lock().exit.as_mut().and_then(|exit| exit.successor.take())
    }

    /// What a caller whose reply handle was dropped is told: the exit reason once the process
    /// has exited or is exiting, `None` while it lives on (the handle was dropped unanswered).
    pub(crate) fn reason_for_callers(&self) -> Option<ExitReason> {
        let state = self.lock();
        let exit = state.exit.as_ref()?;
        exit.exited.clone().or_else(|| exit.ending.clone())
    }
}
