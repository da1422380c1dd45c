//! The fake NVML library (tests/fakes/nvml/fake_nvml.c), compiled for a test
//! with the machine's C compiler into a temporary directory.
//!
//! A test that runs the `kitt` binary points `KITT_NVML_LIBRARY` at
//! [`FakeNvml::library`] and describes the machine with the `FAKE_NVML_*`
//! variables; a test that loads it into its own process passes the same
//! settings as compile-time defaults ([`FakeNvml::build_with`]), since a
//! multi-threaded test must not change its own environment.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A compiled fake `libnvidia-ml.so`.
pub struct FakeNvml {
    _dir: tempfile::TempDir,
    /// The shared library.
    pub library: PathBuf,
}

impl FakeNvml {
    /// The fake with its built-in defaults (two 24 GiB devices).
    pub fn build() -> FakeNvml {
        FakeNvml::build_with(&[])
    }

    /// The fake with `defaults` (`("COUNT", "4")` sets FAKE_NVML_COUNT's
    /// default); panics with the compiler's output when it cannot be built.
    pub fn build_with(defaults: &[(&str, &str)]) -> FakeNvml {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/nvml/fake_nvml.c");
        let dir = tempfile::tempdir().expect("temp dir");
        let library = dir.path().join("libnvidia-ml.so.1");
        let mut command = Command::new("cc");
        command.args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"]).arg(&library);
        for (name, value) in defaults {
            command.arg(format!("-DFAKE_NVML_DEFAULT_{name}=\"{value}\""));
        }
        command.arg(&source);
        let output = command.output().unwrap_or_else(|error| {
            panic!(
                "cannot run `cc` to build the fake NVML library ({error}); these tests need a \
                 C compiler on the PATH"
            )
        });
        assert!(
            output.status.success(),
            "cc failed to build {}:\n{}",
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        FakeNvml { _dir: dir, library }
    }
}
