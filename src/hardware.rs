//! Describes the machine a run measures, and the fingerprint that identifies it.
//!
//! [`detect`] reads Linux's own descriptions (`/proc/cpuinfo`, `/proc/meminfo`,
//! `/etc/os-release`, `/proc/sys/kernel/osrelease`) and asks NVML, else
//! `nvidia-smi`, for the GPUs, through the same [`gpu::Tools`] as the
//! inventory, so a machine fingerprints the same way whichever answers. Every
//! GPU counts, also those `CUDA_VISIBLE_DEVICES` hides: the fingerprint names
//! the machine. It never fails: whatever cannot be read
//! becomes `unknown` (or is left out, for optional fields). It does not probe
//! storage, RAM type or container environments, which vary between boots
//! without changing what a benchmark measures.
//!
//! # Fingerprint
//!
//! [`fingerprint`] is a stable one-line identity, parts joined by `_`:
//!
//! ```text
//! [<gpu>[-<mem>GB][-<n>x]_]<cpu>-<cores>c_<ram>GB_<os>-<kernel>
//! ```
//!
//! - GPUs: consecutive identical devices form one group with a count suffix
//!   (`-2x`) when there are several; different groups are joined by `+`. The
//!   memory part is left out for devices that do not report their own memory
//!   (unified-memory systems answer `[N/A]`). No GPU, no part.
//! - CPU: the model name without `(R)`/`(TM)` marks, then physical cores (the
//!   logical CPU count when cores are unknown).
//! - Memory sizes are GiB, rounded to the nearest whole number.
//! - Every part keeps letters, digits, `.` and `+`; any other run of
//!   characters becomes a single `-`, so `_` only ever separates parts.
//!
//! Example: `NVIDIA-H100-80GB-HBM3-80GB-2x_AMD-EPYC-7B13-64-Core-Processor-64c_
//! 504GB_Ubuntu-22.04.4-LTS-5.15.0-105-generic` (one line).

pub mod gpu;
pub mod inventory;
pub mod visible;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::results::model::{Gpu, Hardware};

/// The text used for anything that could not be determined.
pub const UNKNOWN: &str = "unknown";

/// How long `nvidia-smi` may take before kitt gives up on it.
const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(10);

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Detects this machine's hardware and computes its fingerprint; never fails.
///
/// This reads files and may load NVML or run `nvidia-smi`, so it blocks for a
/// moment.
///
/// The machine is described once per process: every run of a campaign
/// records the same hardware and fingerprint, and a GPU tool that hangs
/// costs its timeout once rather than inside every run's time.
pub fn detect() -> Hardware {
    static DETECTED: std::sync::OnceLock<Hardware> = std::sync::OnceLock::new();
    DETECTED.get_or_init(|| detect_with(&gpu::Tools::from_env())).clone()
}

/// [`detect`] with the GPUs `tools` describe.
pub fn detect_with(tools: &gpu::Tools) -> Hardware {
    let cpu = parse_cpuinfo(&read_or_empty("/proc/cpuinfo"));
    let ram_bytes = parse_meminfo(&read_or_empty("/proc/meminfo")).unwrap_or(0);
    let os = parse_os_release(&read_or_empty("/etc/os-release"));
    let kernel = read_or_empty("/proc/sys/kernel/osrelease").trim().to_owned();
    let gpus = gpu_report(tools);

    let threads = match cpu.threads {
        0 => std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
        n => n,
    };
    let mut hardware = Hardware {
        cpu_model: cpu.model.unwrap_or_else(|| UNKNOWN.to_owned()),
        cpu_threads: threads,
        cpu_cores: cpu.cores,
        ram_bytes,
        gpus: gpus.gpus,
        driver_version: gpus.driver_version,
        os: os.unwrap_or_else(|| UNKNOWN.to_owned()),
        kernel: if kernel.is_empty() { UNKNOWN.to_owned() } else { kernel },
        fingerprint: String::new(),
    };
    hardware.fingerprint = fingerprint(&hardware);
    hardware
}

/// The system RAM in bytes (0 when unknown).
pub fn detect_ram_bytes() -> u64 {
    parse_meminfo(&read_or_empty("/proc/meminfo")).unwrap_or(0)
}

