//! Admission of incoming connections before they authenticate: how many handshakes may be in
//! progress, from one address and in all, and how long a connection may take to say who it
//! is, so that a flood of connections that never finish their handshake cannot keep members
//! and new nodes out.
//!
//! A connection is *unauthenticated* from the moment it is accepted until its peer's proof
//! verifies (`crate::conn::accept`). Each one holds a slot of the node's [`Gate`] meanwhile:
//!
//! ```text
//!  accepted ──▶ general pool ──its Hello names a member──▶ reserved pool ──proof──▶ released
//!     │  │                                                      ▲
//!     │  └─ the general pool full, and the address proved ──────┘
//!     │     the key before
//!     └──▶ over its address's bound, or no room: closed at once
//!  in either pool: no Hello within hello_timeout, or no proof within connect_timeout: closed
//! ```
//!
//! - **Per address.** At most `max_handshakes_per_address` unauthenticated connections from
//!   one source address (an IPv6 source counts by its /64 prefix, which one host usually
//!   holds whole); one more is closed at once. One flooding host cannot fill the pools.
//! - **Two pools.** `max_handshakes` slots in all, of which `reserved_handshakes` are kept
//!   for members. A new connection takes a slot of the *general* pool; its first frame, the
//!   `Hello`, must come within `hello_timeout` (500 ms by default, well under the whole
//!   handshake's `connect_timeout`), so a slot held by a connection that says nothing turns
//!   over fast. A `Hello` that names a node that is a member here moves the connection to
//!   the *reserved* pool, freeing its general slot. The `Hello` comes only once the slot is
//!   taken, so a member must first get into the general pool, which strangers can fill; what
//!   lets it in anyway is where it connects from: when the general pool is full, a
//!   connection from an address from which a peer has proved that it knows the key before
//!   (a member reconnecting, from the host it always connected from) takes a reserved slot
//!   for its `Hello` instead (the most recent 4,096 such addresses are remembered). A flood of strangers, from addresses that never proved anything,
//!   cannot take the reserve, so a member that lost its connections reconnects through it
//!   even while strangers keep the general pool full. Neither the name nor the address is
//!   proof: the rest of the handshake checks the claim (and the admission rules the name), so
//!   a false claim gains at most a slot of the reserve until its handshake fails or times
//!   out, still within its address's bound.
//! - **Fair shares when full.** A pool with no room takes a newcomer by closing the oldest
//!   handshake of the address that holds the most of that pool, when that address holds at
//!   least two more than the newcomer's; otherwise the newcomer is closed. Many flooding
//!   addresses then split a full pool between them and every other address, instead of
//!   holding it: a new node that connects from an address of its own finds a slot for its
//!   `Hello` unless the pool is held by at least as many addresses as it has slots, one each.
//!   A member whose reserve is full stays in the general pool.
//! - **The whole handshake** is bounded by `connect_timeout` as before; a connection leaves
//!   the gate when its peer is authenticated, whatever admission then decides.
//!
//! What it does not stop: a flood from at least as many addresses as a pool has slots; a
//! member that reconnects from an address it never proved the key from while strangers
//! fill the general pool (and then the burst of its connections, one per channel and
//! parallel connection, can make its address the busiest there until their `Hello`s move
//! them to the reserve, so that some are closed and it tries again after its backoff).
//!
//! Every connection closed here, and every handshake that fails, is logged with
//! `tracing::warn!`, at most once a second for each reason, with the number of the ones
//! not logged since (`suppressed`).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_process::Clock;
use tokio::time::Instant;

use tokio::sync::Notify;

use crate::config::NodeConfig;
use crate::conn::ConnError;
use crate::peer::lock;

/// The bounds of a node's gate (from [`NodeConfig`]; see its builder's setters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Unauthenticated connections in all.
    pub(crate) total: usize,
    /// Of those, the ones kept for members (see the module docs).
    pub(crate) reserved: usize,
    /// Unauthenticated connections from one address.
    pub(crate) per_address: usize,
    /// How long a connection may take to send its first frame.
    pub(crate) hello_timeout: Duration,
}

impl Limits {
    pub(crate) fn of(config: &NodeConfig) -> Self {
        Self {
            total: config.max_handshakes,
            reserved: config.reserved_handshakes(),
            per_address: config.max_handshakes_per_address,
            hello_timeout: config.hello_timeout(),
        }
    }

    fn capacity(&self, pool: Pool) -> usize {
        match pool {
            Pool::General => self.total.saturating_sub(self.reserved),
            Pool::Reserved => self.reserved,
        }
    }
}

