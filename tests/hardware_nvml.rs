//! The GPU inventory, fingerprint and memory readings through NVML, loaded
//! at run time: a fake `libnvidia-ml` (tests/fakes/nvml, compiled here with
//! `cc`) speaks NVML's C ABI to the real `nvml-wrapper` loader. Without
//! NVML kitt asks the fake `nvidia-smi` (tests/fakes/gpu); without either
//! the machine is one CPU device. The last tests run the real `kitt`
//! binary on an NVML-described machine.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Scratch;
use kitt::hardware::detect_with;
use kitt::hardware::gpu::{NvmlLibrary, Source, Tools};
use kitt::hardware::inventory::inventory_with;
use kitt::run::memory::MemorySampler;
use serde_json::Value;
use support::nvml::FakeNvml;
use support::stream::{Script, ScriptedStream};

const MIB: u64 = 1 << 20;

fn fake_nvidia_smi() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/gpu/nvidia-smi")
}

/// Tools that open `library` (else no NVML) and run no `nvidia-smi`.
fn nvml_only(library: &Path) -> Tools {
    Tools { nvml: NvmlLibrary::Path(library.into()), nvidia_smi: None, visible: None, order: None }
}

#[test]
fn the_inventory_reads_every_device_from_nvml() {
    let nvml = FakeNvml::build_with(&[("COUNT", "3"), ("USED_MIB", "1000")]);

    let inventory = inventory_with(&nvml_only(&nvml.library));

    assert_eq!(inventory.source, Source::Nvml);
    assert_eq!(inventory.gpus.len(), 3);
    let second = &inventory.gpus[1];
    assert_eq!(second.index, 1);
    assert_eq!(second.uuid.as_deref(), Some("GPU-8a3f0001-1111-2222-3333-444444444444"));
    assert_eq!(second.name, "Fake NVML GPU");
    assert_eq!(second.memory_bytes, Some(24576 * MIB));
    assert_eq!(second.used_bytes, Some(2000 * MIB), "device i uses (i + 1) x 1000 MiB");
    assert_eq!(second.utilization_percent, Some(14));
    assert_eq!(inventory.free_bytes(1), (24576 - 2000) * MIB);
    let text = inventory.describe();
    assert!(text.starts_with("GPU 0 Fake NVML GPU 24.0 GiB, GPU 1"), "{text}");
    assert!(text.ends_with("(from NVML)"), "{text}");
}

#[test]
fn nvml_not_supported_memory_is_a_unified_memory_device() {
    let nvml = FakeNvml::build_with(&[("COUNT", "1"), ("MEMORY_MIB", "not-supported")]);

    let inventory = inventory_with(&nvml_only(&nvml.library));

    assert_eq!(inventory.source, Source::Nvml);
    assert_eq!(inventory.gpus.len(), 1, "not skipped: unified memory");
    assert_eq!(inventory.gpus[0].memory_bytes, None);
    assert_eq!(inventory.usable_bytes(0), inventory.ram_bytes);
    assert!(inventory.describe().contains("unified memory"), "{}", inventory.describe());
    // No GPU memory to read: the sampler falls back to the engine's processes.
    assert!(MemorySampler::gpu(&nvml_only(&nvml.library), None).is_none());
}

#[test]
fn cuda_visible_devices_restricts_the_nvml_devices_by_uuid_prefix_or_index() {
    let nvml = FakeNvml::build_with(&[("COUNT", "4")]);
    let mut tools = nvml_only(&nvml.library);

    tools.visible = Some("GPU-8a3f0002,1".into());
    let inventory = inventory_with(&tools);
    let indices: Vec<u32> = inventory.gpus.iter().map(|device| device.index).collect();
    assert_eq!(indices, [1, 2]);
    assert_eq!(inventory.hidden, [0, 3]);
    assert!(inventory.describe().contains("GPU 0,3 hidden by CUDA_VISIBLE_DEVICES"));

    tools.visible = Some(String::new());
    let none = inventory_with(&tools);
    assert!(!none.has_gpus(), "an empty value hides every GPU");
    assert_eq!(none.device_count(), 1, "the CPU device");
}

