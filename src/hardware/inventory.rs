//! The GPU inventory a parallel campaign places its runs on: every device
//! with its index, UUID, model, memory and current use.
//!
//! [`inventory`] asks NVML, else `nvidia-smi` (`--query-gpu=index,uuid,name,
//! memory.total,memory.used,utilization.gpu --format=csv,noheader,nounits`),
//! through [`super::gpu::Tools`], keeps the devices the user's
//! `CUDA_VISIBLE_DEVICES` leaves visible ([`super::visible`]), and never
//! fails: without either tool, or when neither answers, the machine is one
//! CPU device whose memory is the system RAM. [`Inventory::source`] says
//! which tool answered.
//!
//! Decisions:
//! - A device whose memory is not reported (NVML `NotSupported`,
//!   `nvidia-smi` `[N/A]` or `[Not Supported]`: unified-memory systems such
//!   as GB10 or Jetson) shares the system RAM, so its usable memory is the
//!   RAM size. A memory field that is neither a number nor bracketed is a
//!   garbled answer: that device is skipped with a warning.
//! - A line that does not parse is skipped with a warning; the others stand.
//!   An index reported twice keeps its first line, with a warning.
//! - [`Device::free_bytes`] is the memory not already in use (total minus
//!   used), for placement that respects other tenants of a device.

use super::gpu::{Source, Tools};
use crate::plan::matrix::human_bytes;

/// One device runs are placed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The index `CUDA_VISIBLE_DEVICES` and docker's `--gpus device=` take
    /// (PCI bus order, as NVML and `nvidia-smi` number devices).
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

    /// The usable memory not already in use: [`Device::usable_bytes`] minus
    /// the memory in use (nothing subtracted when that is not reported).
    pub fn free_bytes(&self, ram_bytes: u64) -> u64 {
        self.usable_bytes(ram_bytes).saturating_sub(self.used_bytes.unwrap_or(0))
    }
}

/// The machine's devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// GPUs runs may use, in index order; empty on a CPU-only machine.
    pub gpus: Vec<Device>,
    /// System RAM in bytes (0 when unknown).
    pub ram_bytes: u64,
    /// Which tool described the GPUs.
    pub source: Source,
    /// Indices of GPUs the user's `CUDA_VISIBLE_DEVICES` hides.
    pub hidden: Vec<u32>,
}

impl Inventory {
    /// A machine with these GPUs (none: CPU only) and this much RAM, as no
    /// tool described it (see [`Inventory::from_source`]).
    pub fn new(gpus: Vec<Device>, ram_bytes: u64) -> Inventory {
        Inventory { gpus, ram_bytes, source: Source::Neither, hidden: Vec::new() }
    }

