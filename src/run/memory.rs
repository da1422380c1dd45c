//! Memory while an engine serves: GPU memory in use where the GPUs report
//! it, else the resident memory of the engine's process group, sampled at
//! an interval while a request runs.
//!
//! Decisions:
//! - GPU readings go through the same tools as the inventory
//!   ([`crate::hardware::gpu::Tools`]: NVML, else the configured
//!   `nvidia-smi` with its timeout), so a machine is read the same way
//!   everywhere.
//! - Only the run's own GPUs count: those a parallel campaign placed it on,
//!   else those the user's `CUDA_VISIBLE_DEVICES` leaves visible, else all.
//!   A run beside others on a shared machine would otherwise count their
//!   memory as its own. A run placed on the CPU reads its process group.
//! - Every reading runs on tokio's blocking pool, and the sampler runs
//!   beside the request rather than between its polls: a slow `nvidia-smi`
//!   never stalls the request being measured, nor the other runs in flight.

use std::future::Future;
use std::time::Duration;

use crate::engine::process::group_resident_bytes;
use crate::hardware::gpu::{Reader, Tools};

/// Where memory readings come from.
#[derive(Debug, Clone)]
pub enum MemorySampler {
    /// Resident memory of this process group.
    ProcessGroup(u32),
    /// Memory in use on GPUs, summed.
    Gpu {
        /// NVML or `nvidia-smi`.
        reader: Reader,
        /// The GPU indices counted; `None`: every GPU.
        devices: Option<Vec<u32>>,
    },
    /// Nothing to sample (a server kitt did not start, on a machine without GPUs).
    Unavailable,
}

impl MemorySampler {
    /// GPU memory of the run's GPUs (`placed`: where a parallel campaign put
    /// it) when the GPUs report it, else the engine's process group. Reads
    /// the environment's tools off the async threads.
    pub async fn for_engine(process_group: Option<u32>, placed: Option<&[u32]>) -> Self {
        let placed = placed.map(<[u32]>::to_vec);
        let gpu = tokio::task::spawn_blocking(move || Self::gpu(&Tools::from_env(), placed))
            .await
            .ok()
            .flatten();
        gpu.unwrap_or_else(|| {
            process_group.map_or(MemorySampler::Unavailable, MemorySampler::ProcessGroup)
        })
    }

    /// The GPU sampler for a run `placed` on these GPUs (`None`: not
    /// placed), when `tools` read their memory; blocks.
    pub fn gpu(tools: &Tools, placed: Option<Vec<u32>>) -> Option<MemorySampler> {
        let devices = match placed {
            Some(placed) => Some(placed),
            None if tools.visible.is_some() => {
                let inventory = crate::hardware::inventory::inventory_with(tools);
                Some(inventory.gpus.iter().map(|device| device.index).collect())
            }
            None => None,
        };
        if devices.as_ref().is_some_and(Vec::is_empty) {
            return None;
        }
        let reader = tools.reader()?;
        reader.used_bytes(devices.as_deref())?;
        Some(MemorySampler::Gpu { reader, devices })
    }

    /// What the readings measure, for the result's provenance.
    pub fn describe(&self) -> String {
        match self {
            MemorySampler::ProcessGroup(_) => "resident memory of the engine's processes".into(),
            MemorySampler::Gpu { reader, devices } => {
                let which = match devices {
                    Some(devices) => {
                        let list: Vec<String> = devices.iter().map(u32::to_string).collect();
                        format!("GPU {}", list.join(","))
                    }
                    None => "all GPUs".to_owned(),
                };
                format!("GPU memory used on {which} ({})", reader.source())
            }
            MemorySampler::Unavailable => {
                "not measured (no GPU, server not started by kitt)".into()
            }
        }
    }

    /// One reading in bytes, taken on the blocking pool.
    pub async fn read(&self) -> Option<u64> {
        let sampler = self.clone();
        tokio::task::spawn_blocking(move || sampler.read_blocking()).await.ok().flatten()
    }

    fn read_blocking(&self) -> Option<u64> {
        match self {
            MemorySampler::ProcessGroup(pgid) => {
                Some(group_resident_bytes(*pgid)).filter(|b| *b > 0)
            }
            MemorySampler::Gpu { reader, devices } => reader.used_bytes(devices.as_deref()),
            MemorySampler::Unavailable => None,
        }
    }

