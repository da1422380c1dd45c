//! The GPU inventory a parallel campaign places its runs on: every device
//! with its index, UUID, model, memory and current use.
//!
//! [`inventory`] asks `nvidia-smi` (`--query-gpu=index,uuid,name,
//! memory.total,memory.used,utilization.gpu --format=csv,noheader,nounits`)
//! and never fails: without the command, or when it fails, the machine is
//! one CPU device whose memory is the system RAM.
//!
//! Decisions:
//! - NVML is not linked: `nvidia-smi` ships with every NVIDIA driver and
//!   reports the same numbers, and a library loaded at run time adds a
//!   code path no test machine here can run. A machine without the driver
//!   (no NVML, no `nvidia-smi`) is the CPU-only case.
//! - `KITT_NVIDIA_SMI` names the program to ask instead of `nvidia-smi` on
//!   the `PATH` (tests and odd installs); an empty value means "no GPU".
//! - A device whose memory is not reported (`[N/A]`, `[Not Supported]`:
//!   unified-memory systems such as GB10 or Jetson) shares the system RAM,
//!   so its usable memory is the RAM size.
//! - A line that does not parse is skipped with a warning; the others stand.

use std::path::PathBuf;

/// One device runs are placed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The index `CUDA_VISIBLE_DEVICES` and docker's `--gpus device=` take.
    pub index: u32,
    /// The device's UUID (`GPU-…`), when reported.
    pub uuid: Option<String>,
    /// Model name (`cpu` for the CPU-only device).
    pub name: String,
    /// Total memory in bytes, when the device reports its own.
    pub memory_bytes: Option<u64>,
    /// Memory in use now, in bytes, when reported.
    pub used_bytes: Option<u64>,
    /// Utilisation now, in percent, when reported.
    pub utilization_percent: Option<u32>,
}

impl Device {
    /// The memory a model may use on this device: its own, else (unified
    /// memory) the system RAM.
    pub fn usable_bytes(&self, ram_bytes: u64) -> u64 {
        self.memory_bytes.unwrap_or(ram_bytes)
    }
}

/// The machine's devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// GPUs in index order; empty on a CPU-only machine.
    pub gpus: Vec<Device>,
    /// System RAM in bytes (0 when unknown).
    pub ram_bytes: u64,
}

impl Inventory {
    /// A machine with these GPUs (none: CPU only) and this much RAM.
    pub fn new(gpus: Vec<Device>, ram_bytes: u64) -> Inventory {
        Inventory { gpus, ram_bytes }
    }

    /// Whether runs are placed on GPUs (else the machine is one CPU device).
    pub fn has_gpus(&self) -> bool {
        !self.gpus.is_empty()
    }

    /// How many devices runs are placed on: the GPUs, or the one CPU device.
    pub fn device_count(&self) -> usize {
        self.gpus.len().max(1)
    }

    /// The memory a model may use on device slot `slot` (the CPU device:
    /// the RAM).
    pub fn usable_bytes(&self, slot: usize) -> u64 {
        match self.gpus.get(slot) {
            Some(device) => device.usable_bytes(self.ram_bytes),
            None => self.ram_bytes,
        }
    }

    /// One line per device, for notes and `--verbose` output.
    pub fn describe(&self) -> String {
        if self.gpus.is_empty() {
            return format!("no GPU: one CPU device with {} of RAM", gib(self.ram_bytes));
        }
        let devices: Vec<String> = self
            .gpus
            .iter()
            .map(|device| {
                let memory = match device.memory_bytes {
                    Some(bytes) => gib(bytes),
                    None => format!("unified memory ({} of RAM)", gib(self.ram_bytes)),
                };
                format!("GPU {} {} {memory}", device.index, device.name)
            })
            .collect();
        devices.join(", ")
    }
}

/// `12.0 GiB`.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1024.0 * 1024.0 * 1024.0))
}

/// The program asked for the inventory: `KITT_NVIDIA_SMI`, else
/// `nvidia-smi` from the `PATH`; `None` when the variable is set empty.
fn program() -> Option<PathBuf> {
    match std::env::var_os("KITT_NVIDIA_SMI") {
        Some(value) if value.is_empty() => None,
        Some(value) => Some(PathBuf::from(value)),
        None => Some(PathBuf::from("nvidia-smi")),
    }
}

