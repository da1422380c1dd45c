//! How kitt reaches the GPUs: NVML, loaded at run time, else `nvidia-smi`.
//! The inventory ([`super::inventory`]), the fingerprint ([`super::detect`])
//! and the memory sampler ([`crate::run::memory`]) all read through here, so
//! one machine is described the same way whichever of them asks.
//!
//! Decisions:
//! - NVML first: `libnvidia-ml.so.1` is opened with `dlopen` when asked for
//!   (the `nvml-wrapper` crate), so kitt builds and runs on machines without
//!   it; a library that is missing or whose `nvmlInit` fails is "no NVML"
//!   and `nvidia-smi` is asked instead. NVML answers in microseconds where
//!   `nvidia-smi` takes a process start, which matters to the sampler.
//! - `KITT_NVML_LIBRARY` names the library to open instead (tests, odd
//!   installs); an empty value means "do not use NVML". `KITT_NVIDIA_SMI`
//!   names the program ([`super::run_nvidia_smi`], guarded by a timeout);
//!   empty means "do not use it".
//! - A device whose memory query answers `NotSupported` shares the system
//!   RAM (unified memory: GB10, Jetson). Any other error on a device skips
//!   that device with a warning; when NVML counts devices but can read none
//!   of them, `nvidia-smi` is asked instead.
//! - The environment is read once into [`Tools`]; everything below takes
//!   it as an argument, so tests describe a machine without touching the
//!   process environment.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;

use super::inventory::Device;

/// Which tool described the GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The NVML library.
    Nvml,
    /// The `nvidia-smi` program.
    NvidiaSmi,
    /// Neither answered: no NVIDIA GPU as far as kitt can tell.
    Neither,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Nvml => "NVML",
            Source::NvidiaSmi => "nvidia-smi",
            Source::Neither => "neither NVML nor nvidia-smi",
        })
    }
}

/// The NVML library to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvmlLibrary {
    /// The driver's `libnvidia-ml.so.1`, found by the dynamic loader.
    Default,
    /// This file.
    Path(OsString),
    /// Do not use NVML.
    Off,
}

/// Whether the warning `what` is given for the first time in this process:
/// the GPUs are asked again for every run's memory readings, and a warning
/// about the environment is news only once (a repeat would also break into
/// a live progress display).
pub(crate) fn first_time(what: &str) -> bool {
    static GIVEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if given.iter().any(|seen| seen == what) {
        return false;
    }
    given.push(what.to_owned());
    true
}

/// How this process reaches the GPUs, read from the environment once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// The NVML library (`KITT_NVML_LIBRARY`).
    pub nvml: NvmlLibrary,
    /// The `nvidia-smi` program (`KITT_NVIDIA_SMI`); `None`: not used.
    pub nvidia_smi: Option<PathBuf>,
    /// The user's `CUDA_VISIBLE_DEVICES`, when set.
    pub visible: Option<String>,
    /// The user's `CUDA_DEVICE_ORDER`, when set.
    pub order: Option<String>,
}

impl Tools {
    /// The tools the environment names (see the module documentation).
    pub fn from_env() -> Tools {
        let text = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        let nvml = match std::env::var_os("KITT_NVML_LIBRARY") {
            None => NvmlLibrary::Default,
            Some(value) if value.is_empty() => NvmlLibrary::Off,
            Some(value) => NvmlLibrary::Path(value),
        };
        let nvidia_smi = match std::env::var_os("KITT_NVIDIA_SMI") {
            None => Some(PathBuf::from("nvidia-smi")),
            Some(value) if value.is_empty() => None,
            Some(value) => Some(PathBuf::from(value)),
        };
        Tools {
            nvml,
            nvidia_smi,
            visible: text("CUDA_VISIBLE_DEVICES"),
            order: text("CUDA_DEVICE_ORDER"),
        }
    }

    /// NVML, initialised; `None` when it is off, missing or will not start.
    pub fn nvml(&self) -> Option<Arc<Nvml>> {
        let started = match &self.nvml {
            NvmlLibrary::Off => return None,
            NvmlLibrary::Default => Nvml::init(),
            NvmlLibrary::Path(path) => Nvml::builder().lib_path(path).init(),
        };
        match started {
            Ok(nvml) => Some(Arc::new(nvml)),
            Err(error) => {
                // The driver's library missing is the ordinary CPU-only case;
                // a library the user named that fails deserves a warning.
                if let NvmlLibrary::Path(path) = &self.nvml {
                    if first_time("nvml-library") {
                        tracing::warn!(library = ?path, %error, "cannot use KITT_NVML_LIBRARY");
                    }
                } else {
                    tracing::debug!(%error, "no NVML: asking nvidia-smi");
                }
                None
            }
        }
    }

    /// Something to read GPU memory through: NVML, else `nvidia-smi`.
    pub fn reader(&self) -> Option<Reader> {
        match self.nvml() {
            Some(nvml) => Some(Reader::Nvml(nvml)),
            None => self.nvidia_smi.clone().map(Reader::NvidiaSmi),
        }
    }
}

/// An open way to the GPUs; cheap to clone into a blocking task.
#[derive(Debug, Clone)]
pub enum Reader {
    /// NVML, initialised (shut down when the last clone is dropped).
    Nvml(Arc<Nvml>),
    /// This `nvidia-smi` program.
    NvidiaSmi(PathBuf),
}

impl Reader {
    /// Which tool this is.
    pub fn source(&self) -> Source {
        match self {
            Reader::Nvml(_) => Source::Nvml,
            Reader::NvidiaSmi(_) => Source::NvidiaSmi,
        }
    }