/// Computes the fingerprint (see the module documentation) from the other fields.
pub fn fingerprint(hardware: &Hardware) -> String {
    let mut parts = Vec::with_capacity(4);

    if !hardware.gpus.is_empty() {
        parts.push(gpu_part(&hardware.gpus));
    }

    let cores = hardware.cpu_cores.unwrap_or(hardware.cpu_threads);
    parts.push(format!("{}-{cores}c", slug(&strip_trademarks(&hardware.cpu_model))));

    parts.push(match hardware.ram_bytes {
        0 => format!("{UNKNOWN}GB"),
        bytes => format!("{}GB", whole_gib(bytes)),
    });

    parts.push(format!("{}-{}", slug(&hardware.os), slug(&hardware.kernel)));
    parts.join("_")
}

/// Renders GPU groups: `<name>[-<mem>GB][-<n>x]`, groups joined by `+`.
fn gpu_part(gpus: &[Gpu]) -> String {
    let mut groups: Vec<(&Gpu, usize)> = Vec::new();
    for gpu in gpus {
        match groups.last_mut() {
            Some((first, count))
                if first.name == gpu.name && first.memory_bytes == gpu.memory_bytes =>
            {
                *count += 1
            }
            _ => groups.push((gpu, 1)),
        }
    }

    let rendered: Vec<String> = groups
        .into_iter()
        .map(|(gpu, count)| {
            let mut text = slug(&strip_trademarks(&gpu.name));
            if let Some(bytes) = gpu.memory_bytes {
                text.push_str(&format!("-{}GB", whole_gib(bytes)));
            }
            if count > 1 {
                text.push_str(&format!("-{count}x"));
            }
            text
        })
        .collect();
    rendered.join("+")
}

/// Bytes as whole GiB, rounded to nearest.
fn whole_gib(bytes: u64) -> u64 {
    (bytes as f64 / GIB).round() as u64
}

/// Removes registered/trademark marks that vendors sprinkle over model names.
fn strip_trademarks(name: &str) -> String {
    ["(R)", "(r)", "(TM)", "(tm)", "(C)"]
        .iter()
        .fold(name.to_owned(), |text, mark| text.replace(mark, " "))
}

/// Keeps letters, digits, `.` and `+`; every other run of characters becomes one `-`.
fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_alphanumeric() || c == '.' || c == '+' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() { UNKNOWN.to_owned() } else { trimmed.to_owned() }
}

fn read_or_empty(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| {
        tracing::debug!(path, %error, "cannot read hardware description");
        String::new()
    })
}

/// What `/proc/cpuinfo` says.
#[derive(Debug, Default, PartialEq, Eq)]
struct CpuInfo {
    model: Option<String>,
    threads: u32,
    cores: Option<u32>,
}

/// Parses `/proc/cpuinfo`: the model name, logical CPUs (`processor` entries) and
/// physical cores (distinct `physical id`/`core id` pairs, when the kernel lists them).
fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut model = None;
    // ARM kernels have no `model name`; `Model` or `Hardware` are the best they offer.
    let mut fallback_model = None;
    let mut threads = 0u32;
    let mut cores = std::collections::BTreeSet::new();
    let mut physical_id = "";

    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "processor" => {
                threads += 1;
                physical_id = "";
            }
            "model name" if model.is_none() && !value.is_empty() => {
                model = Some(collapse_spaces(value))
            }
            "Model" | "Hardware" if fallback_model.is_none() && !value.is_empty() => {
                fallback_model = Some(collapse_spaces(value))
            }
            "physical id" => physical_id = value,
            "core id" => {
                cores.insert((physical_id, value));
            }
            _ => {}
        }
    }

    let cores = (!cores.is_empty()).then_some(cores.len() as u32);
    CpuInfo { model: model.or(fallback_model), threads, cores }
}

fn collapse_spaces(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses `MemTotal` from `/proc/meminfo` into bytes.
fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let amount: u64 = words.next()?.parse().ok()?;
    let factor = match words.next() {
        Some("kB") | Some("KB") | Some("kiB") => 1024,
        Some("MB") => 1024 * 1024,
        None | Some("B") => 1,
        Some(_) => return None,
    };
    amount.checked_mul(factor)
}

/// Parses `/etc/os-release`: `PRETTY_NAME`, else `NAME` and `VERSION_ID`.
fn parse_os_release(text: &str) -> Option<String> {
    let value = |wanted: &str| {
        text.lines().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'').trim();
            (key.trim() == wanted && !value.is_empty()).then(|| value.to_owned())
        })
    };

    value("PRETTY_NAME").or_else(|| {
        let name = value("NAME")?;
        Some(match value("VERSION_ID") {
            Some(version) => format!("{name} {version}"),
            None => name,
        })
    })
}

