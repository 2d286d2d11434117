//! `handover_ms`: one hub child with 1 MiB of state moved hot from one node to the other and
//! back, its state handed over each time.
//!
//! Two nodes in this OS process, joined over loopback TCP ([`crate::hub::hubs`]), each with
//! hub `bench` in its default configuration ([`HubConfig::default`]) **but hot migration**
//! ([`Migration::Hot`], letters for the old copy forwarded for [`RETENTION`]) with the
//! child's behaviour registered for it ([`HubConfig::handovers`]), and every transport setting
//! at its default. The child ([`Blob`]) starts empty and is cast [`STATE_BYTES`] bytes by
//! child id ([`Hub::via`]); then it is moved [`MOVES`] times, from the node that runs it to
//! the other ([`Hub::child_redist_init`] called on the mover's hub, so no forward of the
//! request is timed). Each move is timed from the call until it returns; after each, untimed,
//! the mover reports the state handed over ([`HubEvent::HandedOver`]), the child answers a
//! call by child id from the node it moved to, with its [`STATE_BYTES`] bytes intact (their
//! length and hash), and both hubs see it there before the next move. The sample is the
//! median move.

use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_bytes::ByteBuf;
use shoal_hub::{Handover, Handovers, Hub, HubChild, HubConfig, HubEvent, Migration, StartOptions};
use shoal_process::{ChildSpec, Codec, Context, Process, ReplyTo};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use crate::harness::on_workers;
use crate::hub::{hubs, shut_down};

/// The bytes of the child's state.
const STATE_BYTES: usize = 1 << 20;

/// Moves timed (odd, so that the median is one of them).
const MOVES: usize = 11;

/// How long letters for a moved child's old pid are forwarded to the new copy.
const RETENTION: Duration = Duration::from_secs(1);

/// The factory of the child, on both nodes.
const FACTORY: &str = "bench-hub-blob";

/// The child's id.
const CHILD: &str = "blob";

/// How long one move, one call or the cluster's forming may take.
const BOUND: Duration = Duration::from_secs(20);

/// The child: holds the bytes it was cast last, hands them over; answers a call with its
/// node, their length and their hash.
struct Blob {
    node: String,
    state: ByteBuf,
}

impl Process for Blob {
    type Message = ByteBuf;
    type Call = ();
    type Reply = (String, usize, u64);

    async fn handle_cast(&mut self, state: ByteBuf, _: &mut Context<Self>) {
        self.state = state;
    }

    async fn handle_call(&mut self, (): (), reply: ReplyTo<Self::Reply>, _: &mut Context<Self>) {
        reply.send((self.node.clone(), self.state.len(), digest(&self.state)));
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

impl Handover for Blob {
    type State = ByteBuf;

    fn snapshot(&self) -> ByteBuf {
        self.state.clone()
    }

    fn restore(&mut self, state: ByteBuf, _: &mut Context<Self>) {
        self.state = state;
    }
}

/// A hash of `bytes`, the same in every process of this binary (fixed keys).
fn digest(bytes: &[u8]) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(bytes)
}

/// `handover_ms`: see the module docs. Milliseconds, the median of [`MOVES`] moves; SPEC.md's
/// target: ≤ 50 ms.
pub(crate) fn handover_ms() -> anyhow::Result<f64> {
    on_workers(async {
        let config = HubConfig {
            migration: Migration::Hot { retention: RETENTION },
            handovers: Handovers::default().with::<Blob>(FACTORY),
            ..HubConfig::default()
        };
        let (nodes, hubs) = hubs(2, &config).await?;
        for node in &nodes {
            let here = node.name().to_owned();
            node.runtime().register_factory(FACTORY, move |(): ()| Blob {
                node: here.clone(),
                state: ByteBuf::new(),
            })?;
        }
        let spec = ChildSpec::new(CHILD, FACTORY, &())?;
        let options = StartOptions { timeout: BOUND, ..StartOptions::default() };
        let results = hubs[0].init_children(vec![HubChild::new(spec)], options).await?;
        let mut at = match results.into_iter().next() {
            Some((_, Ok(started))) => started.node,
            Some((child, Err(error))) => bail!("{child} did not start: {error}"),
            None => bail!("no result for {CHILD}"),
        };
        let state: Vec<u8> = (0..=250u8).cycle().take(STATE_BYTES).collect();
        let expected = (STATE_BYTES, digest(&state));
        let by_id = nodes[0].runtime().target::<Blob>(hubs[0].via(CHILD));
        by_id.cast(ByteBuf::from(state)).await.context("casting the state")?;
        let answer = by_id.call_timeout((), BOUND).await.context("the child's first answer")?;
        ensure!(answer == (at.clone(), expected.0, expected.1), "the child answered {answer:?}");

        let mut times = Vec::with_capacity(MOVES);
        for _ in 0..MOVES {
            let from = index(&nodes, &at)?;
            let to = nodes[1 - from].name().to_owned();
            let mut events = hubs[from].subscribe();
            let started = Instant::now();
            hubs[from]
                .child_redist_init(CHILD, &to, BOUND)
                .await
                .with_context(|| format!("moving {CHILD} from {at} to {to}"))?;
            times.push(started.elapsed());
            handed_over(&mut events, &to).await?;
            let (node, len, hash) =
                by_id.call_timeout((), BOUND).await.context("the moved child's answer")?;
            ensure!(
                node == to && (len, hash) == expected,
                "after the move to {to}, {node}'s copy has {len} bytes (hash {hash:x}), not \
                 {} (hash {:x})",
                expected.0,
                expected.1
            );
            until_seen_on(&hubs, &nodes[1 - from]).await?;
            at = to;
        }
        times.sort();
        let median = times[MOVES / 2];
        eprintln!(
            "{MOVES} hot moves of {STATE_BYTES} bytes of state: {times:?}; median {median:?}"
        );
        hubs[0].child_terminate(CHILD, BOUND).await.context("terminating the child")?;
        shut_down(&nodes, &hubs).await;
        Ok(median.as_secs_f64() * 1e3)
    })
}

/// Waits for the mover's event that the child's state was handed over to `to`; an error if
/// the hand-over failed instead (the new copy runs without the state).
async fn handed_over(events: &mut Receiver<HubEvent>, to: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(HubEvent::HandedOver { child, to: at, .. })) if child == CHILD && at == to => {
                return Ok(());
            }
            Ok(Ok(HubEvent::HandOverFailed { child, error, .. })) if child == CHILD => {
                bail!("the hand-over of {CHILD} to {to} failed: {error}")
            }
            Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => bail!("the mover's hub stopped"),
            Err(_) => bail!("no hand-over of {CHILD} to {to} reported within {BOUND:?}"),
        }
    }
}

/// Which of `nodes` is named `name`.
fn index(nodes: &[shoal_transport::Node], name: &str) -> anyhow::Result<usize> {
    nodes.iter().position(|node| node.name() == name).with_context(|| format!("no node {name}"))
}

/// Waits until every hub sees the child run on `node`.
async fn until_seen_on(hubs: &[Hub], node: &shoal_transport::Node) -> anyhow::Result<()> {
    let deadline = Instant::now() + BOUND;
    let on_node = |hub: &Hub| {
        hub.pid(CHILD).is_some_and(|pid| pid.node() == node.runtime().node())
            && hub.active(CHILD).as_deref() == Some(node.name())
    };
    while !hubs.iter().all(on_node) {
        ensure!(Instant::now() < deadline, "not every hub sees {CHILD} on {}", node.name());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