/// Where a connection's handshake comes from, for the per-address bound: its IP address, or
/// for IPv6 its /64 prefix (an IPv4 address mapped into IPv6 counts as the IPv4 one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Source(IpAddr);

impl Source {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Self(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
            v4 => Self(v4),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pool {
    General,
    Reserved,
}

/// Why a connection was closed or is logged; each reason is logged at most once a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    PerAddress,
    Full,
    Evicted,
    Failed,
    Refused,
}

const REASONS: usize = 5;

/// The unauthenticated connections of a node, by pool and by address.
pub(crate) struct Gate {
    node: String,
    limits: Limits,
    /// Whether a name is that of a member here.
    is_member: Box<dyn Fn(&str) -> bool + Send + Sync>,
    state: Mutex<State>,
    log: Throttle,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// Every slot held, by ticket id.
    held: HashMap<u64, Held>,
    /// Slots held by each address, both pools.
    by_source: HashMap<Source, usize>,
    general: Occupancy,
    reserved: Occupancy,
    /// The addresses from which a peer proved it holds the cluster key, with when (a count of
    /// proofs), at most [`PROVEN_ADDRESSES`] of them.
    proven: HashMap<Source, u64>,
    proofs: u64,
}

/// Addresses remembered as proven; past that, the one proven longest ago is forgotten.
const PROVEN_ADDRESSES: usize = 4096;

struct Held {
    source: Source,
    addr: SocketAddr,
    pool: Pool,
    signal: Arc<Signal>,
}

/// One pool's slots in use: how many, and whose (ticket ids grow, so the first is the oldest).
#[derive(Default)]
struct Occupancy {
    used: usize,
    by_source: HashMap<Source, BTreeSet<u64>>,
}

impl Occupancy {
    fn held_by(&self, source: Source) -> usize {
        self.by_source.get(&source).map_or(0, BTreeSet::len)
    }

    fn insert(&mut self, source: Source, id: u64) {
        self.used += 1;
        self.by_source.entry(source).or_default().insert(id);
    }

    fn remove(&mut self, source: Source, id: u64) {
        if let Some(ids) = self.by_source.get_mut(&source)
            && ids.remove(&id)
        {
            self.used -= 1;
            if ids.is_empty() {
                self.by_source.remove(&source);
            }
        }
    }

    /// The oldest handshake of the address holding the most of this pool, if that address
    /// holds at least two more than `newcomer` (so that taking one of its slots makes the
    /// shares fairer, never just different).
    fn victim(&self, newcomer: Source) -> Option<u64> {
        let mine = self.held_by(newcomer);
        let (_, ids) = self.by_source.iter().max_by_key(|(_, ids)| ids.len())?;
        if ids.len() < mine + 2 {
            return None;
        }
        ids.first().copied()
    }
}

impl State {
    fn pool(&mut self, pool: Pool) -> &mut Occupancy {
        match pool {
            Pool::General => &mut self.general,
            Pool::Reserved => &mut self.reserved,
        }
    }

    /// Frees the slot of ticket `id`, if it still holds one.
    fn release(&mut self, id: u64) -> Option<Held> {
        let held = self.held.remove(&id)?;
        self.pool(held.pool).remove(held.source, id);
        if let Some(count) = self.by_source.get_mut(&held.source) {
            *count -= 1;
            if *count == 0 {
                self.by_source.remove(&held.source);
            }
        }
        Some(held)
    }

    /// Makes room in `pool` for a handshake from `source`: there is room, or the oldest
    /// handshake of a much busier address is closed (returned, to be logged). `Err` if
    /// neither.
    fn make_room(
        &mut self,
        limits: &Limits,
        pool: Pool,
        source: Source,
    ) -> Result<Option<Held>, ()> {
        let occupancy = self.pool(pool);
        if occupancy.used < limits.capacity(pool) {
            return Ok(None);
        }
        let victim = occupancy.victim(source).ok_or(())?;
        let held = self.release(victim).ok_or(())?;
        held.signal.evicted.store(true, Ordering::Release);
        held.signal.notify.notify_one();
        Ok(Some(held))
    }

