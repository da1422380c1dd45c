//! Which engine `config` keys mean something to which engine. A key an engine
//! would silently ignore is refused instead, in campaign files and on
//! `kitt run --engine-config` alike, with the reason this module gives.
//!
//! Keys of engines kitt does not start (`base_url`, `model`) are checked where
//! the config is read; this module only knows the keys of started engines.

use super::EngineKind;

/// Why `key` means nothing to engine `kind`, or `None` when it applies.
pub fn refusal(kind: EngineKind, key: &str) -> Option<&'static str> {
    use EngineKind::{Exllamav2, Mlx, Sglang, Vllm};
    match key {
        "gpu_memory_utilization" | "tensor_parallel_size" if !matches!(kind, Vllm | Sglang) => {
            Some("only `vllm` and `sglang` take it")
        }
        "tokenizer" if kind != Vllm => {
            Some("only `vllm` takes a tokenizer (to serve a single-file GGUF)")
        }
        "gpu_layers" | "threads" if matches!(kind, Vllm | Sglang | Exllamav2 | Mlx) => {
            Some("this engine runs the whole model on its accelerator and has no such option")
        }
        "context_size" | "parallel" if kind == Mlx => Some("`mlx_lm.server` has no option for it"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_server_keys_apply_only_where_the_engine_has_the_flag() {
        assert_eq!(refusal(EngineKind::Vllm, "gpu_memory_utilization"), None);
        assert_eq!(refusal(EngineKind::Sglang, "tensor_parallel_size"), None);
        assert!(refusal(EngineKind::LlamaCpp, "gpu_memory_utilization").is_some());
        assert!(refusal(EngineKind::Sglang, "tokenizer").is_some());
        assert!(refusal(EngineKind::Vllm, "gpu_layers").is_some());
        assert!(refusal(EngineKind::Mlx, "context_size").is_some());
        assert_eq!(refusal(EngineKind::LlamaCpp, "gpu_layers"), None);
        assert_eq!(refusal(EngineKind::Exllamav2, "context_size"), None);
    }
}
