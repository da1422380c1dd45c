//! Where the runs of a parallel campaign go: which devices a model needs,
//! and whether they are free now. Pure bookkeeping over the inventory read
//! at the campaign's start ([`crate::hardware::inventory`]); it starts
//! nothing and waits for nothing ([`super::parallel`] does).
//!
//! Decisions:
//! - A run needs its model's size plus [`HEADROOM_PERCENT`] (KV cache,
//!   activations, the engine's own buffers) of device memory. A model of
//!   unknown size needs one device, of any kind.
//! - Memory other processes use when the campaign starts is taken from its
//!   device for the whole campaign: a device's capacity is its total less
//!   what was in use then. The inventory is read once, so memory freed or
//!   taken later is not seen; a run that can never fit is skipped with a
//!   reason naming each device's total and the memory in use.
//! - Devices with memory of their own: the run gets the fewest devices that
//!   hold it split evenly (tensor-parallel engines split evenly, so each of
//!   `k` devices must hold 1/k of it), and waits until that many devices
//!   that each hold their share are free. It never takes more devices
//!   because more are free now: the count a model needs is fixed.
//! - Unified-memory devices (memory not reported, such as GB10 or Jetson)
//!   and the CPU of a machine without GPUs all draw on one budget, the
//!   system RAM: a run takes one such device (more add no memory) and its
//!   memory from the budget until it ends, so two runs on two unified
//!   devices are never each credited all the RAM. A run waits when the
//!   device or the budget is short. With the RAM unknown the budget holds
//!   anything.
//! - On a machine with both kinds, a run goes to devices with memory of
//!   their own when some number of them can ever hold it, else to a
//!   unified one.
//! - Runs are placed in plan order on the lowest free indices that fit; a
//!   run that must wait holds up the runs after it ([`super::parallel`]).
//! - When nothing is placed every run that is not too big fits, so a
//!   waiting run always starts once the runs before it end.

use crate::hardware::inventory::Inventory;
use crate::plan::matrix::human_bytes;

/// Device memory a run needs beyond its model's size, in percent.
pub const HEADROOM_PERCENT: u64 = 20;

/// The devices of the machine and which of them runs hold now.
#[derive(Debug, Clone)]
pub struct Placer {
    slots: Vec<Slot>,
    /// The RAM unified-memory devices share: total and left (`None`: unknown).
    shared: Option<(u64, u64)>,
    /// GPUs reported (else the one slot is the CPU).
    has_gpus: bool,
}

#[derive(Debug, Clone)]
struct Slot {
    /// The GPU index (`None`: the CPU).
    gpu: Option<u32>,
    memory: Memory,
    free: bool,
}

#[derive(Debug, Clone, Copy)]
enum Memory {
    /// Its own memory: total and what other processes used at the start.
    Own { total: u64, used: u64 },
    /// The system RAM, shared with every other such device.
    Shared,
}

impl Memory {
    /// What runs may use of it (`None`: the shared RAM).
    fn capacity(self) -> Option<u64> {
        match self {
            Memory::Own { total, used } => Some(total.saturating_sub(used)),
            Memory::Shared => None,
        }
    }
}

/// What a model needs, whatever is free now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Its size is unknown: one device of any kind.
    AnyOne,
    /// `count` devices with memory of their own, each holding `each` bytes.
    Own { count: usize, each: u64 },
    /// One unified-memory device (or the CPU) and `bytes` of the shared RAM.
    Shared { bytes: u64 },
}

impl Need {
    /// How many devices it takes.
    pub fn devices(self) -> usize {
        match self {
            Need::Own { count, .. } => count,
            Need::AnyOne | Need::Shared { .. } => 1,
        }
    }
}

/// A parallel campaign's placement as the dry run shows it: the machine
/// and what each run needs, nothing placed.
#[derive(Debug, Clone)]
pub struct Preview {
    /// The machine's devices ([`Inventory::describe`]).
    pub machine: String,
    /// `max_parallel`.
    pub max_parallel: Option<u32>,
    placer: Placer,
}

impl Preview {
    /// The preview for `inventory`.
    pub fn new(inventory: &Inventory, max_parallel: Option<u32>) -> Preview {
        Preview { machine: inventory.describe(), max_parallel, placer: Placer::new(inventory) }
    }