    /// Remembers that a peer proved it holds the cluster key from `source`.
    fn proven(&mut self, source: Source) {
        self.proofs += 1;
        let proofs = self.proofs;
        if self.proven.insert(source, proofs).is_none() && self.proven.len() > PROVEN_ADDRESSES {
            let oldest = self.proven.iter().min_by_key(|(_, proved)| **proved).map(|(s, _)| *s);
            if let Some(oldest) = oldest {
                self.proven.remove(&oldest);
            }
        }
    }
}

/// What a ticket shares with the gate.
#[derive(Default)]
struct Signal {
    /// Told when the gate closed the handshake to make room.
    notify: Notify,
    evicted: AtomicBool,
    authenticated: AtomicBool,
}

impl Gate {
    /// A gate for `node` with these bounds; `is_member` says whether a name is a member's;
    /// its warnings are throttled on `clock`.
    pub(crate) fn new(
        node: String,
        limits: Limits,
        clock: Clock,
        is_member: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            node,
            limits,
            is_member: Box::new(is_member),
            state: Mutex::default(),
            log: Throttle::new(clock),
        })
    }

    /// A slot in the general pool for a connection just accepted from `addr`, or `None`
    /// (logged) if it is over a bound: the caller then closes it.
    pub(crate) fn enter(self: &Arc<Self>, addr: SocketAddr) -> Option<Ticket> {
        let source = Source::of(addr.ip());
        let mut state = lock(&self.state);
        let from_source = state.by_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.limits.per_address {
            drop(state);
            self.over_bound(Reason::PerAddress, addr);
            return None;
        }
        // An address that proved the key before goes to the reserve when the general pool
        // is full, rather than contend there with strangers for a share.
        let general_full = state.general.used >= self.limits.capacity(Pool::General);
        let pools: &[Pool] = if general_full && state.proven.contains_key(&source) {
            &[Pool::Reserved, Pool::General]
        } else {
            &[Pool::General]
        };
        let room = pools.iter().find_map(|&pool| {
            state.make_room(&self.limits, pool, source).ok().map(|evicted| (pool, evicted))
        });
        let Some((pool, evicted)) = room else {
            drop(state);
            self.over_bound(Reason::Full, addr);
            return None;
        };
        let id = state.next_id;
        state.next_id += 1;
        let signal = Arc::new(Signal::default());
        state.pool(pool).insert(source, id);
        *state.by_source.entry(source).or_default() += 1;
        state.held.insert(id, Held { source, addr, pool, signal: signal.clone() });
        drop(state);
        if let Some(evicted) = evicted {
            self.evicted(&evicted, addr);
        }
        Some(Ticket { gate: self.clone(), id, signal })
    }

    fn over_bound(&self, reason: Reason, addr: SocketAddr) {
        let Some(suppressed) = self.log.allow(reason) else { return };
        let node = &self.node;
        match reason {
            Reason::PerAddress => tracing::warn!(
                %node, %addr, bound = self.limits.per_address, suppressed,
                "too many handshakes in progress from this address: connection closed"
            ),
            _ => tracing::warn!(
                %node, %addr, bound = self.limits.total, suppressed,
                "too many handshakes in progress: connection closed"
            ),
        }
    }

    fn evicted(&self, evicted: &Held, newcomer: SocketAddr) {
        let Some(suppressed) = self.log.allow(Reason::Evicted) else { return };
        let pool = match evicted.pool {
            Pool::General => "general",
            Pool::Reserved => "reserved",
        };
        tracing::warn!(
            node = %self.node, addr = %evicted.addr, %newcomer, pool, suppressed,
            "handshake pool full: the oldest handshake of the busiest address closed to make room"
        );
    }
}

/// A connection's slot in its node's [`Gate`], until the peer authenticates or the
/// connection ends (dropped).
pub(crate) struct Ticket {
    gate: Arc<Gate>,
    id: u64,
    signal: Arc<Signal>,
}

impl Ticket {
    /// How long the connection may take to send its first frame.
    pub(crate) fn hello_timeout(&self) -> Duration {
        self.gate.limits.hello_timeout
    }

    /// The peer's `Hello` names `name`: if that is a member here, the connection moves to the
    /// reserved pool (when it has room, or can be made fair), freeing its general slot.
    pub(crate) fn hello(&self, name: &str) {
        if !(self.gate.is_member)(name) {
            return;
        }
        let mut state = lock(&self.gate.state);
        let Some(held) = state.held.get(&self.id) else { return };
        let (source, addr) = (held.source, held.addr);
        if held.pool == Pool::Reserved {
            return;
        }
        let Ok(evicted) = state.make_room(&self.gate.limits, Pool::Reserved, source) else {
            return;
        };
        state.general.remove(source, self.id);
        state.reserved.insert(source, self.id);
        if let Some(held) = state.held.get_mut(&self.id) {
            held.pool = Pool::Reserved;
        }
        drop(state);
        if let Some(evicted) = evicted {
            self.gate.evicted(&evicted, addr);
        }
    }

