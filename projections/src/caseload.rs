//! Caseload views: what a case manager and their supervisor need to see about each open case,
//! derived from the case's folded state and today's date against configured thresholds.
//!
//! "Billable contact" here is provisional until the TCM rules engine (issue 5) exists: a contact
//! that is not voided, not voicemail or written, and at least 8 minutes long.

use std::collections::BTreeMap;

use aggregates::Case;
use chrono::{Datelike, NaiveDate};
use schemas::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::log::{ApplyError, LogEvent, VoidRow};

/// Limits and thresholds, from configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    /// Open cases one case manager may carry, per program.
    pub program_limits: BTreeMap<Program, u32>,
    /// A case with no contact for more than this many days is flagged.
    pub contact_overdue_days: i64,
    /// An open referral with no status change for this many days is flagged.
    pub stale_referral_days: i64,
    /// A reassessment due within this many days is flagged as due soon.
    pub reassessment_warning_days: i64,
    /// A case this old without a care plan is flagged.
    pub care_plan_due_days: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            program_limits: BTreeMap::from([
                (Program::Tcm, 30),
                (Program::Wraparound, 10),
                (Program::EarlyIntervention, 35),
                (Program::CareCoordination, 40),
            ]),
            contact_overdue_days: 30,
            stale_referral_days: 14,
            reassessment_warning_days: 14,
            care_plan_due_days: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OpenReferral {
    pub referral_id: ReferralId,
    pub service_type: ServiceType,
    pub status: ReferralStatus,
    pub age_days: i64,
    pub days_since_status_change: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CaseloadCase {
    pub case_id: CaseId,
    /// Given name and family initial: enough to recognise, no more.
    pub child_display_name: String,
    pub program: Program,
    pub intake_date: NaiveDate,
    pub days_since_last_contact: i64,
    pub months_without_billable_contact: u32,
    pub next_reassessment_due: Option<NaiveDate>,
    pub open_referrals: Vec<OpenReferral>,
    pub stale_referrals: Vec<ReferralId>,
    pub missed_appointments_awaiting_outreach: Vec<AppointmentId>,
    /// Every overdue or attention item, by name.
    pub flags: Vec<String>,
}

fn months_between(from: NaiveDate, to: NaiveDate) -> u32 {
    let m = |d: NaiveDate| d.year() * 12 + d.month0() as i32;
    (m(to) - m(from)).max(0) as u32
}

/// What caseload views need of a case's contacts, which the projection keeps as rows beside the
/// state (`Folded`): the latest date (UTC) of a contact not voided, and of one with the child or
/// a guardian.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContactDates {
    pub last: Option<NaiveDate>,
    pub last_with_family: Option<NaiveDate>,
}

/// A case as caseload views read it: the folded state (without contacts) and its contact dates.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseloadState {
    pub case: Case,
    pub contacts: ContactDates,
}

/// One contact as the caseload projection keeps it: a row, by its place in the case's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactRow {
    pub sequence: u64,
    pub event_id: EventId,
    pub day: NaiveDate,
    pub with_family: bool,
}

/// What a batch adds beside a case's state.
pub type Folded = crate::log::Folded<ContactRow>;

/// The caseload projection's fold: a case's events of one batch, in log order, onto its state.
/// Contacts are not folded into the state (a case's contacts are its most numerous events, and
/// a state holding them would make every batch cost the case's whole history): each comes back
/// as a row, and each void as a row that marks the contact it names.
///
/// A contact leaves the state as it was, its `version` included (the sequence of the last event
/// the state holds), so a batch of a case's contacts alone changes nothing the store must write
/// back (`version` unchanged: the store writes only the rows). A contact after `version` is
/// folded again if its batch is replayed; the store keeps one row per contact (by its place in
/// the stream) whichever way it comes.
pub fn fold(case: &mut Case, events: &[&LogEvent]) -> Result<Folded, ApplyError> {
    let mut folded = Folded::default();
    for e in events {
        // Idempotent: an event this state already holds (a batch replayed) changes nothing.
        let sequence = e.event.sequence;
        if sequence <= case.version {
            continue;
        }
        match e.event.case_event()? {
            aggregates::CaseEvent::ContactLogged {
                occurred_at, with, ..
            } => {
                folded.contacts.push(ContactRow {
                    sequence,
                    event_id: e.event.event_id,
                    day: occurred_at.date_naive(),
                    with_family: with
                        .iter()
                        .any(|p| matches!(p, Participant::Child | Participant::Guardian)),
                });
            }
            event => {
                if let aggregates::CaseEvent::EntryVoided {
                    voided_event_id,
                    voided_sequence,
                    ..
                } = &event
                {
                    folded.voided.push(VoidRow {
                        sequence: *voided_sequence,
                        event_id: *voided_event_id,
                    });
                }
                case.apply_at(sequence, event);
            }
        }
    }
    Ok(folded)
}