    /// Memory in use on `devices` (all devices when `None`), summed, in
    /// bytes; `None` when any of them cannot say. Blocks.
    pub fn used_bytes(&self, devices: Option<&[u32]>) -> Option<u64> {
        match self {
            Reader::Nvml(nvml) => nvml_used_bytes(nvml, devices),
            Reader::NvidiaSmi(program) => nvidia_smi_used_bytes(program, devices),
        }
    }
}

/// Every device NVML can read, in its index order; `None` when NVML cannot
/// count them or reads none of those it counts.
pub fn nvml_devices(nvml: &Nvml) -> Option<Vec<Device>> {
    let count = match nvml.device_count() {
        Ok(count) => count,
        Err(error) => {
            tracing::warn!(%error, "NVML cannot count the GPUs; asking nvidia-smi");
            return None;
        }
    };
    let devices: Vec<Device> = (0..count)
        .filter_map(|position| match nvml_device(nvml, position) {
            Ok(device) => Some(device),
            Err(error) => {
                tracing::warn!(position, %error, "skipping a GPU NVML cannot read");
                None
            }
        })
        .collect();
    if count > 0 && devices.is_empty() {
        tracing::warn!(count, "NVML reads none of its GPUs; asking nvidia-smi");
        return None;
    }
    Some(devices)
}

fn nvml_device(nvml: &Nvml, position: u32) -> Result<Device, NvmlError> {
    let device = nvml.device_by_index(position)?;
    let (memory_bytes, used_bytes) = match device.memory_info() {
        Ok(memory) => (Some(memory.total), Some(memory.used)),
        Err(NvmlError::NotSupported) => (None, None),
        Err(error) => return Err(error),
    };
    Ok(Device {
        index: device.index()?,
        uuid: device.uuid().ok(),
        name: device.name()?,
        memory_bytes,
        used_bytes,
        utilization_percent: device.utilization_rates().ok().map(|rates| rates.gpu),
    })
}

fn nvml_used_bytes(nvml: &Nvml, devices: Option<&[u32]>) -> Option<u64> {
    let all: Vec<u32>;
    let wanted = match devices {
        Some(devices) => devices,
        None => {
            all = (0..nvml.device_count().ok()?).collect();
            &all
        }
    };
    wanted.iter().try_fold(0u64, |sum, index| {
        let used = nvml.device_by_index(*index).and_then(|device| device.memory_info());
        Some(sum.saturating_add(used.ok()?.used))
    })
}

/// The `nvidia-smi` query for memory in use per device.
const USED_QUERY: &str = "--query-gpu=index,memory.used";

fn nvidia_smi_used_bytes(program: &Path, devices: Option<&[u32]>) -> Option<u64> {
    let text = super::run_nvidia_smi(program, &[USED_QUERY, "--format=csv,noheader,nounits"])?;
    parse_used(&text, devices)
}

/// Sums the answer to [`USED_QUERY`] (`index, MiB` lines) over `devices`
/// (all when `None`); `None` when one of them is missing or unreadable.
fn parse_used(text: &str, devices: Option<&[u32]>) -> Option<u64> {
    let mut used = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let (index, mib) = line.split_once(',')?;
        let index: u32 = index.trim().parse().ok()?;
        used.push((index, mib.trim().parse::<u64>().ok().and_then(|m| m.checked_mul(1 << 20))));
    }
    let mut sum = 0u64;
    let mut counted = 0;
    for (index, bytes) in &used {
        if devices.is_none_or(|wanted| wanted.contains(index)) {
            sum = sum.saturating_add((*bytes)?);
            counted += 1;
        }
    }
    let expected = devices.map_or(used.len(), <[u32]>::len);
    (counted == expected && counted > 0).then_some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn nvidia_smi_memory_in_use_is_summed_over_the_wanted_devices_only() {
        let text = "0, 100\n1, 200\n2, 400\n";
        assert_eq!(parse_used(text, None), Some(700 * MIB));
        assert_eq!(parse_used(text, Some(&[0, 2])), Some(500 * MIB));
        assert_eq!(parse_used(text, Some(&[1])), Some(200 * MIB));
    }

    #[test]
    fn a_wanted_device_missing_or_unreadable_is_no_reading() {
        assert_eq!(parse_used("0, 100\n", Some(&[0, 1])), None);
        assert_eq!(parse_used("0, [N/A]\n1, 5\n", Some(&[0])), None);
        assert_eq!(parse_used("0, [N/A]\n1, 5\n", Some(&[1])), Some(5 * MIB));
        assert_eq!(parse_used("No devices were found\n", None), None);
        assert_eq!(parse_used("", None), None);
    }

    #[test]
    fn an_empty_library_setting_switches_nvml_off() {
        let tools = Tools { nvml: NvmlLibrary::Off, nvidia_smi: None, visible: None, order: None };
        assert!(tools.nvml().is_none());
        assert!(tools.reader().is_none());
    }

    #[test]
    fn a_missing_library_is_no_nvml_and_nvidia_smi_is_asked_instead() {
        let tools = Tools {
            nvml: NvmlLibrary::Path("/nonexistent/kitt-test/libnvidia-ml.so.1".into()),
            nvidia_smi: Some(PathBuf::from("/nonexistent/kitt-test/nvidia-smi")),
            visible: None,
            order: None,
        };
        assert!(tools.nvml().is_none());
        let reader = tools.reader().expect("nvidia-smi is the fallback");
        assert_eq!(reader.source(), Source::NvidiaSmi);
        assert_eq!(reader.used_bytes(None), None, "the program does not exist");
    }
}
