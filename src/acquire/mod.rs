//! Model sources: local storage, the Hugging Face cache, the Hugging Face Hub
//! and the Ollama library. Discovery lists a repository's files with their
//! byte sizes; downloading models comes in a later stage. The quality
//! benchmarks' datasets are downloaded from the Hub (`datasets`).

pub mod datasets;
pub mod http;
pub mod hub;
pub mod local;
pub mod ollama;
