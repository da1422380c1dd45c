//! Waiting until a started server serves, and reading a failed start-up
//! from its log. Everything here works against a base URL and an
//! [`EngineHandle`], so a native process and a container are waited on the
//! same way: the handle says whether the server has ended and holds its log.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{MemorySign, ModelCheck, ServerPlan};
use crate::engine::{EngineError, EngineHandle};

/// Waits until the server of `plan` is up at `base_url`, serves the model
/// asked for, and answers a one-token request, within `waited`; a native
/// server must also own its port (`port`), which a container's cannot show.
pub async fn ready(
    plan: &ServerPlan,
    handle: &mut EngineHandle,
    base_url: &str,
    port: u16,
    waited: Duration,
) -> Result<(), EngineError> {
    let deadline = Instant::now() + waited;
    let mut alive = Watched { handle, signs: plan.memory_signs, settings: &plan.memory_settings };
    wait_until_up(base_url, plan.ready_path, &mut alive, deadline, waited).await?;
    if let Some(process) = alive.handle.process() {
        crate::engine::llama_cpp::check_port_owner(process, port)?;
    }
    check_served_model(base_url, &plan.model_check).await?;
    wait_until_serving(base_url, &plan.served_model, &mut alive, deadline, waited).await
}

/// A started server and the memory errors its log may show.
struct Watched<'a> {
    handle: &'a mut EngineHandle,
    signs: &'static [MemorySign],
    settings: &'a str,
}

impl Watched<'_> {
    /// `Err` with the reason, read from its log, when the server has ended.
    async fn check(&mut self) -> Result<(), EngineError> {
        let Some(status) = self.handle.exited().await else { return Ok(()) };
        let log = self.handle.log_tail(LOG_SEARCH_LINES);
        Err(out_of_memory(self.signs, self.settings, &log)
            .unwrap_or_else(|| EngineError::Died { status, log_tail: last_lines(&log, 20) }))
    }

    /// The error for a server still not ready after `waited`.
    fn not_ready(&self, waited: Duration) -> EngineError {
        let log = self.handle.log_tail(LOG_SEARCH_LINES);
        out_of_memory(self.signs, self.settings, &log)
            .unwrap_or_else(|| EngineError::NotReady { waited, log_tail: last_lines(&log, 20) })
    }
}

/// How far back in the log a memory error is looked for.
const LOG_SEARCH_LINES: usize = 400;

/// Polls `GET {base_url}{path}` until it answers 2xx.
async fn wait_until_up(
    base_url: &str,
    path: &str,
    alive: &mut Watched<'_>,
    deadline: Instant,
    waited: Duration,
) -> Result<(), EngineError> {
    let client = http_client(Duration::from_secs(5))?;
    let url = format!("{base_url}{path}");
    poll(alive, deadline, waited, || get_ok(&client, &url)).await
}

/// Sends one-token chat requests until one succeeds: some servers answer
/// their health check before the engine behind them serves.
async fn wait_until_serving(
    base_url: &str,
    model: &str,
    alive: &mut Watched<'_>,
    deadline: Instant,
    waited: Duration,
) -> Result<(), EngineError> {
    let client = http_client(Duration::from_secs(60))?;
    let url = format!("{base_url}/v1/chat/completions");
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 1,
        "temperature": 0,
        "stream": false,
    });
    poll(alive, deadline, waited, || one_token(&client, &url, &body)).await
}

async fn poll<F, Fut>(
    alive: &mut Watched<'_>,
    deadline: Instant,
    waited: Duration,
    mut attempt: F,
) -> Result<(), EngineError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut delay = Duration::from_millis(50);
    loop {
        alive.check().await?;
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(reason) => tracing::debug!("engine not ready yet: {reason}"),
        }
        // The attempt may have failed because the server just died.
        alive.check().await?;
        if Instant::now() > deadline {
            return Err(alive.not_ready(waited));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

fn http_client(timeout: Duration) -> Result<reqwest::Client, EngineError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|error| EngineError::Io(std::io::Error::other(error)))
}

