//! burn-collective's global orchestrator (its `orchestrator` feature: a websocket server every
//! node registers with), served by a `clipkd` process: node 0 of a run, or
//! `clipkd orchestrator --port P`.

use crate::error::TrainError;

fn error(message: String) -> TrainError {
    TrainError::Collective {
        rank: 0,
        operation: "orchestrator",
        message,
    }
}

/// Starts the orchestrator on `port` (all interfaces) in a background thread with its own
/// async runtime, and returns once it listens; it serves until the process ends.
///
/// # Errors
/// [`TrainError::Collective`] if the port is taken or the runtime cannot start.
pub fn start_orchestrator(port: u16) -> Result<(), TrainError> {
    // A taken port is an error here, not a log line of the server's thread.
    drop(
        std::net::TcpListener::bind(("0.0.0.0", port))
            .map_err(|e| error(format!("cannot listen on port {port}: {e}")))?,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| error(format!("cannot start its runtime: {e}")))?;
    std::thread::Builder::new()
        .name("clipkd-orchestrator".into())
        .spawn(move || runtime.block_on(burn_collective::start_global_orchestrator(port)))
        .map_err(|e| error(format!("cannot start its thread: {e}")))?;
    // Until it accepts connections, a node's first attempt would fail (and be retried).
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(error(format!(
        "it did not start listening on port {port} within 2 s"
    )))
}

/// The nodes registered so far with the orchestrator this process serves (their addresses,
/// `ws://host:port`) and the number of nodes it waits for; `None` when this process serves
/// none, or no node has registered yet.
pub fn registered_nodes() -> Option<(Vec<String>, usize)> {
    let (addresses, expected) = burn_collective::registered_nodes();
    expected.map(|k| (addresses, k as usize))
}
