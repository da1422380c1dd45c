//! ExLlamaV2 through TabbyAPI, started from its checkout.
//!
//! The engine config's `binary` (or `KITT_EXLLAMAV2`) is TabbyAPI's `main.py`,
//! its checkout directory, or an executable wrapper in it such as `start.sh`.
//! `main.py` runs with the checkout's `venv/bin/python` when there is one,
//! else `python3` on `PATH`; every form runs in the checkout, where TabbyAPI
//! reads its `config.yml`, which kitt's arguments override. TabbyAPI loads
//! the model named by `--model-name` from `--model-dir` and serves it under
//! its directory name; ready means `/health` 200, that model loaded
//! (`/v1/model`), and a one-token chat request served.
//!
//! In Docker mode the image's entry point (`python3`, in `/app`) runs
//! `main.py` with the same flags, the model directory mounted as
//! `/models/<name>` (so `--model-dir /models`) and the server on
//! 0.0.0.0:5000 inside the container.

use std::path::{Path, PathBuf};

use super::served::{self, ImageLayout, Lookup, MemorySign, ModelCheck, ServerPlan, Site};
use super::{EngineError, EngineKind, Launch, Running, port, python};
use crate::config::EngineMode;

const LOOKUP: Lookup = Lookup {
    engine: "exllamav2",
    env: "KITT_EXLLAMAV2",
    on_path: None,
    hint: "clone TabbyAPI and install its requirements, then set the engine config's `binary` \
           (or KITT_EXLLAMAV2) to its main.py",
    accept: entry_point,
};

/// Start-up memory errors.
const MEMORY_SIGNS: &[MemorySign] = &[
    MemorySign {
        needle: "CUDA out of memory",
        cause: "the GPU ran out of memory loading the model and its cache",
        hint: "use a smaller quant (fewer bits per weight) or lower `context_size`",
    },
    MemorySign {
        needle: "OutOfMemoryError",
        cause: "the GPU ran out of memory loading the model and its cache",
        hint: "use a smaller quant (fewer bits per weight) or lower `context_size`",
    },
];

/// The official image's entry point is `python3`, run in `/app` where
/// `main.py` is; TabbyAPI's default port is 5000.
const IMAGE: ImageLayout = ImageLayout { entry: &["python3"], port: 5000 };

/// ExLlamaV2's cache is allocated in pages of this many tokens.
const CACHE_PAGE: u32 = 256;

/// What a configured path stands for: `main.py` (in the directory given, or
/// the file itself), or an executable wrapper; absolute, since TabbyAPI runs
/// in its checkout.
fn entry_point(path: &Path) -> Option<PathBuf> {
    let path = &std::path::absolute(path).ok()?;
    if path.is_dir() {
        let main = path.join("main.py");
        return main.is_file().then_some(main);
    }
    if path.is_file() && path.extension().is_some_and(|ext| ext == "py") {
        return Some(path.to_owned());
    }
    super::llama_cpp::executable(path)
}

/// Finds TabbyAPI's entry point.
pub fn find_entry(configured: Option<&Path>) -> Result<PathBuf, EngineError> {
    served::find_program(&LOOKUP, configured)
}

/// The checkout's virtual environment's Python, else `python3` on `PATH`.
fn interpreter(entry: &Path) -> Option<PathBuf> {
    let checkout = entry.parent()?;
    let venv = checkout.join("venv/bin/python");
    super::llama_cpp::executable(&venv).or_else(python::python3)
}

/// For `kitt engines list`: the entry point and ExLlamaV2's version, or why it is not usable.
pub fn availability() -> Result<String, String> {
    let entry = find_entry(None).map_err(|error| error.to_string())?;
    Ok(format!("{} ({})", entry.display(), version(&entry)))
}

/// `exllamav2 <version>` as TabbyAPI's interpreter sees it; TabbyAPI itself
/// reports no version.
fn version(entry: &Path) -> String {
    interpreter(entry)
        .and_then(|python| python::package_version(&python, "exllamav2"))
        .map_or_else(|| "unknown".to_owned(), |version| format!("exllamav2 {version}"))
}

