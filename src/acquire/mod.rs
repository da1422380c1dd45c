//! Model sources: local storage, the Hugging Face cache, the Hugging Face Hub
//! and the Ollama library. Discovery lists a repository's files with their
//! byte sizes; `download` fetches files resumably and verifies them,
//! `variant` downloads every file of a Hub variant into the storage root, and
//! the quality benchmarks' datasets are downloaded from the Hub (`datasets`).
//! With `devon_managed`, Devon downloads instead (`devon`).

pub mod datasets;
pub mod devon;
pub(crate) mod digest;
pub mod download;
pub mod http;
pub mod hub;
pub mod local;
pub mod ollama;
mod partial;
pub mod variant;
