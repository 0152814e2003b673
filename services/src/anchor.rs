//! Anchors of the audit trail outside the database, so that someone who can write the database
//! cannot rewrite an event and every later link unnoticed.
//!
//! At an interval and at shutdown the server signs an anchor with an Ed25519 key kept outside
//! the database (a file of mode 0600 holding the 32-byte seed in hex) and appends it, one JSON
//! line, to a file the database administrator does not write (`[audit_anchor] out`). An anchor
//! names, for every case whose trail grew since the anchor before, the trail's newest entry:
//! its sequence and hash. Each anchor carries its number and the SHA-256 of the line before it,
//! so an anchor taken out of the middle, reordered or edited breaks the file's own chain.
//!
//! `linkage audit verify --anchors FILE --public-key HEX` checks every anchor's signature and
//! place, then recomputes each anchored case's chain from the stored events up to the anchored
//! sequence: an event rewritten in the database no longer gives the signed hash, however the
//! trail was recomputed after it.
//!
//! Anchors cover the audit projection up to its checkpoint: an event is anchored at the first
//! anchor after the projection applied it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use projections::audit::{chain, chain_input, GENESIS};
use projections::log::LogPosition;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::store::{Store, Work};

/// `[audit_anchor]`: where the key and the anchors are, and how often to anchor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorConfig {
    /// The signing key: a file of mode 0600 that `linkage audit keygen` wrote.
    pub key_file: PathBuf,
    /// The append-only file the anchors go to, one JSON line each.
    pub out: PathBuf,
    /// Seconds between anchors (and one at shutdown).
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
}

fn default_interval() -> u64 {
    60
}

#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("anchor key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("anchor file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The newest entry of a case's trail at an anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub case_id: String,
    pub sequence: u64,
    pub hash: String,
}

/// What an anchor signs (the JSON of this struct, fields in this order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorBody {
    /// 1, 2, 3, ... in the file.
    pub seq: u64,
    /// SHA-256 (hex) of the previous anchor's line; `GENESIS` for the first.
    pub prev: String,
    pub at: DateTime<Utc>,
    /// The audit projection's checkpoint the anchor covers.
    pub through_txid: i64,
    pub through_position: i64,
    pub heads: Vec<Head>,
    /// The key that signed it (hex).
    pub public_key: String,
}

/// One line of the anchor file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Anchor {
    #[serde(flatten)]
    pub body: AnchorBody,
    /// Ed25519 over the body's JSON (hex).
    pub signature: String,
}

/// Writes a new signing key to `path` (mode 0600; an existing file is never replaced) and
/// returns its public key in hex.
pub fn generate_key(path: &Path) -> Result<String, AnchorError> {
    let key_error = |message: String| AnchorError::Key {
        path: path.to_owned(),
        message,
    };
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| key_error(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| key_error(format!("cannot create it: {e}")))?;
    writeln!(file, "{}", hex::encode(seed)).map_err(|e| key_error(e.to_string()))?;
    Ok(hex::encode(key.verifying_key().to_bytes()))
}