/// GPUs and the driver, as `nvidia-smi` reports them.
#[derive(Debug, Default)]
struct GpuReport {
    gpus: Vec<Gpu>,
    driver_version: Option<String>,
}

/// The GPUs and driver from NVML when it answers, else from `nvidia-smi`.
fn gpu_report(tools: &gpu::Tools) -> GpuReport {
    if let Some(nvml) = tools.nvml()
        && let Some(devices) = gpu::nvml_devices(&nvml)
    {
        let gpus = devices
            .into_iter()
            .map(|device| Gpu { name: device.name, memory_bytes: device.memory_bytes })
            .collect();
        return GpuReport { gpus, driver_version: nvml.sys_driver_version().ok() };
    }
    tools
        .nvidia_smi
        .as_deref()
        .and_then(query_nvidia_smi)
        .map(|text| parse_nvidia_smi(&text))
        .unwrap_or_default()
}

/// Parses `nvidia-smi --query-gpu=name,memory.total,driver_version
/// --format=csv,noheader,nounits`: one line per GPU, memory in MiB.
fn parse_nvidia_smi(text: &str) -> GpuReport {
    let mut report = GpuReport::default();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        // A name could contain a comma; the two numeric fields at the end cannot.
        let mut fields = line.rsplitn(3, ',').map(str::trim);
        let (Some(driver), Some(memory), Some(name)) =
            (fields.next(), fields.next(), fields.next())
        else {
            tracing::warn!(line, "ignoring an nvidia-smi line that is not name, memory, driver");
            continue;
        };

        // Unified-memory devices answer `[N/A]` or `[Not Supported]`: unknown, not zero.
        let memory_bytes = memory.parse::<u64>().ok().and_then(|mib| mib.checked_mul(1024 * 1024));
        report.gpus.push(Gpu { name: name.to_owned(), memory_bytes });
        if report.driver_version.is_none() && !driver.is_empty() && !driver.starts_with('[') {
            report.driver_version = Some(driver.to_owned());
        }
    }
    report
}

/// Runs `nvidia-smi`'s GPU query; `None` when the command is missing, fails or hangs.
fn query_nvidia_smi(program: impl AsRef<Path>) -> Option<String> {
    run_nvidia_smi(
        program.as_ref(),
        &["--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"],
    )
}

