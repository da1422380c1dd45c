//! Validation of the engine keys only some engines take: the server keys
//! (`gpu_memory_utilization`, `tensor_parallel_size`, `tokenizer`) and the
//! refusal of any key the engine would ignore (see [`crate::engine::keys`]).

use serde_saphyr::Spanned;

use super::campaign::{EngineConfig, engine_limits};
use super::raw::RawEngineConfig;
use super::validate::Checker;
use crate::engine::EngineKind;

impl Checker {
    /// Reports keys `kind` does not take, and reads the server keys into `config`.
    pub(super) fn server_keys(
        &mut self,
        kind: EngineKind,
        raw: &mut RawEngineConfig,
        field: &str,
        config: &mut EngineConfig,
    ) {
        self.refuse_inapplicable(kind, "context_size", raw.context_size.as_ref(), field);
        self.refuse_inapplicable(kind, "gpu_layers", raw.gpu_layers.as_ref(), field);
        self.refuse_inapplicable(kind, "parallel", raw.parallel.as_ref(), field);
        self.refuse_inapplicable(kind, "threads", raw.threads.as_ref(), field);
        let tensor = raw.tensor_parallel_size.as_ref();
        self.refuse_inapplicable(kind, "tensor_parallel_size", tensor, field);
        let tokenizer = raw.tokenizer.as_ref();
        self.refuse_inapplicable(kind, "tokenizer", tokenizer, field);

        if let Some(share) = raw.gpu_memory_utilization.take() {
            self.refuse_inapplicable(kind, "gpu_memory_utilization", Some(&share), field);
            if engine_limits::gpu_memory_utilization(share.value) {
                config.gpu_memory_utilization = Some(share.value);
            } else {
                let message = format!("must be above 0 and at most 1, got {}", share.value);
                self.report(&share, &format!("{field}.gpu_memory_utilization"), message)
                    .hint("it is the fraction of GPU memory the engine may take, e.g. 0.9");
            }
        }
        config.tensor_parallel_size = self.bounded(
            raw.tensor_parallel_size.take(),
            field,
            "tensor_parallel_size",
            engine_limits::TENSOR_PARALLEL_SIZE,
        );
        config.tokenizer = raw.tokenizer.take().and_then(|tokenizer| {
            let text = tokenizer.value.trim().to_owned();
            if text.is_empty() {
                let message = "the tokenizer is empty".to_owned();
                self.report(&tokenizer, &format!("{field}.tokenizer"), message)
                    .hint("give a local tokenizer directory or a repository id");
                return None;
            }
            Some(text)
        });
    }

    fn refuse_inapplicable<T>(
        &mut self,
        kind: EngineKind,
        key: &str,
        value: Option<&Spanned<T>>,
        field: &str,
    ) {
        let (Some(value), Some(why)) = (value, crate::engine::keys::refusal(kind, key)) else {
            return;
        };
        let message = format!("engine `{kind}` does not take `{key}`: {why}");
        self.report(value, &format!("{field}.{key}"), message).hint(format!("remove `{key}`"));
    }
}