/// Reads the signing key at `path`, refusing a file that others than its owner may read.
pub fn load_key(path: &Path) -> Result<SigningKey, AnchorError> {
    let key_error = |message: String| AnchorError::Key {
        path: path.to_owned(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| key_error(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(key_error(
                "group or others may read it; chmod 600 it first".into(),
            ));
        }
    }
    let _ = meta;
    let text = std::fs::read_to_string(path).map_err(|e| key_error(e.to_string()))?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| key_error("not a 32-byte seed in hex".into()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Parses a public key given in hex.
pub fn public_key(hex_key: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("a public key is 32 bytes in hex")?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| e.to_string())
}

fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// Signs anchors and appends them to the anchor file.
pub struct Anchorer {
    key: SigningKey,
    out: PathBuf,
    seq: u64,
    prev: String,
    through: LogPosition,
}

impl Anchorer {
    /// Continues the anchor file at `out` (its last line gives the number, the link and the
    /// checkpoint to go on from), or starts it.
    pub fn open(key: SigningKey, out: &Path) -> Result<Self, AnchorError> {
        let file_error = |message: String| AnchorError::File {
            path: out.to_owned(),
            message,
        };
        let mut anchorer = Self {
            key,
            out: out.to_owned(),
            seq: 0,
            prev: GENESIS.to_owned(),
            through: LogPosition::START,
        };
        if let Ok(text) = std::fs::read_to_string(out) {
            if let Some(line) = text.lines().rev().find(|l| !l.trim().is_empty()) {
                let last: Anchor = serde_json::from_str(line)
                    .map_err(|e| file_error(format!("its last line does not parse: {e}")))?;
                anchorer.seq = last.body.seq;
                anchorer.prev = line_hash(line);
                anchorer.through = LogPosition {
                    txid: last.body.through_txid,
                    position: last.body.through_position,
                };
            }
        }
        Ok(anchorer)
    }

    /// Anchors every case whose trail grew since the last anchor, up to the audit projection's
    /// checkpoint; None if none grew.
    pub async fn anchor(
        &mut self,
        store: &Store,
        now: DateTime<Utc>,
    ) -> Result<Option<Anchor>, AnchorError> {
        let target = store.checkpoint(Work::Api, "audit_trail").await?.at;
        let mut newest: BTreeMap<String, u64> = BTreeMap::new();
        let mut from = self.through;
        'read: loop {
            let batch = store.read_log(Work::Api, from, 5_000).await?;
            if batch.is_empty() {
                break;
            }
            for e in &batch {
                if (e.at.txid, e.at.position) > (target.txid, target.position) {
                    break 'read;
                }
                newest.insert(e.case_id.to_string(), e.event.sequence);
                from = e.at;
            }
        }
        if newest.is_empty() {
            return Ok(None);
        }
        let hashes = store.audit_hashes(&newest).await?;
        let heads = newest
            .into_iter()
            .map(|(case_id, sequence)| {
                let hash = hashes
                    .get(&(case_id.clone(), sequence))
                    .cloned()
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "the trail of {case_id} has no entry {sequence} below its checkpoint"
                        ))
                    })?;
                Ok(Head {
                    case_id,
                    sequence,
                    hash,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let body = AnchorBody {
            seq: self.seq + 1,
            prev: self.prev.clone(),
            at: now,
            through_txid: from.txid,
            through_position: from.position,
            heads,
            public_key: hex::encode(self.key.verifying_key().to_bytes()),
        };
        let signed = serde_json::to_vec(&body).expect("an anchor serializes");
        let anchor = Anchor {
            signature: hex::encode(self.key.sign(&signed).to_bytes()),
            body,
        };
        let line = serde_json::to_string(&anchor).expect("an anchor serializes");
        let file_error = |message: String| AnchorError::File {
            path: self.out.clone(),
            message,
        };
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.out)
            .map_err(|e| file_error(e.to_string()))?;
        writeln!(file, "{line}").map_err(|e| file_error(e.to_string()))?;
        file.sync_all().map_err(|e| file_error(e.to_string()))?;
        self.seq = anchor.body.seq;
        self.prev = line_hash(&line);
        self.through = from;
        Ok(Some(anchor))
    }
}

/// Where anchors are published besides the file when a bus is configured: a JetStream stream of
/// their own (`<stream>_ANCHORS`, subject `<prefix>.anchors`) that refuses deletes and purges, on
/// a server the database administrator does not run. An anchor the bus does not acknowledge is
/// kept and sent again after the next one (the file has it meanwhile).
pub struct AnchorBus {
    js: async_nats::jetstream::Context,
    subject: String,
    pending: Vec<String>,
}

impl AnchorBus {
    /// The stream anchors go to, for a bus configured as `bus`.
    pub fn stream_name(bus: &crate::bus::config::BusConfig) -> String {
        format!("{}_ANCHORS", bus.stream)
    }

    pub async fn connect(
        url: &str,
        bus: &crate::bus::config::BusConfig,
    ) -> Result<Self, crate::bus::BusError> {
        use async_nats::jetstream::stream;
        let client = crate::bus::relay::connect(url, "linkage-anchors").await?;
        let js = async_nats::jetstream::new(client);
        let subject = format!("{}.anchors", bus.subject_prefix);
        let name = Self::stream_name(bus);
        js.get_or_create_stream(stream::Config {
            name: name.clone(),
            description: Some("Linkage's signed audit anchors (append-only)".into()),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            num_replicas: bus.replicas,
            deny_delete: true,
            deny_purge: true,
            ..Default::default()
        })
        .await
        .map_err(|e| crate::bus::BusError::Stream {
            stream: name,
            detail: e.to_string(),
        })?;
        Ok(Self {
            js,
            subject,
            pending: Vec::new(),
        })
    }

