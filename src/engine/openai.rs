//! An OpenAI-compatible server that is already running. kitt never starts or
//! stops it; it checks that the server answers and serves the model asked for.

use std::collections::BTreeMap;

use super::{EngineError, EngineKind, Launch, Running};

/// Connects to the server at the engine config's `base_url`.
pub async fn connect(launch: &Launch<'_>) -> Result<Running, EngineError> {
    let base_url = launch.config.base_url.clone().ok_or(EngineError::NoBaseUrl)?;
    let base_url = base_url.trim_end_matches('/').trim_end_matches("/v1").to_owned();
    let served = super::served_models(&base_url).await?;
    let wanted = launch.config.model.clone().unwrap_or_else(|| launch.model_name.to_owned());
    if !served.contains(&wanted) {
        return Err(EngineError::WrongModel { expected: wanted, served });
    }
    let parameters = BTreeMap::from([("base_url".to_owned(), base_url.clone())]);
    let comparability = BTreeMap::from([
        ("started_by_kitt".to_owned(), "no (server settings unknown)".to_owned()),
        ("output_length".to_owned(), "not pinned (no portable field)".to_owned()),
    ]);
    Ok(Running {
        kind: EngineKind::Openai,
        base_url,
        served_model: wanted,
        version: "unknown (external server)".to_owned(),
        binary: None,
        parameters,
        request_extras: serde_json::Map::new(),
        comparability,
        protocol: crate::measure::Protocol::OpenAi,
        handle: None,
        port: None,
        cleanup: None,
    })
}