    /// What a run of a model of `model_bytes` gets: how many devices and
    /// which it may get (`2 of GPU 0,1,2,3`), or why it is skipped.
    pub fn run(&self, model_bytes: Option<u64>) -> Result<(usize, String), String> {
        let need = self.placer.need(model_bytes)?;
        Ok((need.devices(), self.placer.describe_need(need)))
    }
}

/// The devices a run holds until [`Placer::release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    /// Device slots.
    pub slots: Vec<usize>,
    /// Their GPU indices (empty on the CPU).
    pub devices: Vec<u32>,
    /// Bytes taken from the shared RAM.
    shared_bytes: u64,
}

/// What [`Placer::place`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// The run holds these devices now.
    Seat(Seat),
    /// It fits once runs in flight end.
    Wait,
    /// The machine can never hold it, for this reason.
    TooBig(String),
}

impl Placer {
    /// Every device of `inventory` free.
    pub fn new(inventory: &Inventory) -> Placer {
        let slots = if inventory.has_gpus() {
            inventory
                .gpus
                .iter()
                .map(|device| Slot {
                    gpu: Some(device.index),
                    memory: match device.memory_bytes {
                        Some(total) => Memory::Own { total, used: device.used_bytes.unwrap_or(0) },
                        None => Memory::Shared,
                    },
                    free: true,
                })
                .collect()
        } else {
            vec![Slot { gpu: None, memory: Memory::Shared, free: true }]
        };
        let ram = inventory.ram_bytes;
        Placer { slots, shared: (ram > 0).then_some((ram, ram)), has_gpus: inventory.has_gpus() }
    }

    /// How many devices runs are placed on.
    pub fn device_count(&self) -> usize {
        self.slots.len()
    }

    /// What a model of `model_bytes` needs, or why the machine can never
    /// hold it.
    pub fn need(&self, model_bytes: Option<u64>) -> Result<Need, String> {
        let Some(model) = model_bytes.filter(|bytes| *bytes > 0) else { return Ok(Need::AnyOne) };
        let needed = with_headroom(model);
        let mut own: Vec<u64> = self.slots.iter().filter_map(|s| s.memory.capacity()).collect();
        own.sort_unstable_by(|a, b| b.cmp(a));
        // The k-th largest device bounds what k devices hold split evenly.
        let fits = (1..=own.len()).find(|&k| own[k - 1] >= needed.div_ceil(k as u64));
        if let Some(count) = fits {
            return Ok(Need::Own { count, each: needed.div_ceil(count as u64) });
        }
        let unified = self.slots.iter().any(|slot| matches!(slot.memory, Memory::Shared));
        if unified && self.shared.is_none_or(|(total, _)| needed <= total) {
            return Ok(Need::Shared { bytes: needed });
        }
        Err(format!(
            "the model needs {} of device memory ({} plus {HEADROOM_PERCENT}% headroom) and \
             this machine has {}",
            human_bytes(needed),
            human_bytes(model),
            self.machine_text()
        ))
    }

    /// Places a model of `model_bytes` on the lowest free devices that hold
    /// it, or says why not now.
    pub fn place(&mut self, model_bytes: Option<u64>) -> Placed {
        let need = match self.need(model_bytes) {
            Ok(need) => need,
            Err(reason) => return Placed::TooBig(reason),
        };
        let free = (0..self.slots.len()).filter(|&slot| self.slots[slot].free);
        let (slots, shared_bytes): (Vec<usize>, u64) = match need {
            Need::AnyOne => (free.take(1).collect(), 0),
            Need::Own { count, each } => {
                let holding = |slot: &usize| self.slots[*slot].memory.capacity() >= Some(each);
                let slots: Vec<usize> = free.filter(holding).take(count).collect();
                if slots.len() < count {
                    return Placed::Wait;
                }
                (slots, 0)
            }
            Need::Shared { bytes } => {
                let unified = |slot: &usize| matches!(self.slots[*slot].memory, Memory::Shared);
                let room = self.shared.is_none_or(|(_, left)| left >= bytes);
                if !room {
                    return Placed::Wait;
                }
                (free.filter(unified).take(1).collect(), bytes)
            }
        };
        if slots.is_empty() {
            return Placed::Wait;
        }
        for &slot in &slots {
            self.slots[slot].free = false;
        }
        if let Some((_, left)) = &mut self.shared {
            *left -= shared_bytes.min(*left);
        }
        let devices = slots.iter().filter_map(|&slot| self.slots[slot].gpu).collect();
        Placed::Seat(Seat { slots, devices, shared_bytes })
    }