    /// Runs `work` while sampling every `interval`: one reading before it
    /// starts, readings beside it, one after it ends. Returns its output
    /// and the readings.
    pub async fn during<T>(
        &self,
        interval: Duration,
        work: impl Future<Output = T>,
    ) -> (T, Vec<u64>) {
        let mut samples = Vec::new();
        samples.extend(self.read().await);
        let output = {
            let sampling = self.sample_every(interval, &mut samples);
            tokio::select! {
                output = work => output,
                never = sampling => match never {},
            }
        };
        samples.extend(self.read().await);
        (output, samples)
    }

    /// Appends a reading every `interval` until dropped. A reading still
    /// running when it is dropped finishes on the blocking pool unheard.
    async fn sample_every(
        &self,
        interval: Duration,
        samples: &mut Vec<u64>,
    ) -> std::convert::Infallible {
        let start = tokio::time::Instant::now() + interval;
        let mut ticker = tokio::time::interval_at(start, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            samples.extend(self.read().await);
        }
    }
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

    #[tokio::test]
    async fn unavailable_reads_nothing() {
        assert_eq!(MemorySampler::Unavailable.read().await, None);
        let (_, samples) =
            MemorySampler::Unavailable.during(Duration::from_millis(1), async {}).await;
        assert!(samples.is_empty());
    }

    /// An `nvidia-smi` whose first call answers at once and whose later
    /// calls wait for a `flag` file in its directory before answering
    /// 100 MiB; they give up after about 3 s (within kitt's 10 s limit on
    /// `nvidia-smi`) and answer 1 MiB.
    fn waiting_nvidia_smi(dir: &std::path::Path) -> std::path::PathBuf {
        let program = dir.join("nvidia-smi");
        let script = "#!/bin/sh\n\
            dir=$(dirname \"$0\")\n\
            echo call >> \"$dir/calls\"\n\
            if [ \"$(wc -l < \"$dir/calls\")\" -gt 1 ]; then\n\
              i=0\n\
              while [ ! -e \"$dir/flag\" ] && [ $i -lt 300 ]; do sleep 0.01; i=$((i+1)); done\n\
              [ -e \"$dir/flag\" ] || { echo '0, 1'; exit 0; }\n\
            fi\n\
            echo '0, 100'\n";
        std::fs::write(&program, script).unwrap();
        let mut permissions = std::fs::metadata(&program).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&program, permissions).unwrap();
        program
    }

    /// On a single-threaded runtime the work only makes progress if the
    /// readings beside it leave the thread free: the work raises the flag
    /// a pending reading waits for. Were the reading taken on the thread,
    /// or the work not polled while it is pending, the reading would give
    /// up and answer 1 MiB.
    #[tokio::test(flavor = "current_thread")]
    async fn a_pending_reading_does_not_stall_the_work_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let reader = Reader::NvidiaSmi(waiting_nvidia_smi(dir.path()));
        let sampler = MemorySampler::Gpu { reader, devices: Some(vec![0]) };
        let calls = dir.path().join("calls");
        let work = async {
            loop {
                let seen = std::fs::read_to_string(&calls).unwrap_or_default();
                if seen.lines().count() >= 2 {
                    std::fs::write(dir.path().join("flag"), "").unwrap();
                    return "done";
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };

        let (output, samples) = sampler.during(Duration::from_millis(1), work).await;

        assert_eq!(output, "done");
        assert!(samples.len() >= 2, "{samples:?}");
        assert!(samples.iter().all(|bytes| *bytes == 100 << 20), "{samples:?}");
    }

    #[test]
    fn placed_on_the_cpu_there_is_no_gpu_sampler() {
        let tools = Tools::from_env();
        assert!(MemorySampler::gpu(&tools, Some(Vec::new())).is_none());
    }

    #[test]
    fn the_provenance_names_the_devices_and_the_source() {
        let reader = Reader::NvidiaSmi("nvidia-smi".into());
        let placed = MemorySampler::Gpu { reader: reader.clone(), devices: Some(vec![0, 1]) };
        assert_eq!(placed.describe(), "GPU memory used on GPU 0,1 (nvidia-smi)");
        let all = MemorySampler::Gpu { reader, devices: None };
        assert_eq!(all.describe(), "GPU memory used on all GPUs (nvidia-smi)");
    }
}