#[test]
fn without_nvml_the_inventory_falls_back_to_nvidia_smi_then_to_the_cpu() {
    let mut tools = Tools {
        nvml: NvmlLibrary::Path("/nonexistent/kitt-test/libnvidia-ml.so.1".into()),
        nvidia_smi: Some(fake_nvidia_smi()),
        visible: None,
        order: None,
    };
    let inventory = inventory_with(&tools);
    assert_eq!(inventory.source, Source::NvidiaSmi);
    assert_eq!(inventory.gpus.len(), 2);
    assert_eq!(inventory.gpus[0].name, "Fake GPU 24GB");

    tools.nvidia_smi = None;
    let cpu = inventory_with(&tools);
    assert_eq!(cpu.source, Source::Neither);
    assert!(!cpu.has_gpus());
    assert!(cpu.describe().contains("neither NVML nor nvidia-smi answered"));
}

#[test]
fn an_nvml_that_will_not_initialise_is_no_nvml() {
    let nvml = FakeNvml::build_with(&[("INIT", "fail")]);
    let tools = Tools { nvidia_smi: Some(fake_nvidia_smi()), ..nvml_only(&nvml.library) };
    assert!(tools.nvml().is_none());
    assert_eq!(inventory_with(&tools).source, Source::NvidiaSmi);
}

#[test]
fn a_machine_fingerprints_the_same_through_nvml_and_nvidia_smi() {
    // The same machine as the fake nvidia-smi describes by default.
    let nvml = FakeNvml::build_with(&[("NAME", "Fake GPU 24GB")]);
    let through_nvml = detect_with(&nvml_only(&nvml.library));
    let through_smi = detect_with(&Tools {
        nvml: NvmlLibrary::Off,
        nvidia_smi: Some(fake_nvidia_smi()),
        visible: None,
        order: None,
    });

    assert_eq!(through_nvml.gpus.len(), 2);
    assert_eq!(through_nvml.driver_version.as_deref(), Some("999.88.77"));
    assert!(through_nvml.fingerprint.starts_with("Fake-GPU-24GB-24GB-2x_"));
    assert_eq!(through_nvml.fingerprint, through_smi.fingerprint);
}

#[test]
fn gpu_memory_is_read_on_the_runs_own_devices_only() {
    let nvml = FakeNvml::build_with(&[("COUNT", "3"), ("USED_MIB", "100")]);
    let tools = nvml_only(&nvml.library);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let placed = MemorySampler::gpu(&tools, Some(vec![1, 2])).expect("NVML reads memory");
    assert_eq!(placed.describe(), "GPU memory used on GPU 1,2 (NVML)");
    assert_eq!(runtime.block_on(placed.read()), Some((200 + 300) * MIB));

    let unplaced = MemorySampler::gpu(&tools, None).unwrap();
    assert_eq!(unplaced.describe(), "GPU memory used on all GPUs (NVML)");
    assert_eq!(runtime.block_on(unplaced.read()), Some(600 * MIB));

    let restricted = Tools { visible: Some("GPU-8a3f0000".into()), ..tools.clone() };
    let visible = MemorySampler::gpu(&restricted, None).unwrap();
    assert_eq!(visible.describe(), "GPU memory used on GPU 0 (NVML)");
    let (_, samples) = runtime.block_on(async {
        visible.during(Duration::from_millis(5), tokio::time::sleep(Duration::ZERO)).await
    });
    assert!(samples.iter().all(|bytes| *bytes == 100 * MIB), "{samples:?}");
}

#[test]
fn gpu_memory_through_the_configured_nvidia_smi_when_nvml_is_absent() {
    let tools = Tools {
        nvml: NvmlLibrary::Off,
        nvidia_smi: Some(fake_nvidia_smi()),
        visible: None,
        order: None,
    };
    let sampler = MemorySampler::gpu(&tools, Some(vec![1])).expect("nvidia-smi reads memory");
    assert_eq!(sampler.describe(), "GPU memory used on GPU 1 (nvidia-smi)");
    assert!(MemorySampler::gpu(&tools, Some(vec![5])).is_none(), "no GPU 5 to read");
}