    /// The most of these models that can be in flight at once on the free
    /// devices: the smallest are placed first, until one must wait (models
    /// too big for the machine never run). It bounds how many engines share
    /// the CPU.
    pub fn most_at_once(&self, models: impl IntoIterator<Item = Option<u64>>) -> usize {
        let mut sizes: Vec<Option<u64>> = models.into_iter().collect();
        sizes.sort();
        let mut trial = self.clone();
        let mut placed = 0;
        for size in sizes {
            match trial.place(size) {
                Placed::Seat(_) => placed += 1,
                Placed::TooBig(_) => {}
                Placed::Wait => break,
            }
        }
        placed
    }

    /// Frees what `seat` held.
    pub fn release(&mut self, seat: &Seat) {
        for &slot in &seat.slots {
            self.slots[slot].free = true;
        }
        if let Some((total, left)) = &mut self.shared {
            *left = left.saturating_add(seat.shared_bytes).min(*total);
        }
    }

    /// What a model needs, as the dry run shows it: `2 of GPU 0,1,2,3`,
    /// `1 unified-memory GPU of 0`, `the CPU`.
    pub fn describe_need(&self, need: Need) -> String {
        let list = |fits: &dyn Fn(&Slot) -> bool| -> String {
            let gpus: Vec<String> = self
                .slots
                .iter()
                .filter(|slot| fits(slot))
                .filter_map(|slot| slot.gpu.map(|gpu| gpu.to_string()))
                .collect();
            gpus.join(",")
        };
        if !self.has_gpus {
            return "the CPU".to_owned();
        }
        match need {
            Need::AnyOne => format!("1 of GPU {} (size unknown)", list(&|_| true)),
            Need::Own { count, each } => {
                format!("{count} of GPU {}", list(&|slot| slot.memory.capacity() >= Some(each)))
            }
            Need::Shared { bytes } => format!(
                "1 of GPU {} ({} of the shared RAM)",
                list(&|slot| matches!(slot.memory, Memory::Shared)),
                human_bytes(bytes)
            ),
        }
    }

    /// The memory of the machine, for a too-big reason.
    fn machine_text(&self) -> String {
        if !self.has_gpus {
            let ram = self.shared.map_or(0, |(total, _)| total);
            return format!("no GPU and {} of RAM", human_bytes(ram));
        }
        let own: Vec<(u32, u64, u64)> = self
            .slots
            .iter()
            .filter_map(|slot| match (slot.gpu, slot.memory) {
                (Some(gpu), Memory::Own { total, used }) => Some((gpu, total, used)),
                _ => None,
            })
            .collect();
        let mut parts = Vec::new();
        let uniform = own.iter().all(|&(_, total, used)| used == 0 && total == own[0].1);
        if !own.is_empty() && uniform {
            parts.push(format!("{} device(s) of {} each", own.len(), human_bytes(own[0].1)));
        } else if !own.is_empty() {
            let each: Vec<String> = own
                .iter()
                .map(|&(gpu, total, used)| match used {
                    0 => format!("GPU {gpu} of {}", human_bytes(total)),
                    used => format!(
                        "GPU {gpu} of {} with {} in use by other processes at the start",
                        human_bytes(total),
                        human_bytes(used)
                    ),
                })
                .collect();
            parts.push(format!("{} device(s): {}", own.len(), each.join(", ")));
        }
        let unified = self.slots.iter().filter(|s| matches!(s.memory, Memory::Shared)).count();
        if unified > 0 {
            let ram = self.shared.map_or(0, |(total, _)| total);
            parts.push(format!(
                "{unified} unified-memory device(s) sharing {} of RAM",
                human_bytes(ram)
            ));
        }
        parts.join(" and ")
    }
}