    /// The peer proved it holds the cluster key: the connection is no longer unauthenticated, and
    /// gives its slot back.
    pub(crate) fn authenticated(&self) {
        self.signal.authenticated.store(true, Ordering::Release);
        let mut state = lock(&self.gate.state);
        if let Some(held) = state.release(self.id) {
            state.proven(held.source);
        }
    }

    /// Resolves when the gate closes this handshake to make room for another address's.
    pub(crate) async fn evicted(&self) {
        self.signal.notify.notified().await;
    }

    /// Logs why the handshake on this connection from `addr` failed (rate-limited), unless
    /// the gate closed it (logged then).
    pub(crate) fn failed(&self, addr: SocketAddr, error: &ConnError) {
        if self.signal.evicted.load(Ordering::Acquire) {
            return;
        }
        let authenticated = self.signal.authenticated.load(Ordering::Acquire);
        let reason = if authenticated { Reason::Refused } else { Reason::Failed };
        let Some(suppressed) = self.gate.log.allow(reason) else { return };
        let node = &self.gate.node;
        if authenticated {
            tracing::warn!(%node, %addr, %error, suppressed, "connection refused");
        } else {
            tracing::warn!(%node, %addr, %error, suppressed, "handshake failed: connection closed");
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.gate.state).release(self.id);
    }
}

/// At most one warning a second for each [`Reason`], counting the ones held back.
struct Throttle {
    clock: Clock,
    slots: Mutex<[ThrottleSlot; REASONS]>,
}

#[derive(Clone, Copy, Default)]
struct ThrottleSlot {
    last: Option<Instant>,
    suppressed: u64,
}

/// The shortest time between two warnings for one reason.
const LOG_EVERY: Duration = Duration::from_secs(1);

impl Throttle {
    fn new(clock: Clock) -> Self {
        Self { clock, slots: Mutex::default() }
    }

    /// `Some(warnings held back since the last one)` if a warning for `reason` may be logged
    /// now; `None` (and counted) if not.
    fn allow(&self, reason: Reason) -> Option<u64> {
        let now = self.clock.now();
        let mut slots = lock(&self.slots);
        let slot = &mut slots[reason as usize];
        if slot.last.is_some_and(|last| now.duration_since(last) < LOG_EVERY) {
            slot.suppressed += 1;
            return None;
        }
        slot.last = Some(now);
        Some(std::mem::take(&mut slot.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(total: usize, reserved: usize, per_address: usize) -> Arc<Gate> {
        let limits =
            Limits { total, reserved, per_address, hello_timeout: Duration::from_millis(500) };
        Gate::new("a".into(), limits, Clock::tokio(), |name| name.starts_with("member"))
    }

    fn from(host: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, host], port))
    }

    fn counts(gate: &Gate) -> (usize, usize) {
        let state = lock(&gate.state);
        (state.general.used, state.reserved.used)
    }

    fn evicted(ticket: &Ticket) -> bool {
        ticket.signal.evicted.load(Ordering::Acquire)
    }

