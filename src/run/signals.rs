//! Signals: the first Ctrl-C (or SIGTERM, SIGHUP) asks the work to stop
//! cleanly; the second kills every engine kitt started and exits at once.

use std::future::Future;

use super::Cancel;
use crate::error::{Exit, KittError};

/// Runs `work` to completion on a multi-threaded runtime while Ctrl-C,
/// SIGTERM and SIGHUP are watched: the first cancels `work`'s [`Cancel`],
/// the second kills every engine and exits.
pub fn block_on_interruptible<F: Future>(
    work: impl FnOnce(Cancel) -> F,
) -> Result<F::Output, KittError> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|error| {
            KittError::Environment(format!("cannot start the async runtime: {error}"))
        })?;
    let cancel = Cancel::default();
    Ok(runtime.block_on(async {
        let watcher = tokio::spawn(watch_interrupts(cancel.clone()));
        let output = work(cancel).await;
        watcher.abort();
        output
    }))
}

/// First Ctrl-C (or SIGTERM, SIGHUP): stop the run cleanly. Second: kill the
/// engines and exit now.
async fn watch_interrupts(cancel: Cancel) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hangup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::hangup()))
    else {
        return;
    };
    let mut interrupted = false;
    loop {
        tokio::select! {
            result = tokio::signal::ctrl_c() => if result.is_err() { return },
            _ = term.recv() => {}
            _ = hangup.recv() => {}
        }
        if interrupted {
            crate::engine::process::kill_all_engines();
            std::process::exit(i32::from(Exit::Interrupted.code()));
        }
        interrupted = true;
        eprintln!("interrupted: stopping the engine (interrupt again to stop at once)");
        cancel.cancel();
    }
}
