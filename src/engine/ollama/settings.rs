//! How kitt's engine parameters become Ollama's: the `keep_alive` setting,
//! the request `options`, the server's environment, and what is recorded
//! for comparability. Pure functions of the launch; nothing here talks to
//! a server.
//!
//! | kitt                      | Ollama                                               |
//! |---------------------------|------------------------------------------------------|
//! | `context_size` over slots | `options.num_ctx` = context_size / slots, every request |
//! | `parallel` (slots)        | `OLLAMA_NUM_PARALLEL`                                |
//! | `threads`                 | `options.num_thread`                                 |
//! | `gpu_layers`              | `options.num_gpu` (-1: every layer, Ollama's 999)    |
//! | `keep_alive` (default -1) | `keep_alive` in every request, `OLLAMA_KEEP_ALIVE`   |
//! | `extra_args`              | `OLLAMA_*=value` environment of `ollama serve`       |

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::super::Launch;

/// `keep_alive` when the config sets none: the model stays loaded for the whole run.
pub const DEFAULT_KEEP_ALIVE: &str = "-1";

/// The `num_gpu` that offloads every layer (Ollama caps it at the model's layer count).
const ALL_LAYERS: i64 = 999;

/// Checks a `keep_alive` value and returns it as Ollama's API takes it: a
/// number of seconds, or a Go duration string (`30m`, `1h30m`); negative
/// means never unload. Zero is refused: it unloads the model after every
/// request, so every request would pay a load.
pub fn keep_alive(text: &str) -> Result<Value, String> {
    let text = text.trim();
    let explain = || {
        format!(
            "must be a duration such as `30m`, `1h30m` or `3600`, or `-1` to never unload; \
             got `{text}`"
        )
    };
    let value = if let Ok(seconds) = text.parse::<i64>() {
        (seconds != 0).then(|| Value::from(seconds))
    } else {
        let zero = is_go_duration(text).ok_or_else(explain)?;
        (!zero).then(|| Value::from(text))
    };
    value.ok_or_else(|| {
        format!("`{text}` would unload the model after every request; use a duration or `-1`")
    })
}

/// `Some(is_zero)` when `text` is a Go duration (`-1h30m`, `1.5s`, `250ms`).
fn is_go_duration(text: &str) -> Option<bool> {
    const UNITS: &[&str] = &["ns", "us", "µs", "ms", "s", "m", "h"];
    let mut rest = text.strip_prefix('-').or_else(|| text.strip_prefix('+')).unwrap_or(text);
    if rest.is_empty() {
        return None;
    }
    let mut zero = true;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        zero &= number == 0.0;
        rest = &rest[digits..];
        // Longest unit first, so `ms` is not read as `m` followed by `s`.
        let unit = UNITS.iter().filter(|unit| rest.starts_with(**unit)).max_by_key(|u| u.len())?;
        rest = &rest[unit.len()..];
    }
    Some(zero)
}