    /// Publishes `anchor` after any not yet acknowledged, in order.
    pub async fn publish(&mut self, anchor: &Anchor) {
        self.pending
            .push(serde_json::to_string(anchor).expect("an anchor serializes"));
        while let Some(line) = self.pending.first() {
            let acked = match self
                .js
                .publish(self.subject.clone(), line.clone().into())
                .await
            {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match acked {
                Ok(()) => {
                    self.pending.remove(0);
                }
                Err(e) => {
                    tracing::warn!(error = %e, waiting = self.pending.len(),
                        "the bus did not take an audit anchor; it is sent again with the next");
                    return;
                }
            }
        }
    }
}

/// Anchors every `every` until `stop` turns true, publishing each to `bus` too; hands both back
/// for the last anchor.
pub async fn run(
    mut anchorer: Anchorer,
    mut bus: Option<AnchorBus>,
    store: std::sync::Arc<Store>,
    clock: crate::clock::Clock,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Anchorer, Option<AnchorBus>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return (anchorer, bus),
        }
        match anchorer.anchor(&store, clock.now()).await {
            Ok(Some(a)) => {
                tracing::info!(
                    seq = a.body.seq,
                    cases = a.body.heads.len(),
                    "audit anchor signed"
                );
                if let Some(bus) = bus.as_mut() {
                    bus.publish(&a).await;
                }
            }
            Ok(None) => {}
            // Nothing is lost: the next anchor covers everything since the last one written.
            Err(e) => tracing::warn!(error = %e, "could not write an audit anchor; retrying"),
        }
    }
}

/// What checking a store against an anchor file found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AnchorReport {
    pub anchors: usize,
    pub heads: usize,
    /// Each difference, in words naming the anchor and the case.
    pub broken: Vec<String>,
}

/// Checks the anchor file at `path` (every line signed by `key`, numbered from 1, each linked
/// to the line before) and the store against it: each anchored head is recomputed from the
/// stored events.
pub async fn verify(
    store: &Store,
    path: &Path,
    key: &VerifyingKey,
) -> Result<AnchorReport, AnchorError> {
    let text = std::fs::read_to_string(path).map_err(|e| AnchorError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut report = AnchorReport::default();
    let mut prev = GENESIS.to_owned();
    // Each case's newest anchored head: the chain up to it covers every earlier one.
    let mut heads: BTreeMap<String, Head> = BTreeMap::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let expected = i as u64 + 1;
        report.anchors += 1;
        let anchor: Anchor = match serde_json::from_str(line) {
            Ok(a) => a,
            Err(e) => {
                report
                    .broken
                    .push(format!("line {expected} is not an anchor: {e}"));
                prev = line_hash(line);
                continue;
            }
        };
        let body = &anchor.body;
        if body.seq != expected {
            report.broken.push(format!(
                "anchor {} is at place {expected}: an anchor before it is missing or out of order",
                body.seq
            ));
        }
        if body.prev != prev {
            report.broken.push(format!(
                "anchor {} does not link to the line before it (removed, inserted or edited)",
                body.seq
            ));
        }
        let signed = serde_json::to_vec(body).expect("an anchor serializes");
        let signature = hex::decode(&anchor.signature)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok());
        if signature.is_none_or(|s| key.verify(&signed, &s).is_err()) {
            report.broken.push(format!(
                "anchor {} is not signed by the given key",
                body.seq
            ));
        }
        for head in &body.heads {
            heads.insert(head.case_id.clone(), head.clone());
        }
        prev = line_hash(line);
    }
    report.heads = heads.len();
    for head in heads.values() {
        let Ok(case) = schemas::CaseId::parse(&head.case_id) else {
            report
                .broken
                .push(format!("case {} is not a case id", head.case_id));
            continue;
        };
        let events = store.events_of(case).await?;
        let mut hash = GENESIS.to_owned();
        let mut reached = false;
        let mut unreadable = None;
        for event in events.iter().take_while(|e| e.sequence <= head.sequence) {
            match chain_input(event, &head.case_id) {
                Ok((_, bytes)) => hash = chain(&hash, &bytes),
                Err(e) => {
                    unreadable = Some(e);
                    break;
                }
            }
            reached = event.sequence == head.sequence;
        }
        if let Some(e) = unreadable {
            report.broken.push(format!(
                "case {}: stored event {} cannot be read: {}",
                head.case_id, e.event_id, e.reason
            ));
        } else if !reached {
            report.broken.push(format!(
                "case {} no longer has event {} that an anchor signed",
                head.case_id, head.sequence
            ));
        } else if hash != head.hash {
            report.broken.push(format!(
                "case {}: the stored events up to sequence {} no longer give the signed hash \
                 (an event was changed after it was anchored)",
                head.case_id, head.sequence
            ));
        }
    }
    Ok(report)
}
