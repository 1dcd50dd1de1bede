//! `clipkd orchestrator`: serves burn-collective's global orchestrator, which the nodes of a
//! run on several machines register with (node 0 of a run starts one itself; this command is
//! for a machine of its own, e.g. a login node).

use clap::Args;

/// Serve the orchestrator of a run on several machines until interrupted.
#[derive(Debug, Args)]
pub struct OrchestratorArgs {
    /// The port to listen on (all interfaces); the nodes' `--orchestrator HOST:PORT`.
    #[arg(long)]
    pub port: u16,
}

/// Runs `clipkd orchestrator`.
pub fn run(args: OrchestratorArgs) -> anyhow::Result<()> {
    clipkd_train::distributed::start_orchestrator(args.port)?;
    eprintln!(
        "orchestrator listening on port {} (Ctrl-C to stop): start every node with \
         --orchestrator THIS_HOST:{}",
        args.port, args.port
    );
    // Say who registers (and who leaves), so that a node that never joins can be told apart.
    let mut shown = None;
    loop {
        let now = clipkd_train::distributed::registered_nodes();
        if now != shown {
            if let Some((nodes, expected)) = &now {
                eprintln!(
                    "{} of {expected} nodes registered: {}",
                    nodes.len(),
                    nodes.join(", ")
                );
            }
            shown = now;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
