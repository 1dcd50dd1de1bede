//! A group of local peers, one thread each, supervised so that it never hangs: a peer that
//! fails or panics ends the group with its error; a peer that waits in a collective longer
//! than the timeout for peers that do not arrive (dead, stuck, or never started) ends it with
//! an error naming them.
//!
//! burn-collective's calls block without a timeout and cannot be cancelled, so the group does
//! not wait for a stuck peer's thread: the error returns while that thread stays blocked, and
//! the process is expected to exit (the CLI does); the same process cannot start another group
//! on that backend.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;

use super::{NodeLink, Peer};
use crate::error::TrainError;

/// What the group knows of each peer: collective calls made, the one it is in, how it ended.
#[derive(Debug)]
pub(crate) struct GroupWatch {
    peers: Vec<Mutex<PeerActivity>>,
    /// This process is one node of several (a wait can be for another node's peers).
    other_nodes: bool,
}

#[derive(Debug, Default, Clone)]
struct PeerActivity {
    /// Collective calls entered (the one in progress included).
    calls: u64,
    /// The call in progress and since when.
    inside: Option<(&'static str, Instant)>,
    /// Set when the peer's body returned: `true` if it failed.
    ended: Option<bool>,
}

impl GroupWatch {
    fn new(world: usize, other_nodes: bool) -> Self {
        GroupWatch {
            peers: (0..world).map(|_| Mutex::default()).collect(),
            other_nodes,
        }
    }

    fn with<T>(&self, rank: usize, f: impl FnOnce(&mut PeerActivity) -> T) -> T {
        let mut guard = self.peers[rank]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    pub(crate) fn enter(&self, rank: usize, operation: &'static str) {
        self.with(rank, |p| {
            p.calls += 1;
            p.inside = Some((operation, Instant::now()));
        });
    }

    pub(crate) fn leave(&self, rank: usize) {
        self.with(rank, |p| p.inside = None);
    }

    fn end(&self, rank: usize, failed: bool) {
        self.with(rank, |p| {
            p.inside = None;
            p.ended = Some(failed);
        });
    }

    /// The first peer that has waited in a collective longer than `timeout`, as an error
    /// naming the peers it waits for.
    fn stalled(&self, timeout: Duration) -> Option<TrainError> {
        let snapshot: Vec<PeerActivity> = (0..self.peers.len())
            .map(|r| self.with(r, |p| p.clone()))
            .collect();
        let (rank, operation, since, calls) =
            snapshot.iter().enumerate().find_map(|(rank, p)| {
                let (op, since) = p.inside?;
                (since.elapsed() > timeout).then_some((rank, op, since, p.calls))
            })?;
        let absent: Vec<String> = snapshot
            .iter()
            .enumerate()
            .filter(|(r, p)| *r != rank && (p.inside.is_none() || p.calls < calls))
            .map(|(r, p)| match (p.ended, p.inside) {
                (Some(true), _) => format!("peer {r} (failed after {} collective calls)", p.calls),
                (Some(false), _) => format!("peer {r} (ended its run after {} calls)", p.calls),
                (None, Some((op, _))) => {
                    format!(
                        "peer {r} (in an earlier call, {op} #{}, out of step)",
                        p.calls
                    )
                }
                (None, None) => format!(
                    "peer {r} (not in a collective: busy or stuck after {} calls)",
                    p.calls
                ),
            })
            .collect();
        Some(TrainError::Collective {
            rank,
            operation,
            message: format!(
                "local peer {rank} waited {:.0} s (run.collective_timeout_s = {}) in \
                 collective call #{calls} for {}",
                since.elapsed().as_secs_f64(),
                timeout.as_secs(),
                if absent.is_empty() && self.other_nodes {
                    other_nodes_absent()
                } else if absent.is_empty() {
                    "peers that are in the call but did not complete it".to_string()
                } else {
                    absent.join(", ")
                }
            ),
        })
    }
}

/// What this node waits for when all its peers wait on the other nodes: when this process
/// serves the orchestrator (node 0) and not every node has registered with it, the nodes that
/// did (by address); otherwise the possible causes.
fn other_nodes_absent() -> String {
    match super::orchestrator::registered_nodes() {
        Some((registered, expected)) if registered.len() < expected => format!(
            "the other nodes: only {} of the {expected} nodes registered with the orchestrator \
             this node serves ({}); the others never joined",
            registered.len(),
            registered.join(", ")
        ),
        _ => "the other nodes' peers (a node died, hangs, or never joined; the process serving \
              the orchestrator names the nodes that registered)"
            .to_string(),
    }
}

/// A peer's place in a group before it joins: its rank, and the group's watch.
#[derive(Debug, Clone)]
pub struct PeerSeat {
    rank: usize,
    world: usize,
    node: Option<NodeLink>,
    watch: Arc<GroupWatch>,
}

impl PeerSeat {
    /// This peer's rank among the peers of this process.
    pub fn local_rank(&self) -> usize {
        self.rank
    }

