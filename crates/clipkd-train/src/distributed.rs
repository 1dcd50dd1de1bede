//! Data parallelism over Burn's own collective engine (`burn-collective`, re-exported as
//! `burn::collective`): the peers of a data-parallel group ([`Peer`]), the exact gradient of
//! the global batch ([`data_parallel_gradients`]), a whole optimizer step
//! ([`data_parallel_step`]), and a supervised group of local peers ([`run_peers`], which the trainer runs on several
//! devices with: `PreparedRun::run_on_devices`).
//! `docs/distributed.md` has the launch commands, the data and checkpoint semantics, and the
//! cost arithmetic.
//!
//! # The step on `W` peers
//! Each peer holds a copy of the student and the loss module and `n = N / W` of the global
//! batch's `N` samples. Peer `r` owns rows `r·n .. r·n + n` of the global batch.
//! 1. It embeds its samples (student with gradient, teacher without) and all-gathers both into
//!    the global batch ([`Peer::gather_rows`]: burn-collective has no all-gather, so each peer
//!    writes its rows into a zero `[N, D]` tensor and the peers all-reduce it with a sum; the
//!    embeddings are small next to the gradients).
//! 2. Its loss `L_r` is the losses' local-rows form on the gathered batch
//!    (`DistillInput::with_local_rows`: this peer's rows are the anchors, the whole batch the
//!    candidates, the mean over the local rows), computed on the gathered student embeddings
//!    as a leaf `G`, so that the backward gives `∂L_r/∂G` for all `N` rows.
//! 3. The peers all-reduce `∂L_r/∂G` (sum): peer `r` takes its rows of `Σ_p ∂L_p/∂G`, the
//!    gradient of every peer's loss with respect to its own embeddings (open_clip's
//!    `gather_with_grad`), and back-propagates it through its towers.
//! 4. The parameter gradients (towers, logit scale, loss parameters) are all-reduced (sum, in
//!    the module's visiting order, flattened into buckets of at most 25 MiB) and divided by `W`: the
//!    gradient of `mean_r L_r`, which equals the single-device loss on the global batch (the
//!    contract of `DistillInput`). CLIP-KD's DDP averages the same per-peer gradients, but
//!    without step 3 (`gather_with_grad=False`), so its gradient lacks the cross-peer terms; here
//!    `W` peers x `n` samples give the update of one peer with `N` samples, which the tests
//!    check.
//!
//! # The step's collectives
//! Per micro-batch: one gather of the student's embeddings (image, text, and the masked view
//! and intermediate features the losses read, side by side), one of the teacher's, one
//! all-reduce of their gradients; per optimizer step: the gradient buckets and one small
//! all-reduce of the loss terms.

mod group;
mod orchestrator;
mod peer;
mod step;

pub use group::{PeerBody, PeerSeat, run_peers};
pub use orchestrator::{registered_nodes, start_orchestrator};
pub use peer::{BUCKET_BYTES, CollectiveStats, NodeLink, Peer, take_stats};
pub use step::{data_parallel_gradients, data_parallel_step};