/// The fields asked for, in the order [`parse`] reads them.
pub const QUERY: &str = "--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu";

/// This machine's devices; blocks while `nvidia-smi` answers. Never fails.
pub fn inventory() -> Inventory {
    let ram_bytes = super::detect_ram_bytes();
    let gpus = program()
        .and_then(|program| {
            super::run_nvidia_smi(&program, &[QUERY, "--format=csv,noheader,nounits"])
        })
        .map(|text| parse(&text))
        .unwrap_or_default();
    Inventory::new(gpus, ram_bytes)
}

/// Parses the answer to [`QUERY`]: one line per device, memory in MiB. The
/// name may hold commas; the two fields before it and the three after it
/// cannot.
pub fn parse(text: &str) -> Vec<Device> {
    let mut devices = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let mut head = line.splitn(3, ',').map(str::trim);
        let (Some(index), Some(uuid), Some(rest)) = (head.next(), head.next(), head.next()) else {
            tracing::warn!(line, "ignoring an nvidia-smi line without index, uuid and name");
            continue;
        };
        let mut tail = rest.rsplitn(4, ',').map(str::trim);
        let (Some(utilization), Some(used), Some(total), Some(name)) =
            (tail.next(), tail.next(), tail.next(), tail.next())
        else {
            tracing::warn!(line, "ignoring an nvidia-smi line without memory and utilisation");
            continue;
        };
        let Ok(index) = index.parse::<u32>() else {
            tracing::warn!(line, "ignoring an nvidia-smi line whose index is not a number");
            continue;
        };
        let mib = |field: &str| field.parse::<u64>().ok().and_then(|m| m.checked_mul(1 << 20));
        devices.push(Device {
            index,
            uuid: (!uuid.is_empty() && !uuid.starts_with('[')).then(|| uuid.to_owned()),
            name: name.to_owned(),
            memory_bytes: mib(total),
            used_bytes: mib(used),
            utilization_percent: utilization.parse().ok(),
        });
    }
    devices
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn two_devices_with_their_memory_and_use() {
        let devices = parse(
            "0, GPU-aaaa, NVIDIA H100 80GB HBM3, 81559, 1024, 3\n\
             1, GPU-bbbb, NVIDIA H100 80GB HBM3, 81559, 0, 0\n",
        );
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[1].index, 1);
        assert_eq!(devices[0].uuid.as_deref(), Some("GPU-aaaa"));
        assert_eq!(devices[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(devices[0].memory_bytes, Some(81_559 * MIB));
        assert_eq!(devices[0].used_bytes, Some(1024 * MIB));
        assert_eq!(devices[0].utilization_percent, Some(3));
    }

    #[test]
    fn a_name_with_commas_stays_whole() {
        let devices = parse("0, GPU-x, Odd, Name, 2048, [N/A], [N/A]\n");
        assert_eq!(devices[0].name, "Odd, Name");
        assert_eq!(devices[0].memory_bytes, Some(2048 * MIB));
        assert_eq!(devices[0].used_bytes, None);
    }

    #[test]
    fn unified_memory_uses_the_ram() {
        let devices = parse("0, GPU-c, NVIDIA GB10, [N/A], [N/A], [N/A]\n");
        assert_eq!(devices[0].memory_bytes, None);
        let inventory = Inventory::new(devices, 128 * 1024 * MIB);
        assert_eq!(inventory.usable_bytes(0), 128 * 1024 * MIB);
        assert!(inventory.describe().contains("unified memory"), "{}", inventory.describe());
    }

    #[test]
    fn malformed_lines_are_skipped_and_the_rest_stand() {
        let devices = parse("No devices were found\nx, GPU-a, A, 1, 1, 1\n1, GPU-b, B, 10, 0, 0\n");
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].index, 1);
    }

    #[test]
    fn a_cpu_only_machine_is_one_device() {
        let inventory = Inventory::new(Vec::new(), 16 * 1024 * MIB);
        assert_eq!(inventory.device_count(), 1);
        assert_eq!(inventory.usable_bytes(0), 16 * 1024 * MIB);
        assert!(!inventory.has_gpus());
    }

    #[test]
    fn a_missing_program_means_no_gpu() {
        assert_eq!(
            super::super::run_nvidia_smi(
                std::path::Path::new("/nonexistent/kitt-test/nvidia-smi"),
                &[QUERY]
            ),
            None
        );
    }
}
