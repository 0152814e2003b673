//! Export batches: what was sent to the payer, recorded. A batch holds only what changed since the
//! month's earlier batches (originals, and void + replacement adjustments for lines billed before
//! that changed), is recorded by a BillingBatchExported event with its line ids and checksum, and
//! can be reproduced byte for byte: its rows are stored immutable, and their CSV rendering must
//! hash to the recorded checksum before anything is served.

use bytes::Bytes;
use futures::{Sink, SinkExt, StreamExt};
use projections::billing::Profile;
use schemas::EventMetadata;
use sha2::{Digest, Sha256};

use super::export::{csv_chunk, csv_row, ExportError, Format, CSV_HEADER};
use crate::store::{BatchOf, BatchRecord, BatchRow, Store};

/// A batch's CSV columns: the line's id, kind and the line it adjusts, then the log's columns.
pub fn csv_header() -> Bytes {
    let mut header = vec!["line_id".to_owned(), "kind".into(), "adjusts".into()];
    header.extend(CSV_HEADER.iter().map(|s| (*s).to_owned()));
    let header: [String; 16] = header.try_into().expect("16 columns");
    csv_chunk([header])
}

/// One batch row as CSV.
pub fn csv_bytes(row: &BatchRow) -> Bytes {
    let line = csv_row(&row.line);
    let mut cells = vec![
        row.line_id.clone(),
        row.kind.as_str().to_owned(),
        row.adjusts.clone().unwrap_or_default(),
    ];
    cells.extend(line);
    let cells: [String; 16] = cells.try_into().expect("16 columns");
    csv_chunk([cells])
}

/// The metadata of a batch recorded by `actor` at `now`: a command of its own, with ids.
pub fn metadata(actor: &aggregates::Actor, now: chrono::DateTime<chrono::Utc>) -> EventMetadata {
    let id = uuid::Uuid::now_v7();
    EventMetadata {
        command: Some("RecordBillingBatch".into()),
        command_id: Some(id),
        causation_id: Some(id),
        correlation_id: Some(id.to_string()),
        actor_id: Some(actor.id.clone()),
        actor_role: Some(actor.role),
        actor_agency: Some(actor.agency.clone()),
        occurred_at: Some(now),
        received_at: Some(now),
        idempotency: None,
    }
}

/// Records the next batch of a month of one agency.
pub async fn create(
    store: &Store,
    profile: &Profile,
    of: BatchOf<'_>,
    metadata: &EventMetadata,
) -> Result<BatchRecord, ExportError> {
    Ok(store
        .create_billing_batch(profile, of, metadata, &csv_header(), csv_bytes)
        .await?)
}

#[derive(Debug, thiserror::Error)]
pub enum ReproduceError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(
        "batch {batch_id} no longer matches its recorded checksum (recorded {recorded}, now {now})"
    )]
    Tampered {
        batch_id: String,
        recorded: String,
        now: String,
    },
}

/// Checks a batch against its recorded checksum.
pub async fn verify(store: &Store, record: &BatchRecord) -> Result<(), ReproduceError> {
    let mut hasher = Sha256::new();
    hasher.update(csv_header());
    let mut rows = store.billing_batch_rows(&record.batch_id);
    while let Some(row) = rows.next().await {
        hasher.update(csv_bytes(&row.map_err(ExportError::from)?));
    }
    let now = hex::encode(hasher.finalize());
    if now != record.checksum {
        return Err(ReproduceError::Tampered {
            batch_id: record.batch_id.clone(),
            recorded: record.checksum.clone(),
            now,
        });
    }
    Ok(())
}

/// Writes a recorded batch, exactly as it was exported, after checking its checksum.
pub async fn write<S>(
    store: &Store,
    record: &BatchRecord,
    format: Format,
    sink: &mut S,
) -> Result<(), ReproduceError>
where
    S: Sink<Bytes> + Unpin,
    S::Error: std::fmt::Display,
{
    verify(store, record).await?;
    Ok(write_verified(store, record, format, sink).await?)
}

/// Writes a recorded batch that `verify` has just accepted (the HTTP route verifies before it
/// answers, so that a tampered batch is an error status rather than a broken stream, and must not
/// read and hash the batch a second time).
pub async fn write_verified<S>(
    store: &Store,
    record: &BatchRecord,
    format: Format,
    sink: &mut S,
) -> Result<(), ExportError>
where
    S: Sink<Bytes> + Unpin,
    S::Error: std::fmt::Display,
{
    let send_err = |e: S::Error| ExportError::Sink(e.to_string());
    let head = match format {
        Format::Csv => csv_header(),
        Format::Json => Bytes::from(format!(
            "{{\"batch\":{},\"lines\":[",
            serde_json::to_string(record).expect("a record serialises")
        )),
    };
    sink.send(head).await.map_err(send_err)?;
    let mut rows = store.billing_batch_rows(&record.batch_id);
    let mut first = true;
    while let Some(row) = rows.next().await {
        let row = row?;
        let chunk = match format {
            Format::Csv => csv_bytes(&row),
            Format::Json => {
                let mut value = serde_json::to_value(&row.line).expect("a line serialises");
                if let Some(obj) = value.as_object_mut() {
                    obj.insert("line_id".into(), row.line_id.clone().into());
                    obj.insert("kind".into(), row.kind.as_str().into());
                    obj.insert("adjusts".into(), row.adjusts.clone().into());
                }
                let mut text = if first { String::new() } else { ",".into() };
                text.push_str(&value.to_string());
                Bytes::from(text)
            }
        };
        first = false;
        sink.send(chunk).await.map_err(send_err)?;
    }
    if format == Format::Json {
        sink.send(Bytes::from_static(b"]}"))
            .await
            .map_err(send_err)?;
    }
    sink.flush().await.map_err(send_err)?;
    Ok(())
}
