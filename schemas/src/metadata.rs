//! The metadata of a stored event: who caused it, when it happened and was received, which command
//! and request it came from, and what a retry with the same idempotency key must get back.
//!
//! Events store their metadata as a flat map of strings (the `metadata` column). `EventMetadata`
//! is its one typed form: `to_map` and `from_map` are the only code that knows the keys, and every
//! reader and writer goes through them. The database also reads one key, `idempotency_scope`, in
//! a generated column (ops/migrations): `keys::IDEMPOTENCY_SCOPE` names it.
//!
//! Fields that are `Option` were absent from some events as they were stored (an export batch
//! recorded from the command line has no agency; benchmark seed events carry only the command and
//! the actor), and a stored shape is never edited. Every command through the API sets them all.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{ActorId, AgencyId, Role};

/// The stored keys, written and read only by `EventMetadata`.
pub mod keys {
    pub const COMMAND: &str = "command";
    pub const COMMAND_ID: &str = "command_id";
    pub const CAUSATION_ID: &str = "causation_id";
    pub const CORRELATION_ID: &str = "correlation_id";
    pub const ACTOR_ID: &str = "actor_id";
    pub const ACTOR_ROLE: &str = "actor_role";
    pub const ACTOR_AGENCY: &str = "actor_agency";
    pub const OCCURRED_AT: &str = "occurred_at";
    pub const RECEIVED_AT: &str = "received_at";
    pub const IDEMPOTENCY_KEY: &str = "idempotency_key";
    pub const IDEMPOTENCY_SCOPE: &str = "idempotency_scope";
    pub const REQUEST_HASH: &str = "request_hash";
    pub const REPLY_STATUS: &str = "reply_status";
    pub const REPLY: &str = "reply";
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventMetadata {
    /// The command's name (`LogContact`), or what recorded the event (`RecordBillingBatch`).
    pub command: Option<String>,
    /// The id of the command; also the causation id of its events.
    pub command_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    /// Ties together everything one piece of work caused (`X-Correlation-Id`, or a new id).
    pub correlation_id: Option<String>,
    pub actor_id: Option<ActorId>,
    pub actor_role: Option<Role>,
    pub actor_agency: Option<AgencyId>,
    /// When the activity happened in the world (a service date, or when the command arrived).
    pub occurred_at: Option<DateTime<Utc>>,
    /// When the server received the command, by its clock.
    pub received_at: Option<DateTime<Utc>>,
    /// Set when the request carried an `Idempotency-Key`.
    pub idempotency: Option<Idempotency>,
}

/// What a retry with the same idempotency key is answered with, committed with the events.
#[derive(Debug, Clone, PartialEq)]
pub struct Idempotency {
    pub key: String,
    /// The key qualified by actor and route: what the database looks requests up by.
    pub scope: String,
    /// The fingerprint of the first request (route and body); another body is refused.
    pub request_hash: String,
    pub reply_status: u16,
    /// The reply's JSON text, as stored: parsed only when a retry is answered with it (every
    /// projection reads every event's metadata, and none reads this).
    pub reply: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored event metadata `{key}` is unreadable: {detail}")]
pub struct MetadataError {
    pub key: &'static str,
    pub detail: String,
}

impl EventMetadata {
    /// The stored form.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        };
        put(keys::COMMAND, self.command.clone());
        put(keys::COMMAND_ID, self.command_id.map(|u| u.to_string()));
        put(keys::CAUSATION_ID, self.causation_id.map(|u| u.to_string()));
        put(keys::CORRELATION_ID, self.correlation_id.clone());
        put(
            keys::ACTOR_ID,
            self.actor_id.as_ref().map(ToString::to_string),
        );
        put(
            keys::ACTOR_ROLE,
            self.actor_role.map(|r| r.as_str().to_owned()),
        );
        put(
            keys::ACTOR_AGENCY,
            self.actor_agency.as_ref().map(ToString::to_string),
        );
        put(keys::OCCURRED_AT, self.occurred_at.map(|t| t.to_rfc3339()));
        put(keys::RECEIVED_AT, self.received_at.map(|t| t.to_rfc3339()));
        if let Some(i) = &self.idempotency {
            put(keys::IDEMPOTENCY_KEY, Some(i.key.clone()));
            put(keys::IDEMPOTENCY_SCOPE, Some(i.scope.clone()));
            put(keys::REQUEST_HASH, Some(i.request_hash.clone()));
            put(keys::REPLY_STATUS, Some(i.reply_status.to_string()));
            put(keys::REPLY, Some(i.reply.clone()));
        }
        m
    }