/// `kitt --json run` of an `openai` server on the NVML-described machine,
/// with a suite that samples memory; returns the stored result.
fn run_on_nvml_machine(nvml: &FakeNvml, env: &[(&str, &str)]) -> (Value, String) {
    let server = ScriptedStream::start(Script::chat("m", &["a"; 4], Duration::from_millis(1)));
    server.serve_models(&["m"]);
    let scratch = Scratch::new();
    let suite = scratch.write(
        "memory.yaml",
        "name: memory\nversion: 1\nruns: 1\ntests: [memory_usage]\n\
         test_overrides:\n  memory_usage:\n    warmup: false\n",
    );
    let log = scratch.path().join("nvml.log");
    let mut command = scratch.kitt();
    command
        .env("KITT_NVML_LIBRARY", &nvml.library)
        .env("KITT_NVIDIA_SMI", "/nonexistent/kitt-test/nvidia-smi")
        .env("FAKE_NVML_LOG", &log)
        .envs(env.iter().copied())
        .args(["--json", "run", "-m", "m", "-e", "openai", "-s"])
        .arg(&suite)
        .args(["--engine-config", &format!("base_url={}/v1", server.url())]);
    let outcome = scratch.run(&mut command);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let result = serde_json::from_str(&outcome.stdout).unwrap();
    (result, std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn kitt_run_fingerprints_and_samples_the_machine_nvml_describes() {
    let nvml = FakeNvml::build();

    let (result, calls) =
        run_on_nvml_machine(&nvml, &[("FAKE_NVML_COUNT", "2"), ("FAKE_NVML_USED_MIB", "10")]);

    let hardware = &result["hardware"];
    assert_eq!(hardware["gpus"].as_array().unwrap().len(), 2, "{hardware}");
    assert_eq!(hardware["driver_version"], "999.88.77");
    let fingerprint = hardware["fingerprint"].as_str().unwrap();
    assert!(fingerprint.starts_with("Fake-NVML-GPU-24GB-2x_"), "{fingerprint}");
    let memory = &result["engine"]["comparability"]["memory"];
    assert_eq!(memory, "GPU memory used on all GPUs (NVML)");
    // Devices 0 and 1 use 10 and 20 MiB: every reading is their sum.
    let metrics = &result["benchmarks"][0]["metrics"];
    assert_eq!(metrics["peak_memory_bytes"].as_f64(), Some((30 * MIB) as f64), "{metrics}");
    assert!(calls.contains("nvmlDeviceGetMemoryInfo_v2"), "{calls}");
    assert!(calls.contains("nvmlShutdown"), "NVML is shut down: {calls}");
}

#[test]
fn kitt_run_samples_only_the_gpus_cuda_visible_devices_leaves() {
    let nvml = FakeNvml::build();

    let (result, _) = run_on_nvml_machine(
        &nvml,
        &[
            ("FAKE_NVML_COUNT", "2"),
            ("FAKE_NVML_USED_MIB", "10"),
            ("CUDA_VISIBLE_DEVICES", "GPU-8a3f0001"),
        ],
    );

    let memory = &result["engine"]["comparability"]["memory"];
    assert_eq!(memory, "GPU memory used on GPU 1 (NVML)");
    let metrics = &result["benchmarks"][0]["metrics"];
    assert_eq!(metrics["peak_memory_bytes"].as_f64(), Some((20 * MIB) as f64), "{metrics}");
    // The fingerprint names the machine, every GPU included.
    assert_eq!(result["hardware"]["gpus"].as_array().unwrap().len(), 2);
}

#[test]
fn kitt_run_without_nvml_reads_the_configured_nvidia_smi_not_the_path() {
    // KITT_NVML_LIBRARY empty: NVML off. The fake nvidia-smi is not on the
    // PATH; only KITT_NVIDIA_SMI names it.
    let server = ScriptedStream::start(Script::chat("m", &["a"; 4], Duration::from_millis(1)));
    server.serve_models(&["m"]);
    let scratch = Scratch::new();
    let log = scratch.path().join("smi.log");
    let mut command = scratch.kitt();
    command
        .env("KITT_NVML_LIBRARY", "")
        .env("KITT_NVIDIA_SMI", fake_nvidia_smi())
        .env("FAKE_GPU_COUNT", "2")
        .env("FAKE_GPU_LOG", &log)
        .args(["--json", "run", "-m", "m", "-e", "openai"])
        .args(["--engine-config", &format!("base_url={}/v1", server.url())]);
    let outcome = scratch.run(&mut command);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let result: Value = serde_json::from_str(&outcome.stdout).unwrap();

    assert_eq!(result["hardware"]["gpus"][1]["name"], "Fake GPU 24GB", "{}", result["hardware"]);
    let memory = &result["engine"]["comparability"]["memory"];
    assert_eq!(memory, "GPU memory used on all GPUs (nvidia-smi)");
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.contains("--query-gpu=index,memory.used"), "{calls}");
}
