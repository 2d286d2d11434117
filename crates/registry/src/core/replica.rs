//! Node-authority replication, sans-IO: each node is the only writer of its own entries and
//! replicates them to its peers, which keep a read-only view of every peer's entries. Process
//! groups keep their members in it (a member is an entry of the node its process runs on), and
//! the hub its children.
//!
//! **Changes** to a node's own entries are numbered (`seq`) within the node's *run* (a number
//! that grows with every start of the replica on that node) and sent to every peer at once as a
//! [`ReplicaMessage::Delta`]. A peer applies a delta that follows what it has; one from a newer
//! run replaces the view (the entries of a run that ended died with it); a gap (a delta lost,
//! or reordered) makes it ask the origin for its whole state ([`ReplicaMessage::Pull`]), which
//! comes back as a [`ReplicaMessage::Full`].
//!
//! **Membership.** A peer that comes up is sent this node's whole state, and asked for its own;
//! a peer that goes down has its view dropped (its entries vanish from every survivor), and
//! comes back whole when it reconnects. Messages from a node that is not up here are ignored,
//! so a late message cannot bring back a view that was dropped.
//!
//! **Anti-entropy.** Every `sync_every` each node tells its peers where its own entries stand
//! ([`ReplicaMessage::Digest`]: run and seq); a peer whose view is behind pulls. So a node that
//! missed deltas converges within one period, whatever was lost.
//!
//! What it does not do: bound a `Full` message (its size grows with the node's own entries;
//! the driver splits nothing), or decide who is a peer (the driver says, from the transport's
//! events).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use shoal_registry::core::{Replica, ReplicaOutput};
//!
//! let now = Instant::now();
//! let mut a: Replica<&str, &str, u32> = Replica::new("a", 1, Duration::from_secs(1), now);
//! let mut b: Replica<&str, &str, u32> = Replica::new("b", 1, Duration::from_secs(1), now);
//! a.peer_up("b");
//! b.peer_up("a");
//! for output in a.set(vec![("x", Some(7))]) {
//!     if let ReplicaOutput::Send { to: "b", message } = output {
//!         b.receive(&"a", message);
//!     }
//! }
//! assert_eq!(b.view(&"a").and_then(|entries| entries.get("x")), Some(&7));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What replicas send each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaMessage<K, V> {
    /// Changes to the sender's own entries, the first numbered `first`, then one by one
    /// (`None` removes the key).
    Delta {
        /// The sender's run.
        run: u64,
        /// The number of the first change.
        first: u64,
        /// The changes, in order.
        changes: Vec<(K, Option<V>)>,
    },
    /// The sender's own entries, all of them, as of its change `seq`.
    Full {
        /// The sender's run.
        run: u64,
        /// Its last change.
        seq: u64,
        /// Its entries.
        entries: Vec<(K, V)>,
    },
    /// "Send me your whole state."
    Pull,
    /// "My own entries stand at `seq` of run `run`."
    Digest {
        /// The sender's run.
        run: u64,
        /// Its last change.
        seq: u64,
    },
}

/// What a call on a [`Replica`] asks of the driver, or tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaOutput<N, K, V> {
    /// Send `message` to the replica on `to`.
    Send {
        /// The peer.
        to: N,
        /// The message.
        message: ReplicaMessage<K, V>,
    },
    /// An entry of `origin` changed as this node sees it (`value`: the new value, or `None`
    /// when it went), in the order the origin made its changes.
    Changed {
        /// The node whose entry it is.
        origin: N,
        /// The key.
        key: K,
        /// Its value now.
        value: Option<V>,
    },
}

/// What this node holds of one peer's entries.
#[derive(Clone, Debug)]
struct View<K, V> {
    run: u64,
    seq: u64,
    entries: BTreeMap<K, V>,
}

/// One node's replica: its own entries and its views of its peers' (see the module docs).
#[derive(Clone, Debug)]
pub struct Replica<N, K, V> {
    me: N,
    run: u64,
    seq: u64,
    own: BTreeMap<K, V>,
    peers: BTreeSet<N>,
    views: BTreeMap<N, View<K, V>>,
    sync_every: Duration,
    next_sync: Instant,
}

