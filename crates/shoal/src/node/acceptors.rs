//! The Paxos acceptor set of a cluster of [`Node`](super::Node)s: where a joining node learns
//! it, and how it grows as nodes join.
//!
//! **Learning it.** A node started with no seed founds a cluster: it is its only acceptor. A
//! node that joins asks the node it joined, through the facade's control service, which set it
//! runs, and starts Paxos over that set; later changes reach it as Paxos configurations.
//!
//! **Growing it.** While the set is smaller than the target, a voting acceptor adds the first
//! connected node (by name) whose Paxos runs, by `shoal-paxos`'s procedure, one acceptor at a
//! time. Which step is next is itself decided by consensus: a step is claimed with a
//! compare-and-set of the register [`CLAIM`] (from the claim of the last step, done, to this
//! one, pending), so two nodes never take two different steps of one version; a pending claim
//! is finished by whoever reads it (the same step asked for twice is the same step), and only
//! then marked done. The set is never shrunk here: removing an acceptor is an operator's call
//! (`Paxos::remove_acceptor`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_paxos::{Entry, Paxos};
use shoal_process::codec::{decode, encode};
use shoal_transport::Node as Transport;
use tokio::sync::watch;

/// The facade's control service on every node (an RPC).
pub(super) const CONTROL: &str = "shoal.node";

/// The register that orders the steps of the acceptor set's growth.
pub(super) const CLAIM: &str = "shoal.node.acceptors";

/// How long one ask of another node's control service waits.
pub(super) const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// How often an acceptor looks at whether the set should grow.
const GROW_EVERY: Duration = Duration::from_millis(500);

/// How long one step (install, rejoin of the new acceptor, rewrite of every key) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A question to a node's control service.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Ask {
    /// "Which acceptors does your Paxos run?"
    Status,
}

/// A control service's answer to [`Ask::Status`].
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Status {
    /// The configuration's version and acceptors, if Paxos runs there.
    pub(super) acceptors: Option<(u64, Vec<String>)>,
}

/// The step of the set's growth that was claimed last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Claim {
    /// The configuration version the step makes.
    version: u64,
    /// The set it makes.
    acceptors: Vec<String>,
    /// Whether every key was rewritten through it (the next step may be taken).
    done: bool,
}

/// What a node's control service answers (its Paxos, once started).
pub(super) async fn status(paxos: Option<Paxos>) -> Status {
    let acceptors = match paxos {
        Some(paxos) => paxos.acceptors().await.ok(),
        None => None,
    };
    Status { acceptors }
}

/// The acceptor set node `peer` runs, if it runs Paxos and answers.
pub(super) async fn ask(transport: &Transport, peer: &str) -> Option<(u64, Vec<String>)> {
    let answer = transport.rpc::<Ask, Status>(peer, CONTROL, &Ask::Status, ASK_TIMEOUT).await;
    answer.ok()?.acceptors
}

/// Grows the acceptor set to `target`, a step at a time, until it is that large and its last
/// step is done, or `stop` turns true.
pub(super) async fn grow(paxos: Paxos, target: usize, mut stop: watch::Receiver<bool>) {
    let clock = paxos.node().runtime().clock().clone();
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => return,
            () = clock.sleep(GROW_EVERY) => {}
        }
        if !paxos.is_voting() {
            continue;
        }
        match step(&paxos, target).await {
            Ok(Grown::Enough) => return,
            Ok(Grown::Later) => {}
            Err(error) => tracing::debug!(%error, "the acceptor set did not grow this time"),
        }
    }
}

/// What one look at the set did.
enum Grown {
    /// The set is as large as the target and its last step is done.
    Enough,
    /// A step was taken, or could not be (no candidate, no quorum): look again later.
    Later,
}

/// One look at the set: finishes a pending step, or claims and takes the next one.
async fn step(paxos: &Paxos, target: usize) -> Result<Grown, String> {
    let (version, mut acceptors) = paxos.acceptors().await.map_err(|e| e.to_string())?;
    let entry = paxos.get(CLAIM).await.map_err(|e| e.to_string())?;
    let claim = match &entry {
        Some(entry) => Some(decode::<Claim>(&entry.data).map_err(|e| e.to_string())?),
        None => None,
    };
    match claim {
        // A step of this set or of the next one, not finished: finish it.
        Some(claim) if !claim.done && claim.version >= version => {
            finish(paxos, entry, claim).await?;
            return Ok(Grown::Later);
        }
        // This node has not heard of the last step yet; Paxos brings it.
        Some(claim) if claim.version > version => return Ok(Grown::Later),
        _ => {}
    }
    if acceptors.len() >= target {
        return Ok(Grown::Enough);
    }
    let Some(candidate) = candidate(paxos.node(), &acceptors).await else {
        return Ok(Grown::Later);
    };
    acceptors.push(candidate);
    let next = Claim { version: version + 1, acceptors, done: false };
    let data = encode(&next).map_err(|e| e.to_string())?.to_vec();
    let claimed = paxos
        .compare_and_set(CLAIM, entry, Some(Entry::new(data.clone())))
        .await
        .map_err(|e| e.to_string())?;
    if claimed.applied {
        tracing::info!(acceptors = ?next.acceptors, version = next.version, "adding an acceptor");
        finish(paxos, Some(Entry::new(data)), next).await?;
    }
    Ok(Grown::Later)
}

/// Takes (or finishes) the claimed step, then marks it done.
async fn finish(paxos: &Paxos, entry: Option<Entry>, claim: Claim) -> Result<(), String> {
    paxos.reconfigure(claim.acceptors.clone(), STEP_TIMEOUT).await.map_err(|e| e.to_string())?;
    let done = Claim { done: true, ..claim };
    let data = encode(&done).map_err(|e| e.to_string())?.to_vec();
    paxos.compare_and_set(CLAIM, entry, Some(Entry::new(data))).await.map_err(|e| e.to_string())?;
    tracing::info!(acceptors = ?done.acceptors, version = done.version, "acceptor set grown");
    Ok(())
}

/// The first connected node, by name, outside `acceptors` whose Paxos runs.
async fn candidate(transport: &Transport, acceptors: &[String]) -> Option<String> {
    let mut nodes = transport.nodes();
    nodes.sort();
    for node in nodes.into_iter().filter(|node| !acceptors.contains(node)) {
        if ask(transport, &node).await.is_some() {
            return Some(node);
        }
    }
    None
}
