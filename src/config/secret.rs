//! Secrets from the config or the environment, never printed or stored.

use std::fmt;

/// A credential. Its `Debug` and `Display` never show the value, and it has no
/// `Serialize`, so it cannot end up in output or in the store by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    origin: SecretOrigin,
}

/// Where a secret came from; reported instead of the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOrigin {
    /// Written in the campaign file.
    File,
    /// Read from the named environment variable.
    Env(&'static str),
}

impl Secret {
    /// Takes the value written in the file if any, else the environment variable.
    pub fn resolve(from_file: Option<String>, env_var: &'static str) -> Option<Secret> {
        let from_file = from_file.filter(|value| !value.trim().is_empty());
        if let Some(value) = from_file {
            return Some(Secret { value, origin: SecretOrigin::File });
        }
        let value = std::env::var(env_var).ok().filter(|value| !value.trim().is_empty())?;
        Some(Secret { value, origin: SecretOrigin::Env(env_var) })
    }

    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where it came from.
    pub fn origin(&self) -> SecretOrigin {
        self.origin
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<redacted>, {:?})", self.origin)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin {
            SecretOrigin::File => f.write_str("<set in the config>"),
            SecretOrigin::Env(name) => write!(f, "<from ${name}>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_shows_its_value() {
        let secret = Secret::resolve(Some("hf_very_secret".into()), "KITT_TEST_UNSET_VAR").unwrap();
        assert!(!format!("{secret:?}").contains("hf_very_secret"));
        assert!(!format!("{secret}").contains("hf_very_secret"));
        assert_eq!(secret.expose(), "hf_very_secret");
    }

    #[test]
    fn blank_file_value_falls_back_to_nothing_when_env_is_unset() {
        assert!(Secret::resolve(Some("  ".into()), "KITT_TEST_UNSET_VAR").is_none());
    }
}