impl<N, K, V> Replica<N, K, V>
where
    N: Ord + Clone,
    K: Ord + Clone,
    V: Clone + PartialEq,
{
    /// The replica of node `me` in its run `run` (larger than every earlier run of `me`), with
    /// no entries and no peers; anti-entropy every `sync_every` from `now`.
    pub fn new(me: N, run: u64, sync_every: Duration, now: Instant) -> Self {
        Replica {
            me,
            run,
            seq: 0,
            own: BTreeMap::new(),
            peers: BTreeSet::new(),
            views: BTreeMap::new(),
            sync_every,
            next_sync: now + sync_every,
        }
    }

    /// The number of this node's last change (in its run).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// This node's run.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// Where this node's view of `peer` stands: its run and last change, if it has one.
    pub fn seen(&self, peer: &N) -> Option<(u64, u64)> {
        self.views.get(peer).map(|view| (view.run, view.seq))
    }

    /// This node's own entries.
    pub fn own(&self) -> &BTreeMap<K, V> {
        &self.own
    }

    /// What this node holds of `peer`'s entries, if it has a view of it.
    pub fn view(&self, peer: &N) -> Option<&BTreeMap<K, V>> {
        self.views.get(peer).map(|view| &view.entries)
    }

    /// Every entry this node sees, its own first, each with its origin.
    pub fn entries(&self) -> impl Iterator<Item = (&N, &K, &V)> {
        let own = self.own.iter().map(move |(key, value)| (&self.me, key, value));
        let theirs = self
            .views
            .iter()
            .flat_map(|(origin, view)| view.entries.iter().map(move |(k, v)| (origin, k, v)));
        own.chain(theirs)
    }

    /// The peers up now.
    pub fn peers(&self) -> &BTreeSet<N> {
        &self.peers
    }

    /// Changes this node's own entries (`None` removes a key), in order: one delta to every
    /// peer, and a `Changed` for each change that changed something.
    pub fn set(&mut self, changes: Vec<(K, Option<V>)>) -> Vec<ReplicaOutput<N, K, V>> {
        let mut out = Vec::new();
        let mut made = Vec::with_capacity(changes.len());
        for (key, value) in changes {
            let before = match &value {
                Some(value) => self.own.insert(key.clone(), value.clone()),
                None => self.own.remove(&key),
            };
            if before != value {
                out.push(ReplicaOutput::Changed {
                    origin: self.me.clone(),
                    key: key.clone(),
                    value: value.clone(),
                });
                made.push((key, value));
            }
        }
        if made.is_empty() {
            return out;
        }
        let first = self.seq + 1;
        self.seq += made.len() as u64;
        let message = ReplicaMessage::Delta { run: self.run, first, changes: made };
        out.extend(self.to_peers(&message));
        out
    }

    /// `peer` is up: it is sent this node's state and asked for its own.
    pub fn peer_up(&mut self, peer: N) -> Vec<ReplicaOutput<N, K, V>> {
        if peer == self.me {
            return Vec::new();
        }
        self.peers.insert(peer.clone());
        vec![
            ReplicaOutput::Send { to: peer.clone(), message: self.full() },
            ReplicaOutput::Send { to: peer, message: ReplicaMessage::Pull },
        ]
    }

    /// `peer` is down: its entries vanish here.
    pub fn peer_down(&mut self, peer: &N) -> Vec<ReplicaOutput<N, K, V>> {
        self.peers.remove(peer);
        let mut out = Vec::new();
        if let Some(view) = self.views.remove(peer) {
            for key in view.entries.into_keys() {
                out.push(ReplicaOutput::Changed { origin: peer.clone(), key, value: None });
            }
        }
        out
    }

    /// A message from `from`'s replica.
    pub fn receive(
        &mut self,
        from: &N,
        message: ReplicaMessage<K, V>,
    ) -> Vec<ReplicaOutput<N, K, V>> {
        if !self.peers.contains(from) {
            return Vec::new();
        }
        let mut out = Vec::new();
        match message {
            ReplicaMessage::Pull => {
                out.push(ReplicaOutput::Send { to: from.clone(), message: self.full() });
            }
            ReplicaMessage::Digest { run, seq } => {
                let behind = match self.views.get(from) {
                    Some(view) => view.run < run || (view.run == run && view.seq < seq),
                    None => true,
                };
                if behind {
                    out.push(ReplicaOutput::Send {
                        to: from.clone(),
                        message: ReplicaMessage::Pull,
                    });
                }
            }
            ReplicaMessage::Full { run, seq, entries } => {
                let newer = match self.views.get(from) {
                    Some(view) => run > view.run || (run == view.run && seq >= view.seq),
                    None => true,
                };
                if newer {
                    let entries: BTreeMap<K, V> = entries.into_iter().collect();
                    self.replace_view(from, View { run, seq, entries }, &mut out);
                }
            }
            ReplicaMessage::Delta { run, first, changes } => {
                self.apply_delta(from, run, first, changes, &mut out);
            }
        }
        out
    }

    /// When [`Replica::tick`] is due next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_sync
    }

    /// Anti-entropy, when due: a digest of this node's own entries to every peer.
    pub fn tick(&mut self, now: Instant) -> Vec<ReplicaOutput<N, K, V>> {
        if now < self.next_sync {
            return Vec::new();
        }
        self.next_sync = now + self.sync_every;
        let digest = ReplicaMessage::Digest { run: self.run, seq: self.seq };
        self.to_peers(&digest)
    }

    fn full(&self) -> ReplicaMessage<K, V> {
        let entries = self.own.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        ReplicaMessage::Full { run: self.run, seq: self.seq, entries }
    }

    fn to_peers(&self, message: &ReplicaMessage<K, V>) -> Vec<ReplicaOutput<N, K, V>> {
        self.peers
            .iter()
            .map(|peer| ReplicaOutput::Send { to: peer.clone(), message: message.clone() })
            .collect()
    }

    fn apply_delta(
        &mut self,
        from: &N,
        run: u64,
        first: u64,
        changes: Vec<(K, Option<V>)>,
        out: &mut Vec<ReplicaOutput<N, K, V>>,
    ) {
        let (view_run, view_seq) = match self.views.get(from) {
            Some(view) => (view.run, view.seq),
            None => (0, 0),
        };
        if run < view_run {
            return;
        }
        if run > view_run {
            // A new run of the origin: what its earlier run held is gone.
            let fresh = View { run, seq: 0, entries: BTreeMap::new() };
            self.replace_view(from, fresh, out);
        }
        let seq = if run > view_run { 0 } else { view_seq };
        let last = first + changes.len() as u64 - 1;
        if changes.is_empty() || last <= seq {
            return;
        }
        if first > seq + 1 {
            out.push(ReplicaOutput::Send { to: from.clone(), message: ReplicaMessage::Pull });
            return;
        }
        let skip = (seq + 1 - first) as usize;
        let view = self.views.get_mut(from).expect("made above or present");
        for (key, value) in changes.into_iter().skip(skip) {
            let before = match &value {
                Some(value) => view.entries.insert(key.clone(), value.clone()),
                None => view.entries.remove(&key),
            };
            if before != value {
                out.push(ReplicaOutput::Changed { origin: from.clone(), key, value });
            }
        }
        view.seq = last;
    }

    /// Replaces `from`'s view, reporting each entry that changed.
    fn replace_view(&mut self, from: &N, view: View<K, V>, out: &mut Vec<ReplicaOutput<N, K, V>>) {
        let old = self.views.remove(from).map(|view| view.entries).unwrap_or_default();
        for (key, value) in &old {
            if view.entries.get(key) != Some(value) {
                let value = view.entries.get(key).cloned();
                out.push(ReplicaOutput::Changed { origin: from.clone(), key: key.clone(), value });
            }
        }
        for (key, value) in &view.entries {
            if !old.contains_key(key) {
                let changed = ReplicaOutput::Changed {
                    origin: from.clone(),
                    key: key.clone(),
                    value: Some(value.clone()),
                };
                out.push(changed);
            }
        }
        self.views.insert(from.clone(), view);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NODES: usize = 4;

    #[derive(Clone, Debug)]
    enum Step {
        /// Node sets (or removes) one of its keys.
        Set { node: usize, key: u8, value: Option<u8> },
        /// The message in flight at this index (modulo their count) is delivered.
        Deliver(usize),
        /// It is lost.
        Drop(usize),
        /// It is delivered twice.
        Duplicate(usize),
        /// The link between two nodes goes down, or comes back.
        Link { one: usize, other: usize, up: bool },
        /// A node crashes and restarts with a new run and no entries.
        Restart(usize),
        /// Anti-entropy on a node.
        Tick(usize),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let node = 0..NODES;
        let step = prop_oneof![
            4 => (node.clone(), 0u8..6, proptest::option::of(0u8..4))
                .prop_map(|(node, key, value)| Step::Set { node, key, value }),
            6 => any::<usize>().prop_map(Step::Deliver),
            1 => any::<usize>().prop_map(Step::Drop),
            1 => any::<usize>().prop_map(Step::Duplicate),
            1 => (node.clone(), node.clone(), any::<bool>())
                .prop_map(|(one, other, up)| Step::Link { one, other, up }),
            1 => node.clone().prop_map(Step::Restart),
            1 => node.prop_map(Step::Tick),
        ];
        proptest::collection::vec(step, 0..200)
    }

    type Message = ReplicaMessage<u8, u8>;

    struct Cluster {
        now: Instant,
        replicas: Vec<Replica<usize, u8, u8>>,
        runs: Vec<u64>,
        links: [[bool; NODES]; NODES],
        in_flight: Vec<(usize, usize, Message)>,
    }

    impl Cluster {
        fn new() -> Self {
            let now = Instant::now();
            let replicas =
                (0..NODES).map(|n| Replica::new(n, 1, Duration::from_secs(1), now)).collect();
            let mut cluster = Cluster {
                now,
                replicas,
                runs: vec![1; NODES],
                links: [[true; NODES]; NODES],
                in_flight: Vec::new(),
            };
            for one in 0..NODES {
                for other in 0..NODES {
                    if one != other {
                        let out = cluster.replicas[one].peer_up(other);
                        cluster.route(one, out);
                    }
                }
            }
            cluster
        }

        fn route(&mut self, from: usize, out: Vec<ReplicaOutput<usize, u8, u8>>) {
            for output in out {
                if let ReplicaOutput::Send { to, message } = output {
                    self.in_flight.push((from, to, message));
                }
            }
        }

        fn deliver(&mut self, at: usize, keep: bool) {
            if self.in_flight.is_empty() {
                return;
            }
            let at = at % self.in_flight.len();
            let (from, to, message) =
                if keep { self.in_flight[at].clone() } else { self.in_flight.swap_remove(at) };
            // A connection that is down loses what was on it.
            if !self.links[from][to] {
                return;
            }
            let out = self.replicas[to].receive(&from, message);
            self.route(to, out);
        }

        fn link(&mut self, one: usize, other: usize, up: bool) {
            if one == other || self.links[one][other] == up {
                return;
            }
            self.links[one][other] = up;
            self.links[other][one] = up;
            for (a, b) in [(one, other), (other, one)] {
                let out =
                    if up { self.replicas[a].peer_up(b) } else { self.replicas[a].peer_down(&b) };
                self.route(a, out);
            }
        }

        fn restart(&mut self, node: usize) {
            let peers: Vec<usize> =
                (0..NODES).filter(|&other| other != node && self.links[node][other]).collect();
            for &other in &peers {
                self.link(node, other, false);
            }
            self.runs[node] += 1;
            self.replicas[node] =
                Replica::new(node, self.runs[node], Duration::from_secs(1), self.now);
            for other in peers {
                self.link(node, other, true);
            }
        }

        /// Heals every link and runs until nothing is in flight, with anti-entropy rounds.
        fn settle(&mut self) {
            for one in 0..NODES {
                for other in 0..NODES {
                    self.link(one, other, true);
                }
            }
            for _ in 0..3 {
                while !self.in_flight.is_empty() {
                    self.deliver(0, false);
                }
                self.now += Duration::from_secs(1);
                for node in 0..NODES {
                    let out = self.replicas[node].tick(self.now);
                    self.route(node, out);
                }
            }
            while !self.in_flight.is_empty() {
                self.deliver(0, false);
            }
        }
    }

    proptest! {
        /// Under any changes, loss, duplication, reordering, link failures and restarts, a
        /// node holds nothing of a peer it is cut off from; and once links heal and messages
        /// settle (with anti-entropy), every node's view of every other is exactly that node's
        /// own entries.
        #[test]
        fn views_converge_to_the_live_authorities(steps in steps()) {
            let mut cluster = Cluster::new();
            for step in steps {
                match step {
                    Step::Set { node, key, value } => {
                        let out = cluster.replicas[node].set(vec![(key, value)]);
                        cluster.route(node, out);
                    }
                    Step::Deliver(at) => cluster.deliver(at, false),
                    Step::Drop(at) => {
                        if !cluster.in_flight.is_empty() {
                            let at = at % cluster.in_flight.len();
                            cluster.in_flight.swap_remove(at);
                        }
                    }
                    Step::Duplicate(at) => cluster.deliver(at, true),
                    Step::Link { one, other, up } => cluster.link(one, other, up),
                    Step::Restart(node) => cluster.restart(node),
                    Step::Tick(node) => {
                        cluster.now += Duration::from_millis(300);
                        let now = cluster.now;
                        let out = cluster.replicas[node].tick(now);
                        cluster.route(node, out);
                    }
                }
            }
            // A node sees nothing of a peer it is cut off from.
            for node in 0..NODES {
                for other in 0..NODES {
                    if node != other && !cluster.links[node][other] {
                        prop_assert!(cluster.replicas[node].view(&other).is_none());
                    }
                }
            }
            cluster.settle();
            for node in 0..NODES {
                for other in 0..NODES {
                    if node == other {
                        continue;
                    }
                    let own = cluster.replicas[other].own().clone();
                    let view = cluster.replicas[node].view(&other).cloned().unwrap_or_default();
                    prop_assert_eq!(view, own, "node {}'s view of {}", node, other);
                }
            }
        }

        /// `Changed` outputs, applied in order to an empty map per origin, give exactly the
        /// views (a subscriber that starts from nothing and follows them sees what a read
        /// sees).
        #[test]
        fn changes_replay_to_the_views(steps in steps()) {
            let mut cluster = Cluster::new();
            let mut seen: Vec<BTreeMap<(usize, u8), u8>> = vec![BTreeMap::new(); NODES];
            let follow = |node: usize, out: &[ReplicaOutput<usize, u8, u8>], seen: &mut Vec<BTreeMap<(usize, u8), u8>>| {
                for output in out {
                    if let ReplicaOutput::Changed { origin, key, value } = output {
                        match value {
                            Some(value) => seen[node].insert((*origin, *key), *value),
                            None => seen[node].remove(&(*origin, *key)),
                        };
                    }
                }
            };
            for step in steps {
                match step {
                    Step::Set { node, key, value } => {
                        let out = cluster.replicas[node].set(vec![(key, value)]);
                        follow(node, &out, &mut seen);
                        cluster.route(node, out);
                    }
                    Step::Deliver(at) | Step::Duplicate(at) => {
                        if cluster.in_flight.is_empty() {
                            continue;
                        }
                        let at = at % cluster.in_flight.len();
                        let (from, to, message) = cluster.in_flight.swap_remove(at);
                        if !cluster.links[from][to] {
                            continue;
                        }
                        let out = cluster.replicas[to].receive(&from, message);
                        follow(to, &out, &mut seen);
                        cluster.route(to, out);
                    }
                    Step::Link { one, other, up } if one != other && cluster.links[one][other] != up => {
                        cluster.links[one][other] = up;
                        cluster.links[other][one] = up;
                        for (a, b) in [(one, other), (other, one)] {
                            let out = if up { cluster.replicas[a].peer_up(b) } else { cluster.replicas[a].peer_down(&b) };
                            follow(a, &out, &mut seen);
                            cluster.route(a, out);
                        }
                    }
                    _ => {}
                }
            }
            for (replica, seen) in cluster.replicas.iter().zip(&seen) {
                let read: BTreeMap<(usize, u8), u8> = replica
                    .entries()
                    .map(|(origin, key, value)| ((*origin, *key), *value))
                    .collect();
                prop_assert_eq!(&read, seen);
            }
        }
    }

    #[test]
    fn a_gap_pulls_the_whole_state() {
        let now = Instant::now();
        let mut a: Replica<&str, u8, u8> = Replica::new("a", 1, Duration::from_secs(1), now);
        let mut b: Replica<&str, u8, u8> = Replica::new("b", 1, Duration::from_secs(1), now);
        a.peer_up("b");
        b.peer_up("a");
        let _lost = a.set(vec![(1, Some(1))]);
        let second = a.set(vec![(2, Some(2))]);
        let ReplicaOutput::Send { message, .. } = second.last().cloned().expect("a delta") else {
            panic!("a send")
        };
        let out = b.receive(&"a", message);
        assert_eq!(out, vec![ReplicaOutput::Send { to: "a", message: ReplicaMessage::Pull }]);
        let ReplicaOutput::Send { message: full, .. } =
            a.receive(&"b", ReplicaMessage::Pull).remove(0)
        else {
            panic!("a full state")
        };
        b.receive(&"a", full);
        assert_eq!(b.view(&"a"), Some(a.own()));
    }

    #[test]
    fn a_peer_down_takes_its_entries_and_late_messages_do_not_bring_them_back() {
        let now = Instant::now();
        let mut a: Replica<&str, u8, u8> = Replica::new("a", 1, Duration::from_secs(1), now);
        let mut b: Replica<&str, u8, u8> = Replica::new("b", 1, Duration::from_secs(1), now);
        a.peer_up("b");
        b.peer_up("a");
        let out = a.set(vec![(1, Some(1))]);
        let ReplicaOutput::Send { message, .. } = out.last().cloned().expect("a delta") else {
            panic!("a send")
        };
        b.receive(&"a", message.clone());
        assert_eq!(b.entries().count(), 1);
        let gone = b.peer_down(&"a");
        assert_eq!(gone, vec![ReplicaOutput::Changed { origin: "a", key: 1, value: None }]);
        assert!(b.receive(&"a", message).is_empty(), "ignored while down");
        assert_eq!(b.entries().count(), 0);
    }
}