/// Starts TabbyAPI (natively, or in a container in Docker mode) and waits
/// until it serves the model.
pub async fn start(launch: &Launch<'_>) -> Result<Running, EngineError> {
    let (plan, started, version) = match launch.config.mode {
        EngineMode::Native => {
            let entry = find_entry(launch.config.binary.as_deref())?;
            let site = Site::native(port::free_port().map_err(EngineError::Io)?);
            let plan = plan(launch, &entry, &site)?;
            let started = served::launch(&plan, launch).await?;
            let version = python::off_runtime(move || Some(version(&entry))).await;
            (plan, started, version)
        }
        EngineMode::Docker => {
            let build = |site: &Site| {
                let mut plan = ServerPlan::new(EngineKind::Exllamav2, "python3".into(), site);
                plan.leading = vec!["main.py".into()];
                configure(plan, launch, site)
            };
            let (plan, started) = served::launch_in_docker(launch, &IMAGE, None, build).await?;
            (plan, started, None)
        }
    };
    Ok(started.into_running(plan, version))
}

/// The command line, checks and request fields for one launch at `site`,
/// started through `entry`.
pub fn plan(launch: &Launch<'_>, entry: &Path, site: &Site) -> Result<ServerPlan, EngineError> {
    let mut plan = if entry.extension().is_some_and(|ext| ext == "py") {
        let python = interpreter(entry).ok_or_else(|| EngineError::BinaryMissing {
            engine: "exllamav2",
            searched: "the checkout's venv/bin/python and `python3` on PATH".into(),
            hint: LOOKUP.hint.into(),
        })?;
        let mut plan = ServerPlan::new(EngineKind::Exllamav2, python, site);
        plan.leading = vec![entry.display().to_string()];
        plan
    } else {
        ServerPlan::new(EngineKind::Exllamav2, entry.to_owned(), site)
    };
    plan.dir = entry.parent().map(Path::to_owned);
    configure(plan, launch, site)
}

/// Adds the flags, checks and request fields to a plan that starts TabbyAPI.
fn configure(
    mut plan: ServerPlan,
    launch: &Launch<'_>,
    site: &Site,
) -> Result<ServerPlan, EngineError> {
    let model = served::check_model(launch, None)?;
    // TabbyAPI runs in its checkout: a relative model path would point elsewhere.
    let model = PathBuf::from(site.path(&std::path::absolute(model).map_err(EngineError::Io)?));
    let (Some(model_dir), Some(name)) = (model.parent(), model.file_name()) else {
        return Err(EngineError::Model {
            engine: "exllamav2",
            model: model.display().to_string(),
            reason: "TabbyAPI loads a model directory by name from its parent directory".into(),
        });
    };
    let name = name.to_string_lossy().into_owned();
    let context = launch.context_per_request();
    // Every request in flight needs its own sequence in the cache.
    let cache = (context.saturating_mul(launch.slots)).div_ceil(CACHE_PAGE) * CACHE_PAGE;

    plan.flag("--host", site.host);
    plan.flag("--port", site.port);
    plan.flag("--disable-auth", "true");
    plan.flag("--model-dir", model_dir.display());
    plan.flag("--model-name", &name);
    plan.flag("--max-seq-len", context);
    plan.flag("--cache-size", cache);
    plan.flag("--max-batch-size", launch.slots);
    plan.extra_args = launch.config.extra_args.clone();

    plan.model_check = ModelCheck::Loaded(name.clone());
    plan.served_model = name;
    // TabbyAPI takes `ignore_eos` as an alias of its `ban_eos_token`.
    plan.pin_output_length();
    plan.comparability.insert("context_size".into(), format!("{context} (--max-seq-len)"));
    plan.memory_signs = MEMORY_SIGNS;
    plan.memory_settings = format!("context_size {context}, cache {cache} tokens");
    Ok(plan)
}