/// `model` plus [`HEADROOM_PERCENT`].
fn with_headroom(model: u64) -> u64 {
    let headroom = u128::from(model) * u128::from(HEADROOM_PERCENT) / 100;
    model.saturating_add(u64::try_from(headroom).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::inventory::Device;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn device(index: u32, memory: Option<u64>, used: Option<u64>) -> Device {
        Device {
            index,
            uuid: None,
            name: "Test GPU".into(),
            memory_bytes: memory,
            used_bytes: used,
            utilization_percent: None,
        }
    }

    fn gpus(count: u32, memory: Option<u64>) -> Placer {
        let devices = (0..count).map(|index| device(index, memory, None)).collect();
        Placer::new(&Inventory::new(devices, 64 * GIB))
    }

    #[test]
    fn at_most_as_many_runs_at_once_as_the_smallest_fit() {
        let two = gpus(2, Some(24 * GIB));
        // Two models of 10 GiB: one per device, both at once.
        assert_eq!(two.most_at_once([Some(10 * GIB), Some(10 * GIB)]), 2);
        // Models that each need both devices never overlap.
        assert_eq!(two.most_at_once([Some(30 * GIB), Some(30 * GIB)]), 1);
        // One small and one big: the small one first, then the big one waits.
        assert_eq!(two.most_at_once([Some(30 * GIB), Some(GIB)]), 1);
        // Too big for the machine: never in flight.
        assert_eq!(two.most_at_once([Some(100 * GIB), Some(GIB)]), 1);
        assert_eq!(two.most_at_once([None, None, None]), 2);
    }

    fn seat(placed: Placed) -> Seat {
        match placed {
            Placed::Seat(seat) => seat,
            other => panic!("not placed: {other:?}"),
        }
    }

    fn reason(placed: Placed) -> String {
        match placed {
            Placed::TooBig(reason) => reason,
            other => panic!("not too big: {other:?}"),
        }
    }

    #[test]
    fn a_model_that_fits_one_device_needs_one_and_unknown_sizes_need_one() {
        let placer = gpus(2, Some(24 * GIB));
        assert_eq!(placer.need(Some(10 * GIB)), Ok(Need::Own { count: 1, each: 12 * GIB }));
        assert_eq!(placer.need(None), Ok(Need::AnyOne));
        assert_eq!(placer.need(Some(0)), Ok(Need::AnyOne));
    }

    #[test]
    fn headroom_counts_and_a_bigger_model_gets_more_devices() {
        let count = |placer: &Placer, bytes| match placer.need(Some(bytes)) {
            Ok(Need::Own { count, .. }) => count,
            other => panic!("{other:?}"),
        };
        // 20 GiB + 20% = 24 GiB: one 24 GiB device holds it exactly.
        assert_eq!(count(&gpus(2, Some(24 * GIB)), 20 * GIB), 1);
        assert_eq!(count(&gpus(2, Some(24 * GIB)), 21 * GIB), 2);
        assert_eq!(count(&gpus(4, Some(24 * GIB)), 50 * GIB), 3);
    }

    #[test]
    fn a_model_bigger_than_the_machine_says_why_in_readable_units() {
        let big = reason(gpus(2, Some(24 * GIB)).place(Some(100 * GIB)));
        assert!(big.contains("needs 120.0 GiB"), "{big}");
        assert!(big.contains("2 device(s) of 24.0 GiB each"), "{big}");
        let tiny = reason(gpus(1, Some(2 * MIB)).place(Some(3 * MIB)));
        assert!(tiny.contains("(3.0 MiB plus 20% headroom)"), "{tiny}");
        assert!(tiny.contains("1 device(s) of 2.0 MiB each"), "{tiny}");
        let mut cpu = Placer::new(&Inventory::new(Vec::new(), 8 * GIB));
        let on_cpu = reason(cpu.place(Some(10 * GIB)));
        assert!(on_cpu.contains("no GPU and 8.0 GiB of RAM"), "{on_cpu}");
    }

    #[test]
    fn memory_in_use_at_the_start_is_taken_from_its_device_for_the_campaign() {
        let devices =
            vec![device(0, Some(24 * GIB), Some(20 * GIB)), device(1, Some(24 * GIB), Some(0))];
        let mut placer = Placer::new(&Inventory::new(devices, 64 * GIB));
        // 10 GiB (+20%) fits only GPU 1, though GPU 0 is the lowest index.
        let first = seat(placer.place(Some(10 * GIB)));
        assert_eq!(first.devices, vec![1]);
        // A second one waits for GPU 1 rather than taking GPU 0.
        assert_eq!(placer.place(Some(10 * GIB)), Placed::Wait);
        // A small one goes to GPU 0 meanwhile.
        assert_eq!(seat(placer.place(Some(GIB))).devices, vec![0]);
        // 30 GiB (36 with headroom) would fit two empty devices, not these.
        let reason = reason(placer.place(Some(30 * GIB)));
        assert!(
            reason.contains(
                "2 device(s): GPU 0 of 24.0 GiB with 20.0 GiB in use by other processes at the \
                 start, GPU 1 of 24.0 GiB"
            ),
            "{reason}"
        );
    }

    #[test]
    fn unified_memory_devices_share_one_ram_budget() {
        let mut placer = gpus(2, None);
        assert_eq!(placer.need(Some(40 * GIB)), Ok(Need::Shared { bytes: 48 * GIB }));
        assert!(matches!(placer.place(Some(60 * GIB)), Placed::TooBig(_)));
        let first = seat(placer.place(Some(40 * GIB)));
        assert_eq!(first.devices, vec![0]);
        // GPU 1 is free but the RAM is not: the second run waits.
        assert_eq!(placer.place(Some(40 * GIB)), Placed::Wait);
        // A small model fits beside it in what is left (64 - 48 GiB).
        let small = seat(placer.place(Some(10 * GIB)));
        assert_eq!(small.devices, vec![1]);
        placer.release(&first);
        placer.release(&small);
        assert_eq!(seat(placer.place(Some(40 * GIB))).devices, vec![0]);
    }

    #[test]
    fn runs_take_the_lowest_free_indices_and_free_them_when_released() {
        let mut placer = gpus(4, Some(24 * GIB));
        let a = seat(placer.place(Some(GIB)));
        let b = seat(placer.place(Some(30 * GIB)));
        assert_eq!((a.devices.clone(), b.devices.clone()), (vec![0], vec![1, 2]));
        assert_eq!(placer.place(Some(30 * GIB)), Placed::Wait);
        placer.release(&a);
        assert_eq!(seat(placer.place(Some(30 * GIB))).devices, vec![0, 3]);
        assert_eq!(placer.place(None), Placed::Wait);
    }

    #[test]
    fn with_everything_free_any_model_that_is_not_too_big_is_placed() {
        let mixed = Inventory::new(
            vec![
                device(0, Some(8 * GIB), Some(6 * GIB)),
                device(1, None, None),
                device(2, Some(16 * GIB), None),
            ],
            32 * GIB,
        );
        for gib in [0, 1, 5, 13, 20, 26, 40] {
            let mut placer = Placer::new(&mixed);
            match placer.place(Some(gib * GIB)) {
                Placed::Seat(_) | Placed::TooBig(_) => {}
                Placed::Wait => panic!("{gib} GiB waits on an empty machine"),
            }
        }
        // 20 GiB (24 with headroom): GPU 0 and 2 cannot hold it evenly, the
        // unified GPU 1 can.
        let mut placer = Placer::new(&mixed);
        assert_eq!(seat(placer.place(Some(20 * GIB))).devices, vec![1]);
    }

    #[test]
    fn the_dry_run_names_the_devices_a_run_may_get() {
        let placer = gpus(4, Some(24 * GIB));
        let need = placer.need(Some(30 * GIB)).unwrap();
        assert_eq!(placer.describe_need(need), "2 of GPU 0,1,2,3");
        let cpu = Placer::new(&Inventory::new(Vec::new(), 8 * GIB));
        assert_eq!(cpu.describe_need(cpu.need(Some(GIB)).unwrap()), "the CPU");
        let unified = gpus(1, None);
        let need = unified.need(Some(GIB)).unwrap();
        assert_eq!(unified.describe_need(need), "1 of GPU 0 (1.2 GiB of the shared RAM)");
    }
}
