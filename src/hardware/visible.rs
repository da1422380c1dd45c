//! The user's own `CUDA_VISIBLE_DEVICES`: which of the machine's GPUs kitt
//! may place runs on.
//!
//! Decisions, following what CUDA itself does with the variable:
//! - Entries are device indices or UUIDs (`GPU-8a3f…`), a UUID prefix being
//!   enough when it names one device. Indices are read in PCI bus order, as
//!   NVML and `nvidia-smi` number devices; engines get
//!   `CUDA_DEVICE_ORDER=PCI_BUS_ID` so they agree
//!   ([`crate::engine::Launch::device_env`]). When the user's own
//!   `CUDA_DEVICE_ORDER` is not `PCI_BUS_ID` and the GPUs differ, CUDA
//!   would number them fastest first, so kitt warns that it reads them in
//!   bus order.
//! - The first entry that names no device ends the list: it and every
//!   entry after it are ignored, with a warning (`-1`, the usual way to
//!   hide every GPU, is not warned about). An empty value, or a list whose
//!   first entry names no device, leaves no GPU: the machine is one CPU
//!   device.
//! - MIG instances (`MIG-…`) are not placed by kitt; such an entry is
//!   treated as naming no device.
//! - A device named twice counts once. The visible devices keep the
//!   inventory's index order.

use super::inventory::Device;

/// What a `CUDA_VISIBLE_DEVICES` value leaves of the machine's devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visibility {
    /// The devices runs may use, in index order.
    pub visible: Vec<Device>,
    /// Indices of the devices it hides.
    pub hidden: Vec<u32>,
    /// Entries that named no device, with the entries after them.
    pub ignored: Vec<String>,
}

/// Applies `spec` (the variable's value; `None`: unset, all visible) to
/// `devices`; `order` is the user's `CUDA_DEVICE_ORDER`. Warns about what
/// it ignores.
pub fn restrict(devices: Vec<Device>, spec: Option<&str>, order: Option<&str>) -> Visibility {
    let Some(spec) = spec else {
        return Visibility { visible: devices, hidden: Vec::new(), ignored: Vec::new() };
    };

    let entries: Vec<&str> =
        if spec.trim().is_empty() { Vec::new() } else { spec.split(',').map(str::trim).collect() };
    let mut chosen: Vec<u32> = Vec::new();
    let mut ignored: Vec<String> = Vec::new();
    let mut by_index = false;
    for (at, entry) in entries.iter().enumerate() {
        match find(&devices, entry) {
            Ok(index) => {
                by_index |= entry.parse::<u32>().is_ok();
                if !chosen.contains(&index) {
                    chosen.push(index);
                }
            }
            Err(why) => {
                ignored = entries[at..].iter().map(|e| (*e).to_owned()).collect();
                if !entry.starts_with('-') && super::gpu::first_time("visible-entry") {
                    tracing::warn!(
                        entry,
                        reason = why,
                        "CUDA_VISIBLE_DEVICES: this entry names no GPU; CUDA ignores it and \
                         every entry after it, and so does kitt"
                    );
                }
                break;
            }
        }
    }
    if by_index
        && order != Some("PCI_BUS_ID")
        && models_differ(&devices)
        && super::gpu::first_time("visible-order")
    {
        tracing::warn!(
            "CUDA_VISIBLE_DEVICES lists indices and the GPUs differ: kitt reads the indices \
             in PCI bus order (as nvidia-smi numbers them); set CUDA_DEVICE_ORDER=PCI_BUS_ID \
             so CUDA reads them the same way"
        );
    }

    let (visible, hidden): (Vec<Device>, Vec<Device>) =
        devices.into_iter().partition(|device| chosen.contains(&device.index));
    Visibility { visible, hidden: hidden.iter().map(|d| d.index).collect(), ignored }
}

/// The index of the device `entry` names, or why it names none.
fn find(devices: &[Device], entry: &str) -> Result<u32, &'static str> {
    if let Ok(index) = entry.parse::<u32>() {
        return devices
            .iter()
            .find(|device| device.index == index)
            .map(|device| device.index)
            .ok_or("no GPU has this index");
    }
    if entry.starts_with("MIG-") {
        return Err("MIG instances are not placed by kitt");
    }
    if !entry.starts_with("GPU-") {
        return Err("neither an index nor a GPU UUID");
    }
    let entry = entry.to_ascii_lowercase();
    let mut matching = devices.iter().filter(|device| {
        device.uuid.as_ref().is_some_and(|uuid| uuid.to_ascii_lowercase().starts_with(&entry))
    });
    match (matching.next(), matching.next()) {
        (Some(device), None) => Ok(device.index),
        (Some(_), Some(_)) => Err("this UUID prefix names more than one GPU"),
        (None, _) => Err("no GPU has this UUID"),
    }
}

fn models_differ(devices: &[Device]) -> bool {
    devices.windows(2).any(|pair| pair[0].name != pair[1].name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(count: u32) -> Vec<Device> {
        (0..count)
            .map(|index| Device {
                index,
                uuid: Some(format!("GPU-8a3f000{index}-1111-2222-3333-444444444444")),
                name: "Test GPU".into(),
                memory_bytes: Some(1 << 30),
                used_bytes: Some(0),
                utilization_percent: Some(0),
            })
            .collect()
    }

    fn indices(visibility: &Visibility) -> Vec<u32> {
        visibility.visible.iter().map(|device| device.index).collect()
    }

    #[test]
    fn unset_leaves_every_device() {
        let seen = restrict(machine(3), None, None);
        assert_eq!(indices(&seen), [0, 1, 2]);
        assert!(seen.hidden.is_empty() && seen.ignored.is_empty());
    }

    #[test]
    fn indices_restrict_the_devices_and_the_rest_are_hidden() {
        let seen = restrict(machine(4), Some("3, 1"), None);
        assert_eq!(indices(&seen), [1, 3]);
        assert_eq!(seen.hidden, [0, 2]);
    }

    #[test]
    fn uuids_and_unique_uuid_prefixes_name_devices() {
        let seen = restrict(
            machine(3),
            Some("GPU-8a3f0002-1111-2222-3333-444444444444,GPU-8A3F0000"),
            None,
        );
        assert_eq!(indices(&seen), [0, 2]);
    }

    #[test]
    fn empty_or_minus_one_hides_every_gpu() {
        for spec in ["", "-1", " ", "-1,0"] {
            let seen = restrict(machine(2), Some(spec), None);
            assert!(seen.visible.is_empty(), "{spec:?}: {seen:?}");
            assert_eq!(seen.hidden, [0, 1]);
        }
    }

    #[test]
    fn the_first_unknown_entry_ends_the_list_as_in_cuda() {
        let seen = restrict(machine(4), Some("1,7,2"), None);
        assert_eq!(indices(&seen), [1]);
        assert_eq!(seen.ignored, ["7", "2"]);

        let ambiguous = restrict(machine(2), Some("GPU-8a3f,0"), None);
        assert!(ambiguous.visible.is_empty());
        assert_eq!(ambiguous.ignored, ["GPU-8a3f", "0"]);

        let mig = restrict(machine(2), Some("MIG-abc"), None);
        assert!(mig.visible.is_empty());
        assert_eq!(restrict(machine(2), Some("zero"), None).ignored, ["zero"]);
    }

    #[test]
    fn a_device_named_twice_counts_once() {
        let seen = restrict(machine(2), Some("1,GPU-8a3f0001,1"), None);
        assert_eq!(indices(&seen), [1]);
    }
}