    /// The typed form of a stored map. Keys it does not know are ignored; a known key whose value
    /// does not parse is an error (the store reports it as corrupt).
    pub fn from_map(m: &HashMap<String, String>) -> Result<Self, MetadataError> {
        fn parse<T>(
            m: &HashMap<String, String>,
            key: &'static str,
            f: impl FnOnce(&str) -> Result<T, String>,
        ) -> Result<Option<T>, MetadataError> {
            m.get(key)
                .map(|v| f(v).map_err(|detail| MetadataError { key, detail }))
                .transpose()
        }
        let text = |s: &str| Ok::<_, String>(s.to_owned());
        let uuid = |s: &str| Uuid::parse_str(s).map_err(|e| e.to_string());
        let time = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| e.to_string())
        };
        let idempotency = match parse(m, keys::IDEMPOTENCY_SCOPE, text)? {
            None => None,
            Some(scope) => {
                let need = |key: &'static str| {
                    m.get(key).cloned().ok_or(MetadataError {
                        key,
                        detail: "missing beside idempotency_scope".into(),
                    })
                };
                Some(Idempotency {
                    key: need(keys::IDEMPOTENCY_KEY)?,
                    scope,
                    request_hash: need(keys::REQUEST_HASH)?,
                    reply_status: need(keys::REPLY_STATUS)?.parse().map_err(
                        |e: std::num::ParseIntError| MetadataError {
                            key: keys::REPLY_STATUS,
                            detail: e.to_string(),
                        },
                    )?,
                    reply: need(keys::REPLY)?,
                })
            }
        };
        Ok(Self {
            command: parse(m, keys::COMMAND, text)?,
            command_id: parse(m, keys::COMMAND_ID, uuid)?,
            causation_id: parse(m, keys::CAUSATION_ID, uuid)?,
            correlation_id: parse(m, keys::CORRELATION_ID, text)?,
            actor_id: parse(m, keys::ACTOR_ID, |s| {
                ActorId::parse(s).map_err(|e| e.to_string())
            })?,
            actor_role: parse(m, keys::ACTOR_ROLE, str::parse)?,
            actor_agency: parse(m, keys::ACTOR_AGENCY, |s| {
                AgencyId::parse(s).map_err(|e| e.to_string())
            })?,
            occurred_at: parse(m, keys::OCCURRED_AT, time)?,
            received_at: parse(m, keys::RECEIVED_AT, time)?,
            idempotency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> EventMetadata {
        EventMetadata {
            command: Some("LogContact".into()),
            command_id: Some(Uuid::now_v7()),
            causation_id: Some(Uuid::now_v7()),
            correlation_id: Some("corr-1".into()),
            actor_id: Some(ActorId::parse("cm-ada").unwrap()),
            actor_role: Some(Role::CaseManager),
            actor_agency: Some(AgencyId::parse("north").unwrap()),
            occurred_at: Some("2026-10-31T23:30:00Z".parse().unwrap()),
            received_at: Some("2026-11-01T08:00:00Z".parse().unwrap()),
            idempotency: Some(Idempotency {
                key: "k1".into(),
                scope: "cm-ada|POST /v1/cases|k1".into(),
                request_hash: "ab".repeat(32),
                reply_status: 201,
                reply: r#"{"activity_id":"x"}"#.into(),
            }),
        }
    }

    #[test]
    fn the_map_round_trips() {
        let m = full();
        assert_eq!(EventMetadata::from_map(&m.to_map()).unwrap(), m);
        let thin = EventMetadata {
            command: Some("BenchSeed".into()),
            ..EventMetadata::default()
        };
        assert_eq!(thin.to_map().len(), 1);
        assert_eq!(EventMetadata::from_map(&thin.to_map()).unwrap(), thin);
    }

    #[test]
    fn the_stored_keys_are_the_ones_the_database_and_old_events_use() {
        let m = full().to_map();
        let mut stored: Vec<&str> = m.keys().map(String::as_str).collect();
        stored.sort();
        assert_eq!(
            stored,
            [
                "actor_agency",
                "actor_id",
                "actor_role",
                "causation_id",
                "command",
                "command_id",
                "correlation_id",
                "idempotency_key",
                "idempotency_scope",
                "occurred_at",
                "received_at",
                "reply",
                "reply_status",
                "request_hash"
            ]
        );
    }

    #[test]
    fn an_unreadable_value_names_its_key() {
        let mut m = full().to_map();
        m.insert("actor_role".into(), "janitor".into());
        assert_eq!(
            EventMetadata::from_map(&m).unwrap_err().key,
            keys::ACTOR_ROLE
        );
        let mut m = full().to_map();
        m.remove("reply");
        assert_eq!(EventMetadata::from_map(&m).unwrap_err().key, keys::REPLY);
    }
}