    #[test]
    fn one_address_gets_its_bound_and_no_more() {
        let gate = gate(16, 4, 3);
        let held: Vec<Ticket> = (0..3).map(|port| gate.enter(from(2, port)).unwrap()).collect();
        assert!(gate.enter(from(2, 10)).is_none(), "over the per-address bound");
        assert!(gate.enter(from(3, 10)).is_some(), "another address gets in");
        drop(held);
        assert!(gate.enter(from(2, 11)).is_some(), "slots are given back");
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_prefix() {
        let gate = gate(16, 4, 2);
        let addr =
            |last: u16| SocketAddr::new(IpAddr::V6(Ipv6Addr::new(1, 2, 3, 4, 0, 0, 0, last)), 1);
        let _held: Vec<Ticket> = (1..3).map(|host| gate.enter(addr(host)).unwrap()).collect();
        assert!(gate.enter(addr(9)).is_none(), "the same /64");
        let other = SocketAddr::new(IpAddr::V6(Ipv6Addr::new(1, 2, 3, 5, 0, 0, 0, 1)), 1);
        assert!(gate.enter(other).is_some());
    }

    #[test]
    fn strangers_cannot_take_the_reserve() {
        let gate = gate(8, 4, 8);
        let strangers: Vec<Ticket> =
            (0..4).map(|port| gate.enter(from(2, port)).unwrap()).collect();
        for ticket in &strangers {
            ticket.hello("stranger");
        }
        assert_eq!(counts(&gate), (4, 0));
        assert!(gate.enter(from(2, 9)).is_none(), "the general pool is full, and fair");
        assert!(strangers.iter().all(|ticket| !evicted(ticket)));
    }

    #[test]
    fn a_member_moves_to_the_reserve_and_frees_its_general_slot() {
        let gate = gate(8, 4, 8);
        let member = gate.enter(from(1, 1)).unwrap();
        member.hello("member-b");
        assert_eq!(counts(&gate), (0, 1));
        let strangers: Vec<Ticket> =
            (0..4).map(|port| gate.enter(from(2, port)).unwrap()).collect();
        assert_eq!(counts(&gate), (4, 1));
        member.authenticated();
        assert_eq!(counts(&gate), (4, 0), "an authenticated connection leaves the gate");
        drop(member);
        drop(strangers);
        assert_eq!(counts(&gate), (0, 0));
        assert!(lock(&gate.state).by_source.is_empty());
    }

    #[test]
    fn a_full_pool_makes_room_for_a_quieter_address_by_closing_the_busiest_ones_oldest() {
        let gate = gate(6, 2, 4);
        let busy: Vec<Ticket> = (0..4).map(|port| gate.enter(from(2, port)).unwrap()).collect();
        assert_eq!(counts(&gate), (4, 0));
        let newcomer = gate.enter(from(1, 1)).expect("room is made");
        assert!(evicted(&busy[0]), "the busiest address's oldest handshake is closed");
        assert!(busy[1..].iter().all(|ticket| !evicted(ticket)));
        assert_eq!(counts(&gate), (4, 0));
        // Shares of 3 and 1: one more from the newcomer's address makes them 2 and 2.
        let second = gate.enter(from(1, 2)).expect("room is made again");
        assert!(evicted(&busy[1]));
        // Now 2 and 2: nobody is displaced, and a third address with none gets in only from
        // a share of at least 2.
        assert!(gate.enter(from(1, 3)).is_none(), "no fairer share to take");
        let third = gate.enter(from(3, 1)).expect("a share of 2 yields to an address with none");
        assert_eq!(counts(&gate), (4, 0));
        drop((newcomer, second, third, busy));
        assert_eq!(counts(&gate), (0, 0));
    }

    #[test]
    fn an_address_that_proved_the_key_gets_a_reserved_slot_when_the_general_pool_is_full() {
        let gate = gate(4, 2, 4);
        let member = gate.enter(from(1, 1)).unwrap();
        member.authenticated();
        drop(member);
        let strangers: Vec<Ticket> =
            (2..4).map(|host| gate.enter(from(host, 1)).unwrap()).collect();
        assert_eq!(counts(&gate), (2, 0));
        assert!(gate.enter(from(4, 1)).is_none(), "a stranger finds no room");
        let back = gate.enter(from(1, 2)).expect("the proven address gets in");
        assert_eq!(counts(&gate), (2, 1));
        let again = gate.enter(from(1, 3)).expect("up to the reserve");
        assert!(gate.enter(from(1, 4)).is_none(), "and no further");
        assert!(strangers.iter().all(|ticket| !evicted(ticket)));
        drop((back, again));
    }

    #[test]
    fn proven_addresses_are_bounded() {
        let gate = gate(4, 2, 4);
        let mut state = lock(&gate.state);
        for n in 0..=PROVEN_ADDRESSES as u32 {
            state.proven(Source::of(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))));
        }
        assert_eq!(state.proven.len(), PROVEN_ADDRESSES);
        assert!(!state.proven.contains_key(&Source::of(IpAddr::from([10, 0, 0, 0]))), "the oldest");
    }

    #[test]
    fn a_member_whose_reserve_is_full_keeps_its_general_slot() {
        let gate = gate(4, 1, 4);
        let first = gate.enter(from(1, 1)).unwrap();
        first.hello("member-b");
        let second = gate.enter(from(1, 2)).unwrap();
        second.hello("member-b");
        assert_eq!(counts(&gate), (1, 1));
        assert!(!evicted(&first) && !evicted(&second));
    }

    #[test]
    fn warnings_are_throttled_per_reason() {
        let throttle = Throttle::new(Clock::tokio());
        assert_eq!(throttle.allow(Reason::Full), Some(0));
        assert_eq!(throttle.allow(Reason::Full), None);
        assert_eq!(throttle.allow(Reason::Full), None);
        assert_eq!(throttle.allow(Reason::PerAddress), Some(0), "another reason");
        let mut slots = lock(&throttle.slots);
        slots[Reason::Full as usize].last = Instant::now().checked_sub(LOG_EVERY);
        drop(slots);
        assert_eq!(throttle.allow(Reason::Full), Some(2), "the held-back count");
    }
}