    /// The same machine, described by `source`.
    pub fn from_source(self, source: Source) -> Inventory {
        Inventory { source, ..self }
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

    /// The memory not already in use on device slot `slot` (the CPU
    /// device: the RAM, its use not counted).
    pub fn free_bytes(&self, slot: usize) -> u64 {
        match self.gpus.get(slot) {
            Some(device) => device.free_bytes(self.ram_bytes),
            None => self.ram_bytes,
        }
    }

    /// One line: every device, and which tool described them.
    pub fn describe(&self) -> String {
        let hidden = match self.hidden.as_slice() {
            [] => String::new(),
            indices => format!("; GPU {} hidden by CUDA_VISIBLE_DEVICES", list(indices)),
        };
        if self.gpus.is_empty() {
            let why = match self.source {
                Source::Neither => "neither NVML nor nvidia-smi answered".to_owned(),
                source if self.hidden.is_empty() => format!("{source} found none"),
                source => format!("found by {source}{hidden}"),
            };
            return format!(
                "no GPU: one CPU device with {} of RAM ({why})",
                human_bytes(self.ram_bytes)
            );
        }
        let devices: Vec<String> = self
            .gpus
            .iter()
            .map(|device| {
                let memory = match device.memory_bytes {
                    Some(bytes) => human_bytes(bytes),
                    None => format!("unified memory ({} of RAM)", human_bytes(self.ram_bytes)),
                };
                format!("GPU {} {} {memory}", device.index, device.name)
            })
            .collect();
        format!("{} (from {}{hidden})", devices.join(", "), self.source)
    }
}

/// `0,1,3`.
fn list(indices: &[u32]) -> String {
    indices.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// The fields asked for, in the order [`parse`] reads them.
pub const QUERY: &str = "--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu";

/// This machine's devices, as the environment's tools describe them; blocks
/// while NVML or `nvidia-smi` answers. Never fails.
pub fn inventory() -> Inventory {
    inventory_with(&Tools::from_env())
}

/// The devices `tools` describe, restricted to those `CUDA_VISIBLE_DEVICES`
/// (in `tools`) leaves visible. Never fails.
pub fn inventory_with(tools: &Tools) -> Inventory {
    let ram_bytes = super::detect_ram_bytes();
    let (source, devices) = all_devices(tools);
    let seen = super::visible::restrict(devices, tools.visible.as_deref(), tools.order.as_deref());
    Inventory { gpus: seen.visible, ram_bytes, source, hidden: seen.hidden }
}

/// Every GPU, from NVML when it answers, else from `nvidia-smi`.
pub fn all_devices(tools: &Tools) -> (Source, Vec<Device>) {
    if let Some(devices) = tools.nvml().and_then(|nvml| super::gpu::nvml_devices(&nvml)) {
        return (Source::Nvml, merge_duplicates(devices));
    }
    let answer = tools.nvidia_smi.as_deref().and_then(|program| {
        super::run_nvidia_smi(program, &[QUERY, "--format=csv,noheader,nounits"])
    });
    match answer {
        Some(text) => (Source::NvidiaSmi, parse(&text)),
        None => (Source::Neither, Vec::new()),
    }
}

/// Keeps the first device of each index, warning about the others.
fn merge_duplicates(devices: Vec<Device>) -> Vec<Device> {
    let mut kept: Vec<Device> = Vec::with_capacity(devices.len());
    for device in devices {
        if kept.iter().any(|known| known.index == device.index) {
            tracing::warn!(index = device.index, "GPU index reported twice; keeping the first");
            continue;
        }
        kept.push(device);
    }
    kept
}

/// A memory field in MiB: `Ok(Some(bytes))`, `Ok(None)` when the device
/// does not report it, `Err` when it is garbled. Only `[N/A]` and `[Not
/// Supported]` mean "not reported" (unified memory, for the total); another
/// bracketed answer (`[Unknown Error]`, `[Insufficient Permissions]`) is a
/// query that failed, garbled for the total (the device is skipped rather
/// than credited the RAM) and unknown for the memory in use.
fn memory_field(field: &str, total: bool) -> Result<Option<u64>, ()> {
    if field.starts_with('[') && field.ends_with(']') {
        let inner = field[1..field.len() - 1].trim().to_ascii_lowercase();
        let unreported = inner == "n/a" || inner == "not supported";
        return if unreported || !total { Ok(None) } else { Err(()) };
    }
    let mib: u64 = field.parse().map_err(|_| ())?;
    mib.checked_mul(1 << 20).map(Some).ok_or(())
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
        let (Ok(memory_bytes), Ok(used_bytes)) =
            (memory_field(total, true), memory_field(used, false))
        else {
            tracing::warn!(line, "ignoring an nvidia-smi line whose memory is not a number");
            continue;
        };
        devices.push(Device {
            index,
            uuid: (!uuid.is_empty() && !uuid.starts_with('[')).then(|| uuid.to_owned()),
            name: name.to_owned(),
            memory_bytes,
            used_bytes,
            utilization_percent: utilization.parse().ok(),
        });
    }
    merge_duplicates(devices)
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
    fn an_index_reported_twice_keeps_its_first_line() {
        let devices = parse(
            "0, GPU-a, First, 100, 0, 0\n0, GPU-b, Second, 200, 0, 0\n1, GPU-c, C, 5, 0, 0\n",
        );
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].name, "First");
        assert_eq!(devices[1].index, 1);
    }

    #[test]
    fn a_failed_memory_query_is_not_unified_memory() {
        let devices = parse(
            "0, GPU-a, A, [Unknown Error], [Unknown Error], 0\n\
             1, GPU-b, B, [Insufficient Permissions], 0, 0\n\
             2, GPU-c, C, 24576, [Unknown Error], 0\n\
             3, GPU-d, D, [Not Supported], [Not Supported], 0\n",
        );
        let found: Vec<(u32, Option<u64>, Option<u64>)> =
            devices.iter().map(|d| (d.index, d.memory_bytes, d.used_bytes)).collect();
        assert_eq!(found, [(2, Some(24576 * MIB), None), (3, None, None)]);
    }

    #[test]
    fn a_garbled_memory_field_skips_the_device_instead_of_meaning_unified_memory() {
        let devices = parse(
            "0, GPU-a, A, 12GB, 0, 0\n1, GPU-b, B, 100, lots, 0\n2, GPU-c, C, [N/A], [N/A], 0\n",
        );
        assert_eq!(devices.len(), 1, "{devices:?}");
        assert_eq!(devices[0].index, 2);
        assert_eq!(devices[0].memory_bytes, None, "bracketed: unified memory");
    }

    #[test]
    fn free_memory_is_total_minus_used() {
        let devices = parse("0, GPU-a, A, 24576, 4096, 10\n1, GPU-b, B, [N/A], [N/A], 0\n");
        let inventory = Inventory::new(devices, 64 * 1024 * MIB);
        assert_eq!(inventory.gpus[0].free_bytes(inventory.ram_bytes), 20480 * MIB);
        assert_eq!(inventory.free_bytes(0), 20480 * MIB);
        assert_eq!(inventory.free_bytes(1), 64 * 1024 * MIB, "unified, use unknown: the RAM");
        let full = Device { used_bytes: Some(30000 * MIB), ..inventory.gpus[0].clone() };
        assert_eq!(full.free_bytes(0), 0, "never below zero");
        assert_eq!(Inventory::new(Vec::new(), 8 * MIB).free_bytes(0), 8 * MIB);
    }

    #[test]
    fn the_description_names_the_source_and_what_is_hidden() {
        let devices = parse("0, GPU-a, A, 1024, 0, 0\n");
        let inventory = Inventory { hidden: vec![1, 2], ..Inventory::new(devices, 0) }
            .from_source(Source::Nvml);
        assert_eq!(
            inventory.describe(),
            "GPU 0 A 1.0 GiB (from NVML; GPU 1,2 hidden by CUDA_VISIBLE_DEVICES)"
        );
        let none = Inventory::new(Vec::new(), 1 << 30);
        assert_eq!(
            none.describe(),
            "no GPU: one CPU device with 1.0 GiB of RAM (neither NVML nor nvidia-smi answered)"
        );
        let all_hidden =
            Inventory { hidden: vec![0], ..none.clone() }.from_source(Source::NvidiaSmi);
        assert_eq!(
            all_hidden.describe(),
            "no GPU: one CPU device with 1.0 GiB of RAM (found by nvidia-smi; GPU 0 hidden by \
             CUDA_VISIBLE_DEVICES)"
        );
    }

    #[test]
    fn without_nvml_the_inventory_asks_nvidia_smi_and_without_both_is_the_cpu() {
        let tools = Tools {
            nvml: super::super::gpu::NvmlLibrary::Off,
            nvidia_smi: Some("/nonexistent/kitt-test/nvidia-smi".into()),
            visible: None,
            order: None,
        };
        let inventory = inventory_with(&tools);
        assert_eq!(inventory.source, Source::Neither);
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
