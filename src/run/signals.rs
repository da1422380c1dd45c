//! Signals: the first Ctrl-C (or SIGTERM, SIGHUP) asks the work to stop
//! cleanly; the second kills every engine kitt started and exits at once.

use super::Cancel;
use crate::error::Exit;

/// First Ctrl-C (or SIGTERM, SIGHUP): stop the run cleanly. Second: kill the
/// engines and exit now.
pub async fn watch_interrupts(cancel: Cancel) {
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
