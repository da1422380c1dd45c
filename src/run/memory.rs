//! Memory while an engine serves: GPU memory through `nvidia-smi` where there
//! is a GPU, else the resident memory of the engine's process group, sampled
//! at an interval while a request runs.

use std::future::Future;
use std::time::Duration;

use crate::engine::process::group_resident_bytes;

/// Where memory readings come from.
#[derive(Debug, Clone)]
pub enum MemorySampler {
    /// Resident memory of this process group.
    ProcessGroup(u32),
    /// Used memory of every GPU, summed, from `nvidia-smi`.
    NvidiaSmi,
    /// Nothing to sample (a server kitt did not start, on a machine without GPUs).
    Unavailable,
}

impl MemorySampler {
    /// GPU memory when `nvidia-smi` answers, else the engine's process group.
    pub fn for_engine(process_group: Option<u32>) -> Self {
        if nvidia_used_bytes().is_some() {
            return MemorySampler::NvidiaSmi;
        }
        process_group.map_or(MemorySampler::Unavailable, MemorySampler::ProcessGroup)
    }

    /// What the readings measure, for the result's provenance.
    pub fn describe(&self) -> String {
        match self {
            MemorySampler::ProcessGroup(_) => "resident memory of the engine's processes".into(),
            MemorySampler::NvidiaSmi => "GPU memory used on all devices (nvidia-smi)".into(),
            MemorySampler::Unavailable => {
                "not measured (no GPU, server not started by kitt)".into()
            }
        }
    }

    /// One reading in bytes.
    pub fn read(&self) -> Option<u64> {
        match self {
            MemorySampler::ProcessGroup(pgid) => {
                Some(group_resident_bytes(*pgid)).filter(|b| *b > 0)
            }
            MemorySampler::NvidiaSmi => nvidia_used_bytes(),
            MemorySampler::Unavailable => None,
        }
    }

    /// Runs `work` while sampling every `interval`; returns its output and the readings.
    pub async fn during<T>(
        &self,
        interval: Duration,
        work: impl Future<Output = T>,
    ) -> (T, Vec<u64>) {
        let mut samples = Vec::new();
        samples.extend(self.read());
        tokio::pin!(work);
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                output = &mut work => {
                    samples.extend(self.read());
                    return (output, samples);
                }
                _ = ticker.tick() => samples.extend(self.read()),
            }
        }
    }
}

fn nvidia_used_bytes() -> Option<u64> {
    let output = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=memory.used", "--format=csv,noheader,nounits"])
        .output()
        .ok()
        .filter(|out| out.status.success())?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mib: Option<u64> = text.lines().map(|line| line.trim().parse::<u64>().ok()).sum();
    mib.map(|mib| mib * 1024 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn samples_our_own_process_group_while_work_runs() {
        let pgid = nix::unistd::getpgrp().as_raw() as u32;
        let sampler = MemorySampler::ProcessGroup(pgid);
        let (value, samples) = sampler
            .during(Duration::from_millis(5), tokio::time::sleep(Duration::from_millis(50)))
            .await;
        assert_eq!(value, ());
        assert!(samples.len() >= 3, "{samples:?}");
        assert!(samples.iter().all(|bytes| *bytes > 1_000_000), "{samples:?}");
    }

    #[test]
    fn unavailable_reads_nothing() {
        assert_eq!(MemorySampler::Unavailable.read(), None);
    }
}
