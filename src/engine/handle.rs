//! What kitt holds on to for an engine it started: a native process group or
//! a container. Readiness loops and the run ask the same questions of both.

use super::EngineError;
use super::docker::Container;
use super::process::{EngineProcess, STOP_GRACE};

/// A started engine.
#[derive(Debug)]
pub enum EngineHandle {
    /// A native process group.
    Process(EngineProcess),
    /// A Docker container.
    Container(Container),
}

impl From<EngineProcess> for EngineHandle {
    fn from(process: EngineProcess) -> Self {
        EngineHandle::Process(process)
    }
}

impl From<Container> for EngineHandle {
    fn from(container: Container) -> Self {
        EngineHandle::Container(container)
    }
}

impl EngineHandle {
    /// How the engine ended, if it has (an exit status, or the container's
    /// state and exit code).
    pub async fn exited(&mut self) -> Option<String> {
        match self {
            EngineHandle::Process(process) => process.exited().map(|status| status.to_string()),
            EngineHandle::Container(container) => container.exited().await,
        }
    }

    /// The last `lines` lines of the engine's output.
    pub fn log_tail(&self, lines: usize) -> String {
        match self {
            EngineHandle::Process(process) => process.log_tail(lines),
            EngineHandle::Container(container) => container.log_tail(lines),
        }
    }

    /// Stops the engine and waits until it is gone.
    pub async fn stop(&mut self) -> Result<(), EngineError> {
        match self {
            EngineHandle::Process(process) => {
                process.stop(STOP_GRACE).await.map_err(EngineError::Io)
            }
            EngineHandle::Container(container) => container.stop().await,
        }
    }

    /// Gives up on an engine that failed to start: a process is killed at
    /// once (dropped); a container is stopped and removed.
    pub async fn discard(self) {
        if let EngineHandle::Container(mut container) = self
            && let Err(error) = container.stop().await
        {
            tracing::warn!("cannot remove the failed engine's container: {error}");
        }
    }

    /// The process group whose memory is the engine's, when kitt can see it.
    pub fn process_group(&self) -> Option<u32> {
        match self {
            EngineHandle::Process(process) => Some(process.pid()),
            EngineHandle::Container(container) => container.process_group(),
        }
    }

    /// The native process, for checks only a native engine allows.
    pub fn process(&self) -> Option<&EngineProcess> {
        match self {
            EngineHandle::Process(process) => Some(process),
            EngineHandle::Container(_) => None,
        }
    }
}
