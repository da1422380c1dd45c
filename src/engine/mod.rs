//! The engines kitt knows and the model formats each accepts.
//!
//! Starting, probing and stopping engines comes with the measurement stage;
//! planning needs only this catalogue.

use std::fmt;

/// A model format, as named in an engine's `formats` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// GGUF files from `gguf_repo` (for Ollama also its library tags, which are GGUF).
    Gguf,
    /// Safetensors checkpoints from `safetensors_repo`.
    Safetensors,
    /// Ollama library tags from `ollama_tag`.
    Ollama,
}

impl Format {
    /// Every format name a config may use.
    pub const NAMES: &'static [&'static str] = &["gguf", "safetensors", "ollama"];

    /// Parses a format name as written in a config (any case).
    pub fn parse(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "gguf" => Some(Format::Gguf),
            "safetensors" => Some(Format::Safetensors),
            "ollama" => Some(Format::Ollama),
            _ => None,
        }
    }

    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Format::Gguf => "gguf",
            Format::Safetensors => "safetensors",
            Format::Ollama => "ollama",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An inference engine kitt can benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EngineKind {
    /// llama.cpp's `llama-server`.
    LlamaCpp,
    /// Ollama.
    Ollama,
    /// vLLM's OpenAI-compatible server.
    Vllm,
    /// SGLang's OpenAI-compatible server.
    Sglang,
    /// ExLlamaV2 through TabbyAPI.
    Exllamav2,
    /// Apple MLX through `mlx_lm.server`.
    Mlx,
    /// An OpenAI-compatible server that is already running; never started or stopped.
    Openai,
}

impl EngineKind {
    /// Every engine, in the order `kitt engines list` shows them.
    pub const ALL: &'static [EngineKind] = &[
        EngineKind::LlamaCpp,
        EngineKind::Ollama,
        EngineKind::Vllm,
        EngineKind::Sglang,
        EngineKind::Exllamav2,
        EngineKind::Mlx,
        EngineKind::Openai,
    ];

    /// Every engine name a config may use.
    pub const NAMES: &'static [&'static str] =
        &["llama_cpp", "ollama", "vllm", "sglang", "exllamav2", "mlx", "openai"];

    /// Parses an engine name as written in a config.
    pub fn parse(name: &str) -> Option<EngineKind> {
        let index = Self::NAMES.iter().position(|known| *known == name)?;
        Some(Self::ALL[index])
    }

    /// The config spelling.
    pub fn name(self) -> &'static str {
        let index = Self::ALL.iter().position(|kind| *kind == self).unwrap_or_default();
        Self::NAMES[index]
    }

    /// The formats the engine can load, in order of preference. `openai` loads
    /// nothing itself: it benchmarks whatever its server already serves.
    pub fn formats(self) -> &'static [Format] {
        match self {
            EngineKind::LlamaCpp => &[Format::Gguf],
            // Library tags are GGUF blobs; a `gguf_repo` is imported through a Modelfile
            // only when the model has no tag.
            EngineKind::Ollama => &[Format::Ollama, Format::Gguf],
            // A single-file GGUF runs with the tokenizer of the model's safetensors repo.
            EngineKind::Vllm => &[Format::Safetensors, Format::Gguf],
            EngineKind::Sglang | EngineKind::Exllamav2 | EngineKind::Mlx => &[Format::Safetensors],
            EngineKind::Openai => &[],
        }
    }

    /// The formats used when the config gives no `formats` list.
    pub fn default_formats(self) -> &'static [Format] {
        match self {
            EngineKind::Vllm => &[Format::Safetensors],
            other => other.formats(),
        }
    }

    /// Whether kitt starts and stops this engine itself.
    pub fn is_managed(self) -> bool {
        self != EngineKind::Openai
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_name_parses_back_to_itself() {
        for kind in EngineKind::ALL {
            assert_eq!(EngineKind::parse(kind.name()), Some(*kind));
        }
        assert_eq!(EngineKind::NAMES.len(), EngineKind::ALL.len());
    }

    #[test]
    fn default_formats_are_a_subset_of_accepted_formats() {
        for kind in EngineKind::ALL {
            for format in kind.default_formats() {
                assert!(kind.formats().contains(format), "{kind} {format}");
            }
        }
    }
}
