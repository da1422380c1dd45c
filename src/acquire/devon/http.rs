//! Devon's HTTP API (`devon serve`): the model list, a download and a
//! removal, with `Authorization: Bearer <devon_api_key>` on every request
//! when a key is set. A download is one synchronous request that Devon
//! answers once the files are on its disk, so it gets a long timeout of its
//! own ([`DOWNLOAD_TIMEOUT`]); the others get [`QUICK_TIMEOUT`]. Errors keep
//! Devon's `detail` (or an excerpt of its answer) and the HTTP status; 401
//! and 403 name the settings that hold the key.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{
    DOWNLOAD_TIMEOUT, DevonError, DevonModel, DevonRequest, ListedModel, QUICK_TIMEOUT, Removal,
    SOURCE, find_model, include_patterns,
};
use crate::acquire::http::{base_url, client_builder, redact_userinfo};

/// A client for one Devon server.
#[derive(Clone)]
pub struct HttpDevon {
    url: String,
    key: Option<String>,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpDevon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = self.key.as_ref().map(|_| "<redacted>");
        f.debug_struct("HttpDevon").field("url", &self.url).field("key", &key).finish()
    }
}

/// The answer to a download.
#[derive(Deserialize)]
struct Downloaded {
    path: String,
    #[serde(default)]
    files: Vec<String>,
}

/// The answer to the model list.
#[derive(Deserialize)]
struct Models {
    models: Vec<ListedModel>,
}

impl HttpDevon {
    pub(super) fn new(url: &str, key: Option<String>) -> Result<HttpDevon, DevonError> {
        let url =
            base_url(url).ok_or_else(|| DevonError::InvalidUrl { value: redact_userinfo(url) })?;
        let client = client_builder()
            .build()
            .map_err(|source| DevonError::Client { source: Arc::new(source) })?;
        Ok(HttpDevon { url, key: key.filter(|key| !key.trim().is_empty()), client })
    }

    /// The base URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub(super) async fn stored(&self, repo: &str) -> Result<Option<DevonModel>, DevonError> {
        let url = format!("{}/api/v1/models?source={SOURCE}", self.url);
        let request = self.request(Method::GET, &url, QUICK_TIMEOUT);
        let body = self.send(request, "GET", &url, QUICK_TIMEOUT).await?;
        let models: Models = parse(&body, "GET", &url)?;
        Ok(find_model(&models.models, repo))
    }

    pub(super) async fn download(&self, asked: &DevonRequest) -> Result<DevonModel, DevonError> {
        let url = format!("{}/api/v1/downloads", self.url);
        let body = json!({
            "model_id": asked.repo,
            "source": SOURCE,
            "force": asked.force,
            "include_patterns": include_patterns(&asked.files),
        });
        let request = self.request(Method::POST, &url, DOWNLOAD_TIMEOUT).json(&body);
        let answer = self.send(request, "POST", &url, DOWNLOAD_TIMEOUT).await?;
        let downloaded: Downloaded = parse(&answer, "POST", &url)?;
        if downloaded.path.trim().is_empty() {
            return Err(DevonError::BadResponse {
                request: format!("POST {url}"),
                detail: "the answer names no `path`".to_owned(),
            });
        }
        Ok(DevonModel { path: downloaded.path.into(), files: downloaded.files })
    }

    pub(super) async fn remove(&self, repo: &str) -> Result<Removal, DevonError> {
        let url = format!("{}/api/v1/models/{SOURCE}/{repo}", self.url);
        let request = self.request(Method::DELETE, &url, QUICK_TIMEOUT);
        match self.send(request, "DELETE", &url, QUICK_TIMEOUT).await {
            Ok(_) => Ok(Removal::Removed),
            Err(DevonError::Status { status: 404, .. }) => Ok(Removal::NotHeld),
            Err(error) => Err(error),
        }
    }

    fn request(&self, method: Method, url: &str, timeout: Duration) -> RequestBuilder {
        let request = self.client.request(method, url).timeout(timeout);
        match &self.key {
            Some(key) => request.header(AUTHORIZATION, format!("Bearer {key}")),
            None => request,
        }
    }

    /// Sends `request` and returns the body of a successful answer.
    async fn send(
        &self,
        request: RequestBuilder,
        method: &str,
        url: &str,
        timeout: Duration,
    ) -> Result<String, DevonError> {
        let described = format!("{method} {url}");
        let failed = |source: reqwest::Error| {
            if source.is_timeout() {
                DevonError::TimedOut { request: described.clone(), after: timeout }
            } else {
                DevonError::Network { request: described.clone(), source: Arc::new(source) }
            }
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let body = response.text().await.map_err(failed)?;
        if status.is_success() {
            return Ok(body);
        }
        let detail = detail(&body);
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(DevonError::Unauthorized {
                url: self.url.clone(),
                status: status.as_u16(),
                sent_key: self.key.is_some(),
                detail,
            });
        }
        Err(DevonError::Status { request: described, status: status.as_u16(), detail })
    }
}

/// Devon's reason for an error: the `detail` of its JSON answer when it is
/// text, else an excerpt of the answer.
fn detail(body: &str) -> String {
    #[derive(Deserialize)]
    struct Detail {
        detail: serde_json::Value,
    }
    match serde_json::from_str::<Detail>(body) {
        Ok(Detail { detail: serde_json::Value::String(text) }) => text,
        Ok(Detail { detail }) => crate::measure::ingest::excerpt(detail.to_string().as_bytes()),
        Err(_) => crate::measure::ingest::excerpt(body.as_bytes()),
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    body: &str,
    method: &str,
    url: &str,
) -> Result<T, DevonError> {
    serde_json::from_str(body).map_err(|error| DevonError::BadResponse {
        request: format!("{method} {url}"),
        detail: format!("{error}: {}", crate::measure::ingest::excerpt(body.as_bytes())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detail_of_an_error_is_devons_text_or_an_excerpt() {
        assert_eq!(detail(r#"{"detail": "Model not found: x"}"#), "Model not found: x");
        let listed = detail(r#"{"detail": [{"msg": "field required"}]}"#);
        assert!(listed.contains("field required"), "{listed}");
        assert_eq!(detail("<html>\n bad gateway </html>"), "<html> bad gateway </html>");
    }

    #[test]
    fn a_url_with_credentials_is_refused_without_showing_them() {
        let error = HttpDevon::new("http://user:secret@h:9/", None).unwrap_err();
        let text = error.to_string();
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("devon_api_key"), "{text}");
        let devon = HttpDevon::new("http://127.0.0.1:9/", Some("dk_hidden".into())).unwrap();
        assert_eq!(devon.url(), "http://127.0.0.1:9");
        assert!(!format!("{devon:?}").contains("dk_hidden"));
    }
}