/// The caseload line of an open case, as of `today`. None for a closed or unopened case.
/// `last_billable` is the latest date of service of a billable contact up to this month, as the
/// billing profile in force evaluates it (`BillingCase::last_billable`).
pub fn caseload_case(
    state: &CaseloadState,
    today: NaiveDate,
    t: &Thresholds,
    last_billable: Option<NaiveDate>,
) -> Option<CaseloadCase> {
    let case = &state.case;
    let o = case.opened.as_ref()?;
    if case.closed.is_some() {
        return None;
    }
    let mut flags = Vec::new();
    let last_contact = state.contacts.last;
    let days_since_last_contact = (today - last_contact.unwrap_or(o.intake_date)).num_days();
    if days_since_last_contact > t.contact_overdue_days {
        flags.push(format!("no_contact_{}_days", t.contact_overdue_days));
    }
    // Whole calendar months since the last month with a billable contact (or since intake),
    // not counting the current month, which is still running.
    let months_without_billable_contact = match last_billable {
        Some(d) => months_between(d, today).saturating_sub(1),
        None => months_between(o.intake_date, today),
    };
    if months_without_billable_contact > 0 {
        flags.push("no_billable_contact_last_month".into());
    }
    let next_reassessment_due = case.current_plan().map(|p| p.reassess_by);
    match next_reassessment_due {
        Some(due) if due < today => flags.push("reassessment_overdue".into()),
        Some(due) if (due - today).num_days() <= t.reassessment_warning_days => {
            flags.push("reassessment_due_soon".into())
        }
        Some(_) => {}
        None if (today - o.intake_date).num_days() > t.care_plan_due_days => {
            flags.push("no_care_plan".into())
        }
        None => {}
    }
    let open_referrals: Vec<OpenReferral> = case
        .open_referrals()
        .map(|r| {
            let changed = r
                .history
                .iter()
                .filter(|c| !c.voided)
                .map(|c| c.on)
                .max()
                .unwrap_or(r.sent_on);
            OpenReferral {
                referral_id: r.referral_id,
                service_type: r.service_type.clone(),
                status: case.referral_status(r),
                age_days: (today - r.sent_on).num_days(),
                days_since_status_change: (today - changed).num_days(),
            }
        })
        .collect();
    let stale_referrals: Vec<ReferralId> = open_referrals
        .iter()
        .filter(|r| r.days_since_status_change >= t.stale_referral_days)
        .map(|r| r.referral_id)
        .collect();
    if !stale_referrals.is_empty() {
        flags.push("stale_referral".into());
    }
    let missed: Vec<AppointmentId> = case
        .appointments
        .iter()
        .filter(|a| !a.voided && a.status() == AppointmentStatus::Missed)
        .filter(|a| {
            let missed_on = a.history.iter().rev().find(|c| !c.voided).map(|c| c.on);
            // Outreach: a live contact with the child or a guardian on or after that day.
            state
                .contacts
                .last_with_family
                .is_none_or(|d| Some(d) < missed_on)
        })
        .map(|a| a.appointment_id)
        .collect();
    if !missed.is_empty() {
        flags.push("missed_appointment_needs_outreach".into());
    }
    let initial = o.child.family_name.as_str().chars().next().unwrap_or('?');
    Some(CaseloadCase {
        case_id: o.case_id,
        child_display_name: format!("{} {initial}.", o.child.given_name),
        program: o.program,
        intake_date: o.intake_date,
        days_since_last_contact,
        months_without_billable_contact,
        next_reassessment_due,
        open_referrals,
        stale_referrals,
        missed_appointments_awaiting_outreach: missed,
        flags,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ProgramLoad {
    pub program: Program,
    pub open_cases: u32,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Caseload {
    pub worker_id: String,
    pub open_cases: u32,
    /// The limit of the program most of the caseload is in.
    pub limit: u32,
    /// Share of capacity used: each case counts 1/limit of its program.
    pub capacity_used: f64,
    pub over_limit: bool,
    pub programs: Vec<ProgramLoad>,
    pub cases: Vec<CaseloadCase>,
}

/// One worker's caseload from their open cases. `today` is each case's (its agency's date);
/// `last_billable` as for `caseload_case`.
pub fn caseload(
    worker_id: &str,
    cases: &[CaseloadState],
    today: impl Fn(&Case) -> NaiveDate,
    t: &Thresholds,
    last_billable: impl Fn(&Case) -> Option<NaiveDate>,
) -> Caseload {
    let lines: Vec<CaseloadCase> = cases
        .iter()
        .filter_map(|s| caseload_case(s, today(&s.case), t, last_billable(&s.case)))
        .collect();
    let mut per_program: BTreeMap<Program, u32> = BTreeMap::new();
    for l in &lines {
        *per_program.entry(l.program).or_default() += 1;
    }
    let limit_of = |p: &Program| t.program_limits.get(p).copied().unwrap_or(25).max(1);
    let capacity_used: f64 = per_program
        .iter()
        .map(|(p, n)| f64::from(*n) / f64::from(limit_of(p)))
        .sum();
    let dominant = per_program.iter().max_by_key(|(_, n)| **n).map(|(p, _)| *p);
    Caseload {
        worker_id: worker_id.to_owned(),
        open_cases: lines.len() as u32,
        limit: dominant.map_or(25, |p| limit_of(&p)),
        capacity_used,
        over_limit: capacity_used > 1.0,
        programs: per_program
            .iter()
            .map(|(p, n)| ProgramLoad {
                program: *p,
                open_cases: *n,
                limit: limit_of(p),
            })
            .collect(),
        cases: lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_calendar_months() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(months_between(d("2026-09-30"), d("2026-11-01")), 2);
        assert_eq!(months_between(d("2026-11-01"), d("2026-11-30")), 0);
    }

    fn opened(program: Program) -> CaseloadState {
        let mut case = Case::default();
        case.apply_at(
            1,
            crate::log::testing::case_opened(CaseId::generate(), program),
        );
        CaseloadState {
            case,
            contacts: ContactDates::default(),
        }
    }

    /// A batch of a case's contacts alone leaves its state as it was (so the store need not
    /// write it back) and comes back as rows; an event folded into the state moves `version`.
    #[test]
    fn contacts_leave_the_state_as_it_was() {
        use crate::log::testing::{refs, Stream};
        let mut stream = Stream::new();
        let first = [stream.opened(), stream.contact("2026-11-03T10:00:00Z")];
        let mut case = Case::default();
        fold(&mut case, &refs(&first)).unwrap();
        assert_eq!(case.version, 1, "the contact is a row, not state");
        let before = case.clone();

        let calls = [
            stream.contact("2026-11-04T10:00:00Z"),
            stream.contact("2026-11-05T10:00:00Z"),
        ];
        let rows = fold(&mut case, &refs(&calls)).unwrap();
        assert_eq!(case, before, "contacts alone change nothing in the state");
        let sequences: Vec<u64> = rows.contacts.iter().map(|r| r.sequence).collect();
        assert_eq!(sequences, [3, 4]);
        assert_eq!(
            fold(&mut case, &refs(&calls)).unwrap(),
            rows,
            "replayed, the same rows again (the store keeps one per sequence)"
        );

        let mixed = [stream.assigned("cm-kim"), stream.void(&calls[0])];
        let rows = fold(&mut case, &refs(&mixed)).unwrap();
        assert_eq!(case.version, 6);
        assert_ne!(case, before);
        assert_eq!(rows.voided.len(), 1);
        let replayed = case.clone();
        fold(&mut case, &refs(&mixed)).unwrap();
        assert_eq!(case, replayed, "state events replayed change nothing");
    }

    #[test]
    fn an_empty_caseload_uses_no_capacity() {
        let load = caseload(
            "cm",
            &[],
            |_| "2026-11-01".parse().unwrap(),
            &Thresholds::default(),
            |_| None,
        );
        assert_eq!(
            (load.open_cases, load.capacity_used, load.over_limit),
            (0, 0.0, false)
        );
    }

    #[test]
    fn capacity_weighs_each_case_by_its_programs_limit() {
        let t = Thresholds::default(); // wraparound 10, tcm 30
        let today = "2026-11-01".parse().unwrap();
        let mut cases = vec![opened(Program::Tcm); 15];
        cases.extend(vec![opened(Program::Wraparound); 5]);
        let load = caseload("cm", &cases, |_| today, &t, |_| None);
        assert_eq!(load.open_cases, 20);
        assert!(
            (load.capacity_used - (15.0 / 30.0 + 5.0 / 10.0)).abs() < 1e-9,
            "{}",
            load.capacity_used
        );
        assert!(!load.over_limit, "exactly full is not over");
        assert_eq!(load.limit, 30, "the dominant program's limit");
        cases.push(opened(Program::Wraparound));
        let load = caseload("cm", &cases, |_| today, &t, |_| None);
        assert!(
            load.over_limit,
            "one wraparound family more tips it: {}",
            load.capacity_used
        );
        let per: Vec<(Program, u32, u32)> = load
            .programs
            .iter()
            .map(|p| (p.program, p.open_cases, p.limit))
            .collect();
        assert_eq!(
            per,
            vec![(Program::Tcm, 15, 30), (Program::Wraparound, 6, 10)]
        );
    }
}
