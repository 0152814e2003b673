//! The bus settings. Their defaults are `ops/nats/stream.toml`, compiled in, so the definition
//! kept in ops/ is the one the relay applies unless the configuration overrides a key.

use serde::{Deserialize, Serialize};

/// The stream definition and relay tuning (`[bus]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    pub stream: String,
    pub subject_prefix: String,
    pub duplicate_window_secs: u64,
    pub max_age_days: u64,
    pub storage: StorageKind,
    pub replicas: usize,
    pub batch: u32,
    pub ack_timeout_ms: u64,
    pub retry_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    File,
    Memory,
}

/// The definition kept in ops/.
pub const STREAM_DEFINITION: &str = include_str!("../../../ops/nats/stream.toml");

impl Default for BusConfig {
    fn default() -> Self {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(STREAM_DEFINITION))
            .extract()
            .expect("ops/nats/stream.toml is a valid bus definition (checked by a test)")
    }
}

impl BusConfig {
    /// What the stream captures: everything of this contract version under the prefix.
    pub fn stream_subjects(&self) -> String {
        format!(
            "{}.{}.>",
            self.subject_prefix,
            schemas::public::CONTRACT_VERSION
        )
    }

    /// Checks what the server would refuse later with a less clear message.
    pub fn validate(&self) -> Result<(), String> {
        let token_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !token_ok(&self.stream) {
            return Err(format!(
                "bus.stream `{}` must be letters, digits, - and _",
                self.stream
            ));
        }
        if !self.subject_prefix.split('.').all(token_ok) {
            return Err(format!(
                "bus.subject_prefix `{}` must be dot-separated tokens of letters, digits, - and _",
                self.subject_prefix
            ));
        }
        if self.batch == 0 || self.batch > 10_000 {
            return Err("bus.batch must be between 1 and 10000".into());
        }
        if self.duplicate_window_secs == 0 {
            return Err("bus.duplicate_window_secs must be at least 1: re-publishes after a crash rely on it".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definition_in_ops_parses_and_is_valid() {
        let c = BusConfig::default();
        assert_eq!(c.stream, "LINKAGE_EVENTS");
        assert_eq!(c.stream_subjects(), "linkage.v1.>");
        c.validate().expect("valid");
    }

    #[test]
    fn a_bad_prefix_is_refused_with_its_name() {
        let c = BusConfig {
            subject_prefix: "linkage.*".into(),
            ..BusConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("subject_prefix"));
    }
}