/// Runs `nvidia-smi` with `args` and returns its output; `None` when the
/// command is missing, fails or hangs.
pub(crate) fn run_nvidia_smi(program: &Path, args: &[&str]) -> Option<String> {
    // A group of its own, so a wrapper script that hangs is stopped with
    // whatever it started.
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if program != Path::new("nvidia-smi") && gpu::first_time("nvidia-smi-missing") {
                tracing::warn!(
                    program = %program.display(),
                    "KITT_NVIDIA_SMI names no program; assuming no NVIDIA GPU"
                );
            } else {
                tracing::debug!(program = %program.display(), "no nvidia-smi: assuming no GPU");
            }
            return None;
        }
        Err(error) => {
            tracing::warn!(program = %program.display(), %error, "cannot run nvidia-smi");
            return None;
        }
    };

    // The answer is a few lines, far below a pipe's buffer, so waiting before
    // reading cannot deadlock; the deadline guards against a wedged driver.
    let deadline = Instant::now() + NVIDIA_SMI_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => {
                // Best effort: the child is abandoned either way.
                if let Ok(pid) = i32::try_from(child.id()) {
                    let group = nix::unistd::Pid::from_raw(pid);
                    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!("nvidia-smi did not answer in time; recording no GPU");
                return None;
            }
        }
    };
    if !status.success() {
        tracing::warn!(%status, "nvidia-smi failed; recording no GPU");
        return None;
    }

    let mut text = String::new();
    child.stdout.take()?.read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-vCPU cloud VM: one core with two hyper-threads.
    const XEON_CPUINFO: &str = "\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 79
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
stepping\t: 0
microcode\t: 0xffffffff
cpu MHz\t\t: 2200.196
cache size\t: 56320 KB
physical id\t: 0
siblings\t: 2
core id\t\t: 0
cpu cores\t: 1
apicid\t\t: 0
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov ht syscall

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 79
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
stepping\t: 0
microcode\t: 0xffffffff
cpu MHz\t\t: 2200.196
cache size\t: 56320 KB
physical id\t: 0
siblings\t: 2
core id\t\t: 0
cpu cores\t: 1
apicid\t\t: 1
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov ht syscall
";

    /// Builds an AMD EPYC listing: `cores` physical cores with two threads each,
    /// numbered as Linux does (all first threads, then all siblings).
    fn epyc_cpuinfo(cores: u32) -> String {
        let mut text = String::new();
        for processor in 0..cores * 2 {
            text.push_str(&format!(
                "processor\t: {processor}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n\
                 model\t\t: 1\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n\
                 physical id\t: 0\nsiblings\t: {}\ncore id\t\t: {}\ncpu cores\t: {cores}\n\
                 flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep\n\n",
                cores * 2,
                processor % cores,
            ));
        }
        text
    }

    const MEMINFO: &str = "\
MemTotal:       528280564 kB
MemFree:        498123456 kB
MemAvailable:   510987654 kB
Buffers:          123456 kB
";

    const OS_RELEASE: &str = "\
PRETTY_NAME=\"Ubuntu 22.04.4 LTS\"
NAME=\"Ubuntu\"
VERSION_ID=\"22.04\"
VERSION=\"22.04.4 LTS (Jammy Jellyfish)\"
ID=ubuntu
";

    fn two_h100() -> GpuReport {
        parse_nvidia_smi(
            "NVIDIA H100 80GB HBM3, 81559, 550.54.15\nNVIDIA H100 80GB HBM3, 81559, 550.54.15\n",
        )
    }

    #[test]
    fn xeon_with_two_logical_cpus_has_one_physical_core() {
        let cpu = parse_cpuinfo(XEON_CPUINFO);
        assert_eq!(cpu.model.as_deref(), Some("Intel(R) Xeon(R) CPU @ 2.20GHz"));
        assert_eq!(cpu.threads, 2);
        assert_eq!(cpu.cores, Some(1));
    }

    #[test]
    fn epyc_with_smt_counts_cores_once() {
        let cpu = parse_cpuinfo(&epyc_cpuinfo(64));
        assert_eq!(cpu.model.as_deref(), Some("AMD EPYC 7B13 64-Core Processor"));
        assert_eq!(cpu.threads, 128);
        assert_eq!(cpu.cores, Some(64));
    }

    #[test]
    fn cores_on_two_sockets_are_distinct() {
        let text = "processor : 0\nphysical id : 0\ncore id : 0\n\n\
                    processor : 1\nphysical id : 1\ncore id : 0\n";
        assert_eq!(parse_cpuinfo(text).cores, Some(2));
    }

    #[test]
    fn arm_cpuinfo_without_model_name_falls_back_and_leaves_cores_unknown() {
        let text = "processor\t: 0\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\n\n\
                    processor\t: 1\nBogoMIPS\t: 108.00\n\n\
                    Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n";
        let cpu = parse_cpuinfo(text);
        assert_eq!(cpu.model.as_deref(), Some("BCM2835"));
        assert_eq!(cpu.threads, 2);
        assert_eq!(cpu.cores, None);
    }

    #[test]
    fn empty_cpuinfo_is_unknown() {
        assert_eq!(parse_cpuinfo(""), CpuInfo::default());
    }

    #[test]
    fn meminfo_total_is_bytes() {
        assert_eq!(parse_meminfo(MEMINFO), Some(528_280_564 * 1024));
        assert_eq!(parse_meminfo("MemFree: 12 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn os_release_prefers_pretty_name() {
        assert_eq!(parse_os_release(OS_RELEASE).as_deref(), Some("Ubuntu 22.04.4 LTS"));
        let plain = "NAME=Fedora\nVERSION_ID=40\n";
        assert_eq!(parse_os_release(plain).as_deref(), Some("Fedora 40"));
        assert_eq!(parse_os_release(""), None);
    }

    #[test]
    fn nvidia_smi_lists_two_gpus_with_their_memory() {
        let report = two_h100();
        assert_eq!(report.gpus.len(), 2);
        assert_eq!(report.gpus[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(report.gpus[1].memory_bytes, Some(81_559 * 1024 * 1024));
        assert_eq!(report.driver_version.as_deref(), Some("550.54.15"));
    }

    #[test]
    fn unified_memory_device_reports_unknown_memory_not_zero() {
        for memory in ["[N/A]", "[Not Supported]"] {
            let report = parse_nvidia_smi(&format!("NVIDIA GB10, {memory}, 580.95.05\n"));
            assert_eq!(report.gpus.len(), 1);
            assert_eq!(report.gpus[0].name, "NVIDIA GB10");
            assert_eq!(report.gpus[0].memory_bytes, None);
            assert_eq!(report.driver_version.as_deref(), Some("580.95.05"));
        }
    }

    #[test]
    fn malformed_nvidia_smi_lines_are_skipped() {
        let report = parse_nvidia_smi("No devices were found\n\n");
        assert!(report.gpus.is_empty());
        assert_eq!(report.driver_version, None);
    }

    #[test]
    fn missing_nvidia_smi_means_no_gpu() {
        assert_eq!(query_nvidia_smi("/nonexistent/kitt-test/nvidia-smi"), None);
    }

    fn server(gpus: GpuReport) -> Hardware {
        let cpu = parse_cpuinfo(&epyc_cpuinfo(64));
        Hardware {
            cpu_model: cpu.model.unwrap_or_default(),
            cpu_threads: cpu.threads,
            cpu_cores: cpu.cores,
            ram_bytes: parse_meminfo(MEMINFO).unwrap_or(0),
            gpus: gpus.gpus,
            driver_version: gpus.driver_version,
            os: parse_os_release(OS_RELEASE).unwrap_or_default(),
            kernel: "5.15.0-105-generic".to_owned(),
            fingerprint: String::new(),
        }
    }

    #[test]
    fn fingerprint_of_a_two_gpu_server() {
        assert_eq!(
            fingerprint(&server(two_h100())),
            "NVIDIA-H100-80GB-HBM3-80GB-2x_AMD-EPYC-7B13-64-Core-Processor-64c_504GB_\
             Ubuntu-22.04.4-LTS-5.15.0-105-generic"
        );
    }

    #[test]
    fn fingerprint_of_a_unified_memory_device_has_no_gpu_memory() {
        let gpus = parse_nvidia_smi("NVIDIA GB10, [N/A], 580.95.05\n");
        let text = fingerprint(&server(gpus));
        assert!(text.starts_with("NVIDIA-GB10_AMD-EPYC"), "{text}");
    }

    #[test]
    fn fingerprint_groups_different_gpus() {
        let gpus = parse_nvidia_smi(
            "NVIDIA GeForce RTX 4090, 24564, 550.1\nNVIDIA GeForce RTX 3090, 24576, 550.1\n",
        );
        let text = fingerprint(&server(gpus));
        assert!(text.starts_with("NVIDIA-GeForce-RTX-4090-24GB+NVIDIA-GeForce-RTX-3090-24GB_"));
    }

    #[test]
    fn fingerprint_of_a_cpu_only_vm() {
        let cpu = parse_cpuinfo(XEON_CPUINFO);
        let hardware = Hardware {
            cpu_model: cpu.model.unwrap_or_default(),
            cpu_threads: cpu.threads,
            cpu_cores: cpu.cores,
            ram_bytes: 8 * 1024 * 1024 * 1024 - 300 * 1024 * 1024,
            os: "Debian GNU/Linux 12 (bookworm)".to_owned(),
            kernel: "6.1.0-18-cloud-amd64".to_owned(),
            ..Hardware::default()
        };
        assert_eq!(
            fingerprint(&hardware),
            "Intel-Xeon-CPU-2.20GHz-1c_8GB_Debian-GNU-Linux-12-bookworm-6.1.0-18-cloud-amd64"
        );
    }

    #[test]
    fn fingerprint_of_nothing_known_says_unknown() {
        let hardware = Hardware {
            cpu_model: UNKNOWN.to_owned(),
            os: UNKNOWN.to_owned(),
            kernel: UNKNOWN.to_owned(),
            ..Hardware::default()
        };
        assert_eq!(fingerprint(&hardware), "unknown-0c_unknownGB_unknown-unknown");
    }

    #[test]
    fn detect_never_fails_and_fills_the_fingerprint() {
        let hardware = detect();
        assert!(!hardware.cpu_model.is_empty());
        assert_eq!(hardware.fingerprint, fingerprint(&hardware));
        assert!(!hardware.fingerprint.contains(' '));
    }
}
