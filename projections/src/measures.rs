//! Referral and engagement measures over a window of dates (Help Me Grow, seed 002). Every
//! measure is a field of `Measures` whose doc comment is its definition: the same text the
//! OpenAPI schema shows. Voided entries never count. "By `to`" means dated on or before `to`.

use std::collections::BTreeMap;

use aggregates::case::Reporter;
use aggregates::Case;
use chrono::NaiveDate;
use schemas::*;
use serde::Serialize;
use utoipa::ToSchema;

/// A share: `numerator / denominator`, null when the denominator is zero.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Rate {
    pub value: Option<f64>,
    pub numerator: u64,
    pub denominator: u64,
}

impl Rate {
    fn of(numerator: u64, denominator: u64) -> Self {
        Self {
            value: (denominator > 0).then(|| numerator as f64 / denominator as f64),
            numerator,
            denominator,
        }
    }
}

/// A median number of days, null when nothing was measured.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MedianDays {
    pub median: Option<f64>,
    /// How many intervals were measured.
    pub n: u64,
}

impl MedianDays {
    fn of(mut days: Vec<i64>) -> Self {
        days.sort_unstable();
        let n = days.len();
        let median = match n {
            0 => None,
            _ if n % 2 == 1 => Some(days[n / 2] as f64),
            _ => Some((days[n / 2 - 1] + days[n / 2]) as f64 / 2.0),
        };
        Self {
            median,
            n: n as u64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Measures {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub program: Option<Program>,
    /// Cases in scope (the caller's agency, the program if given), open or closed.
    pub cases: u64,
    /// Referrals sent (sent_on) within the window.
    pub referrals_sent: u64,
    /// Of the referrals sent in the window, the share whose loop closed by `to`: declined,
    /// cancelled or completed (the initiator learned the outcome).
    pub loop_closure_rate: Rate,
    /// Of the referrals sent in the window whose loop closed by `to`, how many closed with each
    /// outcome (`unrecorded` where the closing status gave none).
    pub closed_loops_by_outcome: BTreeMap<String, u64>,
    /// The same loops by who reported the closing status: `provider` (the receiving provider's
    /// own system), `staff` (staff recording what the provider reported), `referring_side` (a
    /// cancellation) or `unrecorded` (before Linkage kept who reported).
    pub closed_loops_by_reporter: BTreeMap<String, u64>,
    /// Of the referrals sent in the window, the share completed with outcome `connected` by `to`.
    pub successful_connection_rate: Rate,
    /// Median days from sending to acceptance, over referrals sent in the window and accepted
    /// by `to`.
    pub days_to_acceptance: MedianDays,
    /// Median days from sending to the first kept appointment, over referrals sent in the window
    /// with an appointment kept by `to`.
    pub days_to_first_kept_appointment: MedianDays,
    /// Of the referrals sent in the window whose first appointment had an outcome by `to`, the
    /// share whose first outcome was a no-show.
    pub initial_no_show_rate: Rate,
    /// Of the cases closed (transitioned) within the window, the share that closed with no
    /// referral completed `connected`: families who left without a successful connection.
    pub dropout_rate: Rate,
    /// Of the cases open at `to`, the share with a care plan revised by `to` whose reassessment
    /// date is not past.
    pub current_care_plan_rate: Rate,
    /// Cases open at `to` whose care plan's reassessment date is past.
    pub overdue_reassessments: u64,
}

pub fn compute(
    cases: &[Case],
    from: NaiveDate,
    to: NaiveDate,
    program: Option<Program>,
) -> Measures {
    let in_scope: Vec<&Case> = cases
        .iter()
        .filter(|c| {
            c.opened
                .as_ref()
                .is_some_and(|o| program.is_none_or(|p| o.program == p))
        })
        .collect();
    let referrals: Vec<(&Case, &aggregates::case::Referral)> = in_scope
        .iter()
        .flat_map(|c| c.referrals.iter().map(move |r| (*c, r)))
        .filter(|(_, r)| !r.voided && r.sent_on >= from && r.sent_on <= to)
        .collect();
    let sent = referrals.len() as u64;
    let status_by = |r: &aggregates::case::Referral, s: ReferralStatus| {
        r.history
            .iter()
            .find(|c| !c.voided && c.status == s && c.on <= to)
            .map(|c| c.on)
    };
    let closing: Vec<&aggregates::case::StatusChange> = referrals
        .iter()
        .filter_map(|(_, r)| {
            r.history
                .iter()
                .find(|c| !c.voided && c.on <= to && c.status.is_terminal())
        })
        .collect();
    let closed_loops = closing.len() as u64;
    let mut closed_loops_by_outcome: BTreeMap<String, u64> = BTreeMap::new();
    let mut closed_loops_by_reporter: BTreeMap<String, u64> = BTreeMap::new();
    for c in &closing {
        let outcome = c.outcome.map_or("unrecorded", |o| o.as_str());
        *closed_loops_by_outcome.entry(outcome.into()).or_default() += 1;
        let reporter = match (&c.reported, c.status) {
            (Some(Reporter::Provider { .. }), _) => "provider",
            (Some(Reporter::Staff { .. }), _) => "staff",
            (None, ReferralStatus::Cancelled) => "referring_side",
            _ => "unrecorded",
        };
        *closed_loops_by_reporter.entry(reporter.into()).or_default() += 1;
    }
    let connected = |r: &aggregates::case::Referral| {
        status_by(r, ReferralStatus::Completed).is_some()
            && r.outcome == Some(ReferralOutcome::Connected)
    };
    let connections = referrals.iter().filter(|(_, r)| connected(r)).count() as u64;
    let to_acceptance = referrals
        .iter()
        .filter_map(|(_, r)| {
            status_by(r, ReferralStatus::Accepted).map(|d| (d - r.sent_on).num_days())
        })
        .collect();
    let mut first_outcomes = 0;
    let mut first_no_shows = 0;
    let mut to_kept = Vec::new();
    for (case, r) in &referrals {
        let appts: Vec<_> = case
            .appointments
            .iter()
            .filter(|a| !a.voided && a.referral_id == r.referral_id)
            .collect();
        let outcomes: Vec<_> = appts
            .iter()
            .flat_map(|a| a.history.iter().filter(|c| !c.voided && c.on <= to))
            .collect();
        if let Some(first) = outcomes.iter().min_by_key(|c| (c.on, c.sequence)) {
            first_outcomes += 1;
            if first.status == AppointmentStatus::Missed
                && first.missed_reason == Some(MissedReason::NoShow)
            {
                first_no_shows += 1;
            }
        }
        if let Some(kept) = outcomes
            .iter()
            .filter(|c| c.status == AppointmentStatus::Kept)
            .map(|c| c.on)
            .min()
        {
            to_kept.push((kept - r.sent_on).num_days());
        }
    }
    let closed_in_window: Vec<&&Case> = in_scope
        .iter()
        .filter(|c| {
            c.closed
                .as_ref()
                .is_some_and(|x| x.effective_on >= from && x.effective_on <= to)
        })
        .collect();
    let dropouts = closed_in_window
        .iter()
        .filter(|c| !c.referrals.iter().any(|r| !r.voided && connected(r)))
        .count() as u64;
    let open_at_to: Vec<&&Case> = in_scope
        .iter()
        .filter(|c| {
            let o = c.opened.as_ref().expect("in scope means opened");
            o.intake_date <= to && c.closed.as_ref().is_none_or(|x| x.effective_on > to)
        })
        .collect();
    let plan_at_to = |c: &Case| {
        c.care_plans
            .iter()
            .rev()
            .find(|p| !p.voided && p.revised_on <= to)
            .cloned()
    };
    let current = open_at_to
        .iter()
        .filter(|c| plan_at_to(c).is_some_and(|p| p.reassess_by >= to))
        .count() as u64;
    let overdue = open_at_to
        .iter()
        .filter(|c| plan_at_to(c).is_some_and(|p| p.reassess_by < to))
        .count() as u64;
    Measures {
        from,
        to,
        program,
        cases: in_scope.len() as u64,
        referrals_sent: sent,
        loop_closure_rate: Rate::of(closed_loops, sent),
        closed_loops_by_outcome,
        closed_loops_by_reporter,
        successful_connection_rate: Rate::of(connections, sent),
        days_to_acceptance: MedianDays::of(to_acceptance),
        days_to_first_kept_appointment: MedianDays::of(to_kept),
        initial_no_show_rate: Rate::of(first_no_shows, first_outcomes),
        dropout_rate: Rate::of(dropouts, closed_in_window.len() as u64),
        current_care_plan_rate: Rate::of(current, open_at_to.len() as u64),
        overdue_reassessments: overdue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_rates() {
        assert_eq!(MedianDays::of(vec![5, 1, 3]).median, Some(3.0));
        assert_eq!(MedianDays::of(vec![4, 1, 3, 2]).median, Some(2.5));
        assert_eq!(MedianDays::of(vec![]).median, None);
        assert_eq!(Rate::of(1, 4).value, Some(0.25));
        assert_eq!(Rate::of(0, 0).value, None);
    }

    #[test]
    fn nothing_in_scope_measures_nothing() {
        let d = |s: &str| s.parse().unwrap();
        let m = compute(&[], d("2026-01-01"), d("2026-03-31"), None);
        assert_eq!(
            (m.cases, m.referrals_sent, m.loop_closure_rate.value),
            (0, 0, None)
        );
    }
}