async fn get_ok(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let response = client.get(url).send().await.map_err(|error| error.to_string())?;
    let status = response.status();
    if status.is_success() { Ok(()) } else { Err(format!("{url}: HTTP {}", status.as_u16())) }
}

async fn one_token(client: &reqwest::Client, url: &str, body: &Value) -> Result<(), String> {
    let response = client.post(url).json(body).send().await.map_err(|error| error.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|error| error.to_string())?;
    let answered = serde_json::from_str::<Value>(&text)
        .is_ok_and(|reply| reply["choices"].as_array().is_some_and(|c| !c.is_empty()));
    if status.is_success() && answered {
        return Ok(());
    }
    let excerpt: String = text.chars().take(200).collect();
    Err(format!("one-token request: HTTP {}: {excerpt}", status.as_u16()))
}

/// Checks that the server serves the model asked for.
pub async fn check_served_model(base_url: &str, check: &ModelCheck) -> Result<(), EngineError> {
    match check {
        ModelCheck::StartedWith => Ok(()),
        ModelCheck::Listed(expected) => {
            let served = crate::engine::served_models(base_url).await?;
            if served.contains(expected) {
                Ok(())
            } else {
                Err(EngineError::WrongModel { expected: expected.clone(), served })
            }
        }
        ModelCheck::Loaded(expected) => {
            let url = format!("{base_url}/v1/model");
            let loaded = json_field(&url, "id").await.ok_or_else(|| EngineError::Unreachable {
                url: url.clone(),
                reason: "no loaded model id in the answer".into(),
            })?;
            if &loaded == expected {
                Ok(())
            } else {
                Err(EngineError::WrongModel { expected: expected.clone(), served: vec![loaded] })
            }
        }
    }
}

/// A text field of the JSON object `GET url` answers, if any.
pub async fn json_field(url: &str, field: &str) -> Option<String> {
    let client = http_client(Duration::from_secs(10)).ok()?;
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    body[field].as_str().map(str::to_owned).filter(|text| !text.is_empty())
}

/// The out-of-memory error `log` shows, from its last line that matches a sign.
pub fn out_of_memory(signs: &[MemorySign], settings: &str, log: &str) -> Option<EngineError> {
    let lines: Vec<&str> = log.lines().collect();
    let (at, sign) = lines.iter().enumerate().rev().find_map(|(at, line)| {
        signs.iter().find(|sign| line.contains(sign.needle)).map(|sign| (at, sign))
    })?;
    let hint = if settings.is_empty() {
        sign.hint.to_owned()
    } else {
        format!("{} (this run: {settings})", sign.hint)
    };
    Some(EngineError::OutOfMemory {
        cause: sign.cause.to_owned(),
        hint,
        log_tail: lines[at.saturating_sub(19)..=at].join("\n"),
    })
}

fn last_lines(log: &str, count: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNS: &[MemorySign] = &[
        MemorySign { needle: "KV cache", cause: "kv", hint: "lower `context_size`" },
        MemorySign { needle: "out of memory", cause: "oom", hint: "use a smaller quant" },
    ];

    #[test]
    fn the_last_matching_line_decides_and_ends_the_tail() {
        let log = "loading\nCUDA out of memory\nmore\n\
                   ValueError: max seq len larger than KV cache\n\
                   RuntimeError: Engine core initialization failed\n";
        let Some(EngineError::OutOfMemory { cause, hint, log_tail }) =
            out_of_memory(SIGNS, "max-model-len 4096", log)
        else {
            panic!("not classified");
        };
        assert_eq!(cause, "kv");
        assert_eq!(hint, "lower `context_size` (this run: max-model-len 4096)");
        assert!(log_tail.ends_with("larger than KV cache"), "{log_tail}");
        assert!(out_of_memory(SIGNS, "", "Segmentation fault\n").is_none());
    }
}