/// Checks `extra_args` for Ollama: each must be `OLLAMA_NAME=value`, set in
/// the environment of `ollama serve` (which takes no flags).
pub fn extra_environment(args: &[String]) -> Result<Vec<(String, String)>, String> {
    args.iter()
        .map(|arg| {
            let (name, value) = arg.split_once('=').unwrap_or((arg, ""));
            let valid = name.starts_with("OLLAMA_")
                && name.len() > "OLLAMA_".len()
                && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && arg.contains('=');
            if !valid {
                return Err(format!(
                    "`{arg}`: `ollama serve` takes no flags; give Ollama settings as \
                     OLLAMA_NAME=value environment entries, e.g. OLLAMA_FLASH_ATTENTION=1"
                ));
            }
            if name == "OLLAMA_HOST" {
                return Err("`OLLAMA_HOST` is chosen by kitt (127.0.0.1 and a free port)".into());
            }
            Ok((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The context each request gets: the run's context split over its slots,
/// because Ollama allocates `num_ctx` for each of `OLLAMA_NUM_PARALLEL` slots.
pub fn num_ctx(launch: &Launch<'_>) -> u32 {
    (launch.context_size / launch.slots.max(1)).max(1)
}

/// The `options` object sent with every request (and the load).
pub fn options(launch: &Launch<'_>) -> Map<String, Value> {
    let mut options = Map::new();
    options.insert("num_ctx".into(), Value::from(num_ctx(launch)));
    if let Some(threads) = launch.config.threads {
        options.insert("num_thread".into(), Value::from(threads));
    }
    if let Some(layers) = launch.config.gpu_layers {
        let layers = if layers < 0 { ALL_LAYERS } else { i64::from(layers) };
        options.insert("num_gpu".into(), Value::from(layers));
    }
    options
}

/// The fields added to every request: `options` and `keep_alive`.
pub fn request_extras(options: &Map<String, Value>, keep_alive: &Value) -> Map<String, Value> {
    let mut extras = Map::new();
    extras.insert("options".into(), Value::Object(options.clone()));
    extras.insert("keep_alive".into(), keep_alive.clone());
    extras
}

/// `keep_alive` as the server's environment takes it.
pub fn keep_alive_env(keep_alive: &Value) -> String {
    match keep_alive {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The environment of `ollama serve`, without `OLLAMA_HOST`; `extra` last so it wins.
pub fn environment(
    launch: &Launch<'_>,
    keep_alive: &Value,
    extra: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("OLLAMA_NUM_PARALLEL".to_owned(), launch.slots.max(1).to_string()),
        ("OLLAMA_KEEP_ALIVE".to_owned(), keep_alive_env(keep_alive)),
        // Only the model under test may occupy memory.
        ("OLLAMA_MAX_LOADED_MODELS".to_owned(), "1".to_owned()),
        // Requests always carry num_ctx; this covers anything that does not.
        ("OLLAMA_CONTEXT_LENGTH".to_owned(), num_ctx(launch).to_string()),
        // Starting a server must not prune the user's store.
        ("OLLAMA_NOPRUNE".to_owned(), "1".to_owned()),
    ];
    env.retain(|(name, _)| !extra.iter().any(|(given, _)| given == name));
    env.extend(extra);
    env
}

/// What was done so the numbers compare with other engines', and what was not.
pub fn comparability(launch: &Launch<'_>, keep_alive: &Value) -> BTreeMap<String, String> {
    let per_request = num_ctx(launch);
    let slots = launch.slots.max(1);
    BTreeMap::from([
        ("api".to_owned(), "Ollama native /api/chat; server counters kept per request".to_owned()),
        (
            "context_size".to_owned(),
            format!(
                "{} ({per_request} num_ctx per request × {slots} OLLAMA_NUM_PARALLEL slots)",
                per_request * slots
            ),
        ),
        (
            "num_ctx".to_owned(),
            format!("{per_request} in every request's options (no silent truncation)"),
        ),
        (
            "keep_alive".to_owned(),
            format!("{} on the server and in every request", keep_alive_env(keep_alive)),
        ),
        (
            "output_length".to_owned(),
            "not pinned: Ollama has no ignore_eos; num_predict caps output at max_tokens \
             and a reply may end earlier"
                .to_owned(),
        ),
        ("warm_up".to_owned(), "model loaded and one request answered before measuring".to_owned()),
    ])
}

/// The launch's settings as recorded in the result's parameters.
pub fn recorded(options: &Map<String, Value>, keep_alive: &Value) -> BTreeMap<String, String> {
    let mut recorded: BTreeMap<String, String> =
        options.iter().map(|(key, value)| (key.clone(), value.to_string())).collect();
    recorded.insert("keep_alive".into(), keep_alive_env(keep_alive));
    recorded
}

/// The load request: no messages (Ollama then only loads the model), with
/// the options every later request carries so the model is not reloaded.
pub fn load_body(model: &str, options: &Map<String, Value>, keep_alive: &Value) -> Value {
    json!({
        "model": model,
        "messages": [],
        "options": options,
        "keep_alive": keep_alive,
        "stream": false,
    })
}

/// The warm-up request: one short answer on the loaded model.
pub fn warm_up_body(model: &str, options: &Map<String, Value>, keep_alive: &Value) -> Value {
    let mut options = options.clone();
    options.insert("num_predict".into(), Value::from(8));
    json!({
        "model": model,
        "messages": [{ "role": "user", "content": "Say hello." }],
        "options": options,
        "keep_alive": keep_alive,
        "stream": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_accepts_seconds_and_durations_and_refuses_zero() {
        assert_eq!(keep_alive("-1"), Ok(Value::from(-1)));
        assert_eq!(keep_alive(" 3600 "), Ok(Value::from(3600)));
        assert_eq!(keep_alive("30m"), Ok(Value::from("30m")));
        assert_eq!(keep_alive("1h30m"), Ok(Value::from("1h30m")));
        assert_eq!(keep_alive("1.5h"), Ok(Value::from("1.5h")));
        assert_eq!(keep_alive("250ms"), Ok(Value::from("250ms")));
        assert_eq!(keep_alive("-1m"), Ok(Value::from("-1m")));
        for zero in ["0", "0s", "0m0s"] {
            let error = keep_alive(zero).unwrap_err();
            assert!(error.contains("unload the model after every request"), "{error}");
        }
        for bad in ["", "-", "forever", "m", "30x", "1h-5m"] {
            let error = keep_alive(bad).unwrap_err();
            assert!(error.contains("must be a duration such as `30m`"), "{bad}: {error}");
        }
    }

    #[test]
    fn extra_args_are_ollama_environment_entries() {
        let env = extra_environment(&["OLLAMA_FLASH_ATTENTION=1".into()]).unwrap();
        assert_eq!(env, [("OLLAMA_FLASH_ATTENTION".to_owned(), "1".to_owned())]);
        let flag = extra_environment(&["--verbose".into()]).unwrap_err();
        assert!(flag.contains("takes no flags"), "{flag}");
        assert!(extra_environment(&["OLLAMA_DEBUG".into()]).is_err(), "no value");
        assert!(extra_environment(&["OLLAMA_HOST=0.0.0.0".into()]).unwrap_err().contains("kitt"));
    }
}
