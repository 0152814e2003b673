//! A month of the billing-eligible activity log, rendered as CSV or JSON and streamed chunk by
//! chunk (one case's lines at a time) into any sink: the HTTP body and `linkage billing export`
//! share it, and memory stays flat in the number of lines.

use bytes::Bytes;
use futures::{Sink, SinkExt, StreamExt};
use projections::billing::{Line, Month, Profile};
use projections::zones::Zones;
use serde::Serialize;

use crate::error::StoreError;
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

/// What an export held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub cases: u64,
    pub lines: u64,
    pub billable_lines: u64,
    pub units: u64,
}

impl Summary {
    /// Counts one line (its case is counted by the caller, who knows where cases change).
    fn count(&mut self, line: &Line) {
        self.lines += 1;
        self.billable_lines += u64::from(line.billable);
        self.units += u64::from(line.units);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the export's destination failed: {0}")]
    Sink(String),
}

/// The CSV header: the contract's line fields, in its order.
pub const CSV_HEADER: [&str; 13] = [
    "activity_id",
    "case_id",
    "medicaid_id",
    "date_of_service",
    "component",
    "contact_type",
    "minutes",
    "units",
    "billable",
    "reasons",
    "procedure_code",
    "modifiers",
    "rendering_provider",
];

pub(crate) fn csv_row(line: &Line) -> [String; 13] {
    let join = |v: Vec<String>| v.join(";");
    [
        line.activity_id.to_string(),
        line.case_id.map(|c| c.to_string()).unwrap_or_default(),
        line.medicaid_id
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
        line.date_of_service.to_string(),
        line.component.to_string(),
        line.contact_type.to_string(),
        line.minutes.to_string(),
        line.units.to_string(),
        line.billable.to_string(),
        join(line.reasons.iter().map(ToString::to_string).collect()),
        line.procedure_code.clone(),
        join(line.modifiers.clone()),
        line.rendering_provider
            .as_ref()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    ]
}

pub(crate) fn csv_chunk<const N: usize>(rows: impl IntoIterator<Item = [String; N]>) -> Bytes {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.write_record(&row)
            .expect("writing CSV to memory cannot fail");
    }
    Bytes::from(w.into_inner().expect("an in-memory CSV writer flushes"))
}

/// What an export reads: a month, of one agency or of every one, in a format.
#[derive(Debug, Clone, Copy)]
pub struct Selection<'a> {
    pub month: Month,
    pub agency: Option<&'a str>,
    pub format: Format,
}

/// Streams `month`'s lines (of `agency`, or all) into `sink`; `progress` gets the number of cases
/// done after each case.
pub async fn export_month<S>(
    store: &Store,
    profile: &Profile,
    zones: &Zones,
    Selection {
        month,
        agency,
        format,
    }: Selection<'_>,
    sink: &mut S,
    mut progress: impl FnMut(u64),
) -> Result<Summary, ExportError>
where
    S: Sink<Bytes> + Unpin,
    S::Error: std::fmt::Display,
{
    let send_err = |e: S::Error| ExportError::Sink(e.to_string());
    let mut summary = Summary::default();
    let head = match format {
        Format::Csv => csv_chunk([CSV_HEADER.map(str::to_owned)]),
        Format::Json => Bytes::from(format!(
            "{{\"month\":\"{month}\",\"profile\":{},\"lines\":[",
            serde_json::to_string(&profile.name).expect("a string serialises")
        )),
    };
    sink.send(head).await.map_err(send_err)?;
    let mut cases = store.billing_cases_of_month(month, agency);
    while let Some(case) = cases.next().await {
        let case = case?;
        // The month's cases are read with a margin of a day (see `projections::billing::months_of`): a
        // case whose contacts fall outside the month where its agency is has no lines here.
        let lines = case.lines(profile, month, zones.of(case.agency.as_ref()));
        if lines.is_empty() {
            continue;
        }
        summary.cases += 1;
        lines.iter().for_each(|l| summary.count(l));
        let chunk = match format {
            Format::Csv => csv_chunk(lines.iter().map(csv_row)),
            Format::Json => {
                let mut buf = Vec::new();
                for (i, l) in lines.iter().enumerate() {
                    if summary.lines > lines.len() as u64 || i > 0 {
                        buf.push(b',');
                    }
                    serde_json::to_writer(&mut buf, l).expect("a line serialises");
                }
                Bytes::from(buf)
            }
        };
        if !chunk.is_empty() {
            sink.send(chunk).await.map_err(send_err)?;
        }
        progress(summary.cases);
    }
    if format == Format::Json {
        let tail = format!(
            "],\"summary\":{}}}",
            serde_json::to_string(&summary).expect("a summary serialises")
        );
        sink.send(Bytes::from(tail)).await.map_err(send_err)?;
    }
    sink.flush().await.map_err(send_err)?;
    Ok(summary)
}

/// One page of a month's lines as JSON serves them: cases in id order, each case's lines in
/// activity id order (a key that never moves, so a page starts strictly after the last line
/// served), at most `limit` lines after `after` (`"<case id>:<activity id>"`).
pub struct MonthPage {
    pub lines: Vec<Line>,
    /// Of this page's lines.
    pub summary: Summary,
    /// Whether lines follow this page.
    pub more: bool,
}

/// The page key of a line.
pub fn line_key(line: &Line) -> String {
    format!(
        "{}:{}",
        line.case_id.map(|c| c.to_string()).unwrap_or_default(),
        line.activity_id
    )
}

pub async fn page_month(
    store: &Store,
    profile: &Profile,
    zones: &Zones,
    month: Month,
    agency: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> Result<MonthPage, StoreError> {
    let (from_case, from_activity) = match after.and_then(|a| a.split_once(':')) {
        Some((case, activity)) => (Some(case), Some(activity)),
        None => (None, None),
    };
    let mut lines: Vec<Line> = Vec::with_capacity(limit + 1);
    // The store returns the cursor's case and those after it, in its own order; only the
    // cursor's case is cut, by activity id.
    let mut cases = store.billing_cases_of_month_from(month, agency, from_case);
    while let Some(case) = cases.next().await {
        let case = case?;
        let mut case_lines = case.lines(profile, month, zones.of(case.agency.as_ref()));
        case_lines.sort_by_key(|l| l.activity_id);
        let is_cursor_case = case.case_id.map(|c| c.to_string()).as_deref() == from_case;
        lines.extend(case_lines.into_iter().filter(|l| {
            !is_cursor_case || from_activity.is_none_or(|a| l.activity_id.to_string().as_str() > a)
        }));
        if lines.len() > limit {
            break;
        }
    }
    let more = lines.len() > limit;
    lines.truncate(limit);
    let mut summary = Summary::default();
    let mut last_case = None;
    for l in &lines {
        if last_case != Some(l.case_id) {
            summary.cases += 1;
            last_case = Some(l.case_id);
        }
        summary.count(l);
    }
    Ok(MonthPage {
        lines,
        summary,
        more,
    })
}
