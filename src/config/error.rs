use std::path::PathBuf;

/// Every variant that concerns a key names it in dotted form (`session.idle_timeout`), so the
/// operator can find the line to fix; `origin` says which layer the bad value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse or is out of range. `value` is shown as given (secrets are
    /// redacted); `origin` is e.g. `environment variable RINGRELAY_SESSION_IDLE_TIMEOUT`.
    #[error("{key} = {value} (from {origin}): {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
        origin: String,
    },
    /// A key in the file that ringrelay does not know. Refused rather than ignored, because a
    /// misspelt key would otherwise leave the default silently in force.
    #[error("unknown key {key} in {}{}", path.display(), did_you_mean(suggestion))]
    UnknownKey {
        key: String,
        path: PathBuf,
        suggestion: Option<String>,
    },
    /// The config file (`key: None`) or a file a key points at could not be read.
    #[error("{}cannot read {}: {source}", key_prefix(key), path.display())]
    Io {
        key: Option<String>,
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax error; `message` carries toml's line and column.
    #[error("cannot parse {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
}

impl ConfigError {
    /// The dotted key the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } | ConfigError::UnknownKey { key, .. } => Some(key),
            ConfigError::Io { key, .. } => key.as_deref(),
            ConfigError::Parse { .. } => None,
        }
    }
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

fn key_prefix(key: &Option<String>) -> String {
    match key {
        Some(k) => format!("{k}: "),
        None => "config file: ".to_string(),
    }
}