    /// The number of peers of this process.
    pub fn local_world(&self) -> usize {
        self.world
    }

    /// The other nodes, if any.
    pub fn node(&self) -> Option<&NodeLink> {
        self.node.as_ref()
    }

    /// Joins the group on `device` (burn-collective on backend `B`: the inner backend of an
    /// autodiff backend that trains); blocks until every peer joined.
    ///
    /// # Errors
    /// [`TrainError::Collective`] if burn-collective refuses the registration.
    pub fn join<B: Backend>(self, device: B::Device) -> Result<Peer, TrainError> {
        Peer::join_on::<B>(
            self.rank,
            self.world,
            self.node.as_ref(),
            device,
            Some(self.watch),
        )
    }
}

/// The work of one peer: given its seat, returns its result.
pub type PeerBody<R> = Box<dyn FnOnce(PeerSeat) -> Result<R, TrainError> + Send>;

/// Runs one thread per body (local rank = position; with `node`, this process is one node of
/// several) and returns their results in rank order, or the
/// first failure: a peer's error or panic, or a peer waiting in a collective for more than
/// `timeout` (the error names the peers that did not arrive). See the module docs for what
/// happens to blocked threads.
///
/// # Errors
/// [`TrainError::Peer`] wrapping a peer's own error or panic; [`TrainError::Collective`] for
/// a timeout.
pub fn run_peers<R: Send + 'static>(
    timeout: Duration,
    node: Option<NodeLink>,
    bodies: Vec<PeerBody<R>>,
) -> Result<Vec<R>, TrainError> {
    let world = bodies.len();
    let watch = Arc::new(GroupWatch::new(world, node.is_some()));
    let (tx, rx) = mpsc::channel();
    for (rank, body) in bodies.into_iter().enumerate() {
        let seat = PeerSeat {
            rank,
            world,
            node: node.clone(),
            watch: watch.clone(),
        };
        let tx = tx.clone();
        let watch = watch.clone();
        std::thread::Builder::new()
            .name(format!("clipkd-peer-{rank}"))
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(seat)))
                    .unwrap_or_else(|panic| {
                        let message = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "a panic".to_string());
                        Err(TrainError::Peer {
                            rank,
                            source: Box::new(TrainError::Panicked { message }),
                        })
                    });
                watch.end(rank, result.is_err());
                // The receiver is gone once the group failed: nothing to report then.
                let _ = tx.send((rank, result));
            })
            .map_err(|e| TrainError::Collective {
                rank,
                operation: "start",
                message: format!("cannot start the peer's thread: {e}"),
            })?;
    }
    drop(tx);
    let mut results: Vec<Option<R>> = (0..world).map(|_| None).collect();
    let mut left = world;
    while left > 0 {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((_, Err(e @ TrainError::Peer { .. }))) => return Err(e),
            Ok((rank, Err(e))) => {
                return Err(TrainError::Peer {
                    rank,
                    source: Box::new(e),
                });
            }
            Ok((rank, Ok(r))) => {
                results[rank] = Some(r);
                left -= 1;
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Some(e) = watch.stalled(timeout) {
                    return Err(e);
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every peer reported"))
        .collect())
}
