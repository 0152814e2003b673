//! Medicaid TCM billing rules as data, and the pure evaluation of a recipient's month of contacts
//! into billing lines. A profile (one per payer or state, TOML in `ops/billing/`) says which
//! components and contact types qualify, how minutes become units, the caps, the institution
//! window, modifiers and the documentation a line needs; nothing here branches on a state.
//!
//! Evaluation order, for one recipient (case) and month, is fixed and documented because caps
//! depend on it:
//! 1. Lines are sorted by date of service, then time of the contact, then activity id.
//! 2. Each line is checked on its own; every failed check adds its reason, in this order:
//!    `voided`, `no_medicaid_id`, `not_enrolled_on_date`, `case_closed`,
//!    `component_not_billable`, `contact_type_not_billable`, `collateral_not_about_child`,
//!    `institution_outside_window`, `below_minimum_minutes`, `missing_documentation:<field>`.
//!    A line with any of these is not billable and has 0 units.
//! 3. The qualifying lines get units in order: minutes by the unit rule (15-minute units, one
//!    encounter per day, or the month's case rate); a second encounter of a day is
//!    `duplicate_encounter`, a second contact in a case-rate month `case_rate_already_billed`.
//! 4. The daily cap, then the monthly cap, cut units in that order (`daily_cap_reached`,
//!    `monthly_cap_reached`); a line cut to 0 units is not billable, a line cut short stays
//!    billable with the reason saying why it has fewer units.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use schemas::{
    ActivityId, ActorId, CaseId, ContactType, Location, MedicaidId, Participant, TcmComponent,
};
use serde::{Deserialize, Serialize};

use crate::log::{ApplyError, LogEvent, VoidRow};

/// One payer's or state's TCM rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub procedure_code: String,
    pub billable_components: Vec<TcmComponent>,
    pub units: UnitRule,
    #[serde(default)]
    pub caps: Caps,
    pub contacts: ContactRules,
    #[serde(default)]
    pub modifiers: BTreeMap<ContactType, Vec<String>>,
    pub institution: InstitutionRule,
    pub documentation: Documentation,
}

/// How a qualifying contact's minutes become units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "basis", rename_all = "snake_case", deny_unknown_fields)]
pub enum UnitRule {
    /// 15-minute units; the first needs `first_unit_minimum_minutes` (8: the 8-minute rule),
    /// each further unit 15 more, counted on the minutes `rounding` says.
    FifteenMinute {
        first_unit_minimum_minutes: u16,
        rounding: Rounding,
    },
    /// One unit per recipient and day.
    Encounter,
    /// One unit per recipient and month, for the first qualifying contact.
    MonthlyCaseRate,
}

/// Which minutes the 15-minute rule is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// The qualifying minutes of one recipient, one procedure code and one local day are added
    /// up, and the unit rule (with its minimum) applies to the total; the day's units are given to
    /// its lines in evaluation order, each line taking the units the running total gains with it.
    /// A day never bills more 15-minute units than its minutes support.
    PerDayTotal,
    /// Each contact is rounded on its own (for a payer that requires it).
    PerContact,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caps {
    pub daily_units: Option<u32>,
    pub monthly_units: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactRules {
    pub billable_types: Vec<ContactType>,
    /// A collateral contact qualifies only with one of these participants.
    pub collateral_participants: Vec<Participant>,
    /// Per contact type, the fewest minutes that qualify.
    #[serde(default)]
    pub minimum_minutes: BTreeMap<ContactType, u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstitutionRule {
    pub excluded_locations: Vec<Location>,
    /// Contacts at an excluded location within this many days before a discharge qualify.
    pub transition_window_days: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Documentation {
    pub required: Vec<DocField>,
}

/// A documentation field a billable line needs (441.18(a)(7)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DocField {
    /// The nature and content of the service.
    Note,
    /// Who delivered it.
    RenderingProvider,
    /// Where.
    Location,
}

impl DocField {
    pub const ALL: [DocField; 3] = [
        DocField::Note,
        DocField::RenderingProvider,
        DocField::Location,
    ];

    /// Its one name, in rules files, reasons and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DocField::Note => "note",
            DocField::RenderingProvider => "rendering_provider",
            DocField::Location => "location",
        }
    }
}

impl std::str::FromStr for DocField {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DocField::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown documentation field `{s}`"))
    }
}

impl Serialize for DocField {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DocField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a rules file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("billing profile `{profile}`: {problem}")]
    Invalid { profile: String, problem: String },
}

impl Profile {
    /// Checks what a parser cannot: the profile must be usable as it stands.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let invalid = |problem: String| ProfileError::Invalid {
            profile: self.name.clone(),
            problem,
        };
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !name_ok {
            return Err(invalid(
                "name must be lower-case letters, digits and _".into(),
            ));
        }
        if self.procedure_code.trim().is_empty() {
            return Err(invalid("procedure_code must not be empty".into()));
        }
        if self.billable_components.is_empty() {
            return Err(invalid(
                "billable_components must name at least one component".into(),
            ));
        }
        if self.contacts.billable_types.is_empty() {
            return Err(invalid(
                "contacts.billable_types must name at least one contact type".into(),
            ));
        }
        for never in [ContactType::Voicemail] {
            if self.contacts.billable_types.contains(&never) {
                return Err(invalid(format!(
                    "contacts.billable_types lists {never}, which is never billable TCM"
                )));
            }
        }
        if let UnitRule::FifteenMinute {
            first_unit_minimum_minutes: m,
            ..
        } = self.units
        {
            if !(1..=15).contains(&m) {
                return Err(invalid(format!(
                    "units.first_unit_minimum_minutes must be 1 to 15, got {m}"
                )));
            }
        }
        if let (Some(d), Some(m)) = (self.caps.daily_units, self.caps.monthly_units) {
            if d > m {
                return Err(invalid(format!(
                    "caps.daily_units ({d}) exceeds caps.monthly_units ({m})"
                )));
            }
        }
        if self.caps.daily_units == Some(0) || self.caps.monthly_units == Some(0) {
            return Err(invalid(
                "a cap of 0 units bills nothing; leave it out instead".into(),
            ));
        }
        if self
            .contacts
            .billable_types
            .contains(&ContactType::Collateral)
            && self.contacts.collateral_participants.is_empty()
        {
            return Err(invalid("collateral contacts are billable but contacts.collateral_participants is empty, so none could qualify".into()));
        }
        Ok(())
    }
}

/// Why a line is not billable or has fewer units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Voided,
    NoMedicaidId,
    NotEnrolledOnDate,
    CaseClosed,
    ComponentNotBillable,
    ContactTypeNotBillable,
    CollateralNotAboutChild,
    InstitutionOutsideWindow,
    BelowMinimumMinutes,
    CombinedIntoDayTotal,
    MissingDocumentation(DocField),
    DuplicateEncounter,
    CaseRateAlreadyBilled,
    DailyCapReached,
    MonthlyCapReached,
}

impl Reason {
    /// The reasons that carry nothing; with one `MissingDocumentation` per field, every reason.
    const SIMPLE: [Reason; 14] = [
        Reason::Voided,
        Reason::NoMedicaidId,
        Reason::NotEnrolledOnDate,
        Reason::CaseClosed,
        Reason::ComponentNotBillable,
        Reason::ContactTypeNotBillable,
        Reason::CollateralNotAboutChild,
        Reason::InstitutionOutsideWindow,
        Reason::BelowMinimumMinutes,
        Reason::CombinedIntoDayTotal,
        Reason::DuplicateEncounter,
        Reason::CaseRateAlreadyBilled,
        Reason::DailyCapReached,
        Reason::MonthlyCapReached,
    ];

    /// The one table of reason codes: `Display`, `FromStr` and serde all read it. A missing
    /// documentation field is shown as `missing_documentation:<field>`.
    fn code(self) -> &'static str {
        match self {
            Reason::Voided => "voided",
            Reason::NoMedicaidId => "no_medicaid_id",
            Reason::NotEnrolledOnDate => "not_enrolled_on_date",
            Reason::CaseClosed => "case_closed",
            Reason::ComponentNotBillable => "component_not_billable",
            Reason::ContactTypeNotBillable => "contact_type_not_billable",
            Reason::CollateralNotAboutChild => "collateral_not_about_child",
            Reason::InstitutionOutsideWindow => "institution_outside_window",
            Reason::BelowMinimumMinutes => "below_minimum_minutes",
            Reason::CombinedIntoDayTotal => "combined_into_day_total",
            Reason::MissingDocumentation(_) => "missing_documentation",
            Reason::DuplicateEncounter => "duplicate_encounter",
            Reason::CaseRateAlreadyBilled => "case_rate_already_billed",
            Reason::DailyCapReached => "daily_cap_reached",
            Reason::MonthlyCapReached => "monthly_cap_reached",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::MissingDocumentation(field) => write!(f, "{}:{}", self.code(), field.as_str()),
            _ => f.write_str(self.code()),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for Reason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let unknown = || format!("unknown billing reason `{s}`");
        match s.split_once(':') {
            Some((code, field)) if code == Reason::MissingDocumentation(DocField::Note).code() => {
                Ok(Reason::MissingDocumentation(
                    field.parse().map_err(|_| unknown())?,
                ))
            }
            Some(_) => Err(unknown()),
            None => Reason::SIMPLE
                .into_iter()
                .find(|r| r.code() == s)
                .ok_or_else(unknown),
        }
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What billing needs to know about the recipient (the case), as of the evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recipient {
    pub case_id: Option<CaseId>,
    pub medicaid_id: Option<MedicaidId>,
    pub intake_date: Option<NaiveDate>,
    /// Periods the case was closed: from a transition's effective date until a reopening's date
    /// (exclusive), or open-ended.
    pub closed: Vec<(NaiveDate, Option<NaiveDate>)>,
    /// Effective dates of discharges and step-downs (for the institution window).
    pub discharges: Vec<NaiveDate>,
    /// The agency's time zone: a contact's date of service is its local date there.
    pub zone: Tz,
}

impl Recipient {
    fn closed_on(&self, day: NaiveDate) -> bool {
        self.closed
            .iter()
            .any(|(from, until)| day >= *from && until.is_none_or(|u| day < u))
    }
}

/// One logged contact, as billing sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub activity_id: ActivityId,
    pub occurred_at: DateTime<Utc>,
    pub component: TcmComponent,
    pub contact_type: ContactType,
    pub with: Vec<Participant>,
    pub minutes: u16,
    pub has_note: bool,
    pub location: Option<Location>,
    pub rendering_provider: Option<ActorId>,
    pub voided: bool,
}

impl Contact {
    /// The local date, in the agency's time zone, on which the contact happened.
    pub fn date_of_service(&self, zone: Tz) -> NaiveDate {
        self.occurred_at.with_timezone(&zone).date_naive()
    }
}

/// One line of the billing-eligible activity log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub activity_id: ActivityId,
    pub case_id: Option<CaseId>,
    pub medicaid_id: Option<MedicaidId>,
    pub date_of_service: NaiveDate,
    pub component: TcmComponent,
    pub contact_type: ContactType,
    pub minutes: u16,
    pub units: u32,
    pub billable: bool,
    pub reasons: Vec<Reason>,
    pub procedure_code: String,
    pub modifiers: Vec<String>,
    pub rendering_provider: Option<ActorId>,
}

/// Units for `minutes` under the 15-minute rule with first-unit minimum `m`.
pub fn fifteen_minute_units(minutes: u32, m: u16) -> u32 {
    if minutes < u32::from(m) {
        0
    } else {
        (minutes + 15 - u32::from(m)) / 15
    }
}

/// Evaluates every contact of one recipient in one month (callers group by case and month), in
/// the documented order: lines sorted by date of service, time, activity id; each line's own
/// checks; units (per contact, or the day's total allocated to its lines); the daily cap, then
/// the monthly cap.
pub fn evaluate_month(profile: &Profile, recipient: &Recipient, contacts: &[Contact]) -> Vec<Line> {
    let zone = recipient.zone;
    let mut order: Vec<&Contact> = contacts.iter().collect();
    order.sort_by(|a, b| {
        (a.date_of_service(zone), a.occurred_at, a.activity_id).cmp(&(
            b.date_of_service(zone),
            b.occurred_at,
            b.activity_id,
        ))
    });
    // Each line's own checks, then the units its minutes earn before any cap.
    let mut lines: Vec<(&Contact, Vec<Reason>, u32)> = order
        .into_iter()
        .map(|c| (c, qualification(profile, recipient, c), 0))
        .collect();
    match profile.units {
        UnitRule::FifteenMinute {
            first_unit_minimum_minutes: m,
            rounding: Rounding::PerDayTotal,
        } => allocate_day_totals(&mut lines, m, zone),
        UnitRule::FifteenMinute {
            first_unit_minimum_minutes: m,
            rounding: Rounding::PerContact,
        } => {
            for (c, reasons, units) in &mut lines {
                if reasons.is_empty() {
                    *units = fifteen_minute_units(u32::from(c.minutes), m);
                }
            }
        }
        UnitRule::Encounter => {
            let mut encounter_days: Vec<NaiveDate> = Vec::new();
            for (c, reasons, units) in &mut lines {
                if !reasons.is_empty() {
                    continue;
                }
                let day = c.date_of_service(zone);
                if encounter_days.contains(&day) {
                    reasons.push(Reason::DuplicateEncounter);
                } else {
                    encounter_days.push(day);
                    *units = 1;
                }
            }
        }
        UnitRule::MonthlyCaseRate => {
            let mut billed = false;
            for (_, reasons, units) in &mut lines {
                if !reasons.is_empty() {
                    continue;
                }
                if billed {
                    reasons.push(Reason::CaseRateAlreadyBilled);
                } else {
                    billed = true;
                    *units = 1;
                }
            }
        }
    }
    // The caps, in order, over the units earned.
    let mut day_units: HashMap<NaiveDate, u32> = HashMap::new();
    let mut month_units = 0u32;
    for (c, reasons, units) in &mut lines {
        if *units == 0 {
            continue;
        }
        let day = c.date_of_service(zone);
        if let Some(cap) = profile.caps.daily_units {
            let used = day_units.entry(day).or_default();
            if *used + *units > cap {
                *units = cap.saturating_sub(*used);
                reasons.push(Reason::DailyCapReached);
            }
            *used += *units;
        }
        if let Some(cap) = profile.caps.monthly_units {
            if month_units + *units > cap {
                let allowed = cap.saturating_sub(month_units);
                if let Some(used) = day_units.get_mut(&day) {
                    *used -= *units - allowed;
                }
                *units = allowed;
                reasons.push(Reason::MonthlyCapReached);
            }
            month_units += *units;
        }
    }
    lines
        .into_iter()
        .map(|(c, reasons, units)| {
            let billable = units > 0;
            Line {
                activity_id: c.activity_id,
                case_id: recipient.case_id,
                medicaid_id: recipient.medicaid_id.clone(),
                date_of_service: c.date_of_service(zone),
                component: c.component,
                contact_type: c.contact_type,
                minutes: c.minutes,
                units,
                billable,
                reasons,
                procedure_code: profile.procedure_code.clone(),
                modifiers: if billable {
                    profile
                        .modifiers
                        .get(&c.contact_type)
                        .cloned()
                        .unwrap_or_default()
                } else {
                    Vec::new()
                },
                rendering_provider: c.rendering_provider.clone(),
            }
        })
        .collect()
}

/// `per_day_total`: the qualifying lines of each local day (one recipient and procedure code, as
/// `evaluate_month` is called) share the units of their added minutes. Walking the day's lines in
/// order, each takes the units the running total gains with its minutes, so the lines add up to
/// the day's units and the unit falls to the line that completes it. A qualifying line that gains
/// none says why: the day's total never reached a unit (`below_minimum_minutes`), or its minutes
/// went into units the day's other lines carry (`combined_into_day_total`).
fn allocate_day_totals(lines: &mut [(&Contact, Vec<Reason>, u32)], minimum: u16, zone: Tz) {
    let mut start = 0;
    while start < lines.len() {
        let day = lines[start].0.date_of_service(zone);
        let end = start
            + lines[start..]
                .iter()
                .take_while(|(c, _, _)| c.date_of_service(zone) == day)
                .count();
        let mut total = 0u32;
        let mut earned = 0u32;
        for (c, reasons, units) in &mut lines[start..end] {
            if reasons.is_empty() {
                total += u32::from(c.minutes);
                let now = fifteen_minute_units(total, minimum);
                *units = now - earned;
                earned = now;
            }
        }
        for (_, reasons, units) in &mut lines[start..end] {
            if reasons.is_empty() && *units == 0 {
                reasons.push(if earned == 0 {
                    Reason::BelowMinimumMinutes
                } else {
                    Reason::CombinedIntoDayTotal
                });
            }
        }
        start = end;
    }
}

/// Every reason a contact does not qualify on its own, in the documented order.
fn qualification(profile: &Profile, recipient: &Recipient, c: &Contact) -> Vec<Reason> {
    let day = c.date_of_service(recipient.zone);
    let mut reasons = Vec::new();
    if c.voided {
        reasons.push(Reason::Voided);
    }
    if recipient.medicaid_id.is_none() {
        reasons.push(Reason::NoMedicaidId);
    }
    if recipient.intake_date.is_none_or(|d| day < d) {
        reasons.push(Reason::NotEnrolledOnDate);
    }
    if recipient.closed_on(day) {
        reasons.push(Reason::CaseClosed);
    }
    if !profile.billable_components.contains(&c.component) {
        reasons.push(Reason::ComponentNotBillable);
    }
    if !profile.contacts.billable_types.contains(&c.contact_type) {
        reasons.push(Reason::ContactTypeNotBillable);
    } else if c.contact_type == ContactType::Collateral
        && !c
            .with
            .iter()
            .any(|p| profile.contacts.collateral_participants.contains(p))
    {
        reasons.push(Reason::CollateralNotAboutChild);
    }
    if let Some(location) = c.location {
        if profile.institution.excluded_locations.contains(&location) {
            let window = i64::from(profile.institution.transition_window_days);
            let in_window = recipient.discharges.iter().any(|d| {
                let before = (*d - day).num_days();
                (0..=window).contains(&before)
            });
            if !in_window {
                reasons.push(Reason::InstitutionOutsideWindow);
            }
        }
    }
    let type_minimum = profile
        .contacts
        .minimum_minutes
        .get(&c.contact_type)
        .copied()
        .unwrap_or(0);
    // Under `per_day_total` the unit's minimum applies to the day's total, not to each contact.
    let unit_minimum = match profile.units {
        UnitRule::FifteenMinute {
            first_unit_minimum_minutes: m,
            rounding: Rounding::PerContact,
        } => m,
        UnitRule::FifteenMinute {
            rounding: Rounding::PerDayTotal,
            ..
        }
        | UnitRule::Encounter
        | UnitRule::MonthlyCaseRate => 0,
    };
    if c.minutes < type_minimum.max(unit_minimum) {
        reasons.push(Reason::BelowMinimumMinutes);
    }
    for field in &profile.documentation.required {
        let present = match field {
            DocField::Note => c.has_note,
            DocField::RenderingProvider => c.rendering_provider.is_some(),
            DocField::Location => c.location.is_some(),
        };
        if !present {
            reasons.push(Reason::MissingDocumentation(*field));
        }
    }
    reasons
}

/// The billing month (`YYYY-MM`) of a date.
pub fn month_of(day: NaiveDate) -> (i32, u32) {
    (day.year(), day.month())
}

/// A `YYYY-MM` billing month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    pub fn of(day: NaiveDate) -> Self {
        let (year, month) = month_of(day);
        Self { year, month }
    }

    /// Parses `YYYY-MM`.
    pub fn parse(s: &str) -> Option<Self> {
        let (y, m) = s.split_once('-')?;
        if y.len() != 4 || m.len() != 2 {
            return None;
        }
        let (year, month) = (y.parse().ok()?, m.parse().ok()?);
        NaiveDate::from_ymd_opt(year, month, 1)?;
        Some(Self { year, month })
    }

    pub fn contains(self, day: NaiveDate) -> bool {
        Self::of(day) == self
    }

    /// The instants, as seconds since the epoch, of every contact whose local date in any time
    /// zone may fall in this month: from 14 hours before it starts (UTC) to 14 hours after it
    /// ends, end exclusive (the widest offsets; see `months_of`).
    pub fn window(self) -> (i64, i64) {
        let start = |y: i32, m: u32| {
            NaiveDate::from_ymd_opt(y, m, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(0, |t| t.and_utc().timestamp())
        };
        let (y, m) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        let reach = 14 * 3600;
        (start(self.year, self.month) - reach, start(y, m) + reach)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// As `YYYY-MM`.
impl Serialize for Month {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Month {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Month::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not a YYYY-MM month: {s}")))
    }
}

/// A logged contact as the billing projection keeps it: the contact and the event that logged
/// it (which a void names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredContact {
    pub event_id: schemas::EventId,
    #[serde(flatten)]
    pub contact: Contact,
}

/// The months `contacts` may fall in, in any time zone: each contact's UTC date and the dates 14
/// hours either side (the widest offsets), so that the months an export reads hold every contact
/// whatever zone its agency is configured with (a change of zone needs no rebuild).
/// `BillingCase::lines` then takes exactly the month's local dates.
pub fn months_of<'a>(contacts: impl IntoIterator<Item = &'a StoredContact>) -> Vec<Month> {
    let reach = chrono::Duration::hours(14);
    let mut months: Vec<Month> = contacts
        .into_iter()
        .flat_map(|c| {
            let at = c.contact.occurred_at;
            [at - reach, at, at + reach].map(|t| Month::of(t.date_naive()))
        })
        .collect();
    months.sort();
    months.dedup();
    months
}

/// One contact row of the billing projection: the contact, where it sits in its case's stream
/// (a void names the sequence and the event), and the instant it happened, as seconds since the
/// epoch (a month's export reads the rows of its window, `Month::window`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContactRow {
    pub sequence: u64,
    pub at: i64,
    pub contact: StoredContact,
}

/// What one batch adds to a case's billing beside its header (a stored state is the header
/// only, so that applying a batch costs what the batch holds, not what the case has
/// accumulated).
pub type Folded = crate::log::Folded<ContactRow>;

impl Folded {
    /// The months the batch's contacts may fall in (`months_of`) that `case` was not recorded
    /// in before, now recorded in it (`BillingCase::recorded_months`).
    pub fn new_months(&self, case: &mut BillingCase) -> Vec<Month> {
        months_of(self.contacts.iter().map(|r| &r.contact))
            .into_iter()
            .filter(|m| case.recorded_months.insert(*m))
            .collect()
    }
}

/// The billing projection's fold: a case's events of one batch, in log order, onto its stored
/// header (the person who logged a contact is its rendering provider). The contacts the batch
/// logs come back as rows, voided already if the batch voids them; a void comes back too, for
/// the rows of earlier batches. A contact whose activity id the case already holds is the
/// store's to refuse (one row per activity id), as `BillingCase::apply` refuses it in memory.
///
/// A contact leaves the header as it was, its `version` included, so a batch of a case's
/// contacts in months the case is recorded in changes nothing the store must write back but the
/// rows (`version` unchanged, no `new_months`). A contact after `version` is folded again if its
/// batch is replayed, and refused again by the rows' keys.
pub fn fold(case: &mut BillingCase, events: &[&LogEvent]) -> Result<Folded, ApplyError> {
    let mut sequences = Vec::new();
    let mut voided = Vec::new();
    let held = case.contacts.len();
    for e in events {
        // Idempotent: an event this state already holds (a batch replayed) changes nothing.
        if e.event.sequence <= case.version {
            continue;
        }
        let event = e.event.case_event()?;
        if !matches!(event, aggregates::CaseEvent::ContactLogged { .. }) {
            case.version = e.event.sequence;
        }
        let before = case.contacts.len();
        case.apply(e.event.event_id, e.event.metadata.actor_id.clone(), &event);
        if case.contacts.len() > before {
            sequences.push(e.event.sequence);
        }
        if let aggregates::CaseEvent::EntryVoided {
            voided_event_id,
            voided_sequence,
            ..
        } = &event
        {
            voided.push(VoidRow {
                sequence: *voided_sequence,
                event_id: *voided_event_id,
            });
        }
    }
    let added = case.contacts.split_off(held);
    // The state may be kept after the batch (the store remembers headers): keep none of the
    // room the batch's contacts took.
    case.contacts.shrink_to_fit();
    let contacts = added
        .into_iter()
        .zip(sequences)
        .map(|(contact, sequence)| ContactRow {
            sequence,
            at: contact.contact.occurred_at.timestamp(),
            contact,
        })
        .collect();
    Ok(Folded { contacts, voided })
}

/// What billing knows of one case: the recipient's facts and its contacts, folded from the
/// case's events. The billing projection stores the header (everything but `contacts`) per case
/// and each contact as a row (`fold`); readers get the two put together, a month's export with
/// the contacts of the month's window only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BillingCase {
    /// The sequence of the last event folded into the header, contacts aside (`fold`; states
    /// stored before it was kept read as 0).
    #[serde(default)]
    pub version: u64,
    pub case_id: Option<CaseId>,
    pub agency: Option<schemas::AgencyId>,
    pub medicaid_id: Option<MedicaidId>,
    pub intake_date: Option<NaiveDate>,
    /// Transitions (closing the case) and reopenings, by event, voids removed.
    pub transitions: Vec<(schemas::EventId, NaiveDate)>,
    pub reopenings: Vec<(schemas::EventId, NaiveDate)>,
    pub contacts: Vec<StoredContact>,
    /// The months the store has recorded this case in (`months_of` its contacts), so that a
    /// batch records only the months new to the case instead of every month of every contact
    /// again. Bookkeeping of the projection's `fold`, not of `apply`: a state folded in memory
    /// from the whole log has none, and a header stored before it existed starts empty.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub recorded_months: BTreeSet<Month>,
}

impl BillingCase {
    /// Folds one event. `actor` is who recorded it (the rendering provider of a contact).
    pub fn apply(
        &mut self,
        event_id: schemas::EventId,
        actor: Option<ActorId>,
        event: &aggregates::CaseEvent,
    ) {
        use aggregates::CaseEvent as E;
        match event {
            E::CaseOpened {
                case_id,
                agency,
                intake_date,
                child,
                ..
            } => {
                self.case_id = Some(*case_id);
                self.agency = Some(agency.clone());
                self.intake_date = Some(*intake_date);
                self.medicaid_id = child.medicaid_id.clone();
            }
            E::CaseTransitioned { effective_on, .. } => {
                self.transitions.push((event_id, *effective_on));
            }
            E::CaseReopened { on, .. } => self.reopenings.push((event_id, *on)),
            E::ContactLogged {
                activity_id,
                component,
                contact_type,
                with,
                occurred_at,
                minutes,
                note,
                location,
                ..
            } if !self
                .contacts
                .iter()
                .any(|c| c.contact.activity_id == *activity_id) =>
            {
                self.contacts.push(StoredContact {
                    event_id,
                    contact: Contact {
                        activity_id: *activity_id,
                        occurred_at: *occurred_at,
                        component: *component,
                        contact_type: *contact_type,
                        with: with.clone(),
                        minutes: minutes.get(),
                        has_note: note.is_some(),
                        location: *location,
                        rendering_provider: actor,
                        voided: false,
                    },
                })
            }
            E::EntryVoided {
                voided_event_id, ..
            } => {
                for c in &mut self.contacts {
                    if c.event_id == *voided_event_id {
                        c.contact.voided = true;
                    }
                }
                self.transitions.retain(|(id, _)| id != voided_event_id);
                self.reopenings.retain(|(id, _)| id != voided_event_id);
            }
            _ => {}
        }
    }

    /// The recipient as billing evaluates it: closed periods from each transition to the next
    /// reopening on or after it; every transition date also ends a stay (institution window).
    pub fn recipient(&self, zone: Tz) -> Recipient {
        let mut reopen_dates: Vec<NaiveDate> = self.reopenings.iter().map(|(_, d)| *d).collect();
        reopen_dates.sort();
        let mut closed: Vec<(NaiveDate, Option<NaiveDate>)> = self
            .transitions
            .iter()
            .map(|(_, from)| {
                let until = reopen_dates.iter().find(|r| **r >= *from).copied();
                (*from, until)
            })
            .collect();
        closed.sort();
        Recipient {
            case_id: self.case_id,
            medicaid_id: self.medicaid_id.clone(),
            intake_date: self.intake_date,
            discharges: closed.iter().map(|(from, _)| *from).collect(),
            closed,
            zone,
        }
    }

    /// The billing lines of this case's contacts in `month`, dated in the agency's `zone`.
    pub fn lines(&self, profile: &Profile, month: Month, zone: Tz) -> Vec<Line> {
        let contacts: Vec<Contact> = self
            .contacts
            .iter()
            .filter(|c| month.contains(c.contact.date_of_service(zone)))
            .map(|c| c.contact.clone())
            .collect();
        evaluate_month(profile, &self.recipient(zone), &contacts)
    }

    /// The latest date of service of a billable line under `profile`, in `through` or an earlier
    /// month: the one definition of "billable" that caseload views use too.
    pub fn last_billable(&self, profile: &Profile, through: Month, zone: Tz) -> Option<NaiveDate> {
        let mut months: Vec<Month> = self
            .contacts
            .iter()
            .map(|c| Month::of(c.contact.date_of_service(zone)))
            .filter(|m| *m <= through)
            .collect();
        months.sort_unstable();
        months.dedup();
        months.into_iter().rev().find_map(|month| {
            self.lines(profile, month, zone)
                .into_iter()
                .filter(|l| l.billable)
                .map(|l| l.date_of_service)
                .max()
        })
    }
}

/// What a line of an export batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// First time billed.
    Original,
    /// Reverses a line billed in an earlier batch (the contact was voided, or its units changed).
    Void,
    /// Bills the corrected line after a void.
    Replacement,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Original => "original",
            LineKind::Void => "void",
            LineKind::Replacement => "replacement",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "original" => Some(LineKind::Original),
            "void" => Some(LineKind::Void),
            "replacement" => Some(LineKind::Replacement),
            _ => None,
        }
    }
}

/// A line some earlier batch exported, in export order.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub line_id: String,
    pub kind: LineKind,
    pub fingerprint: String,
    pub line: Line,
}

/// A line for the next batch: what it is, which exported line it adjusts, and its content.
#[derive(Debug, Clone, PartialEq)]
pub struct Adjustment {
    pub kind: LineKind,
    pub adjusts: Option<String>,
    pub line: Line,
}

/// What a payer is billed for on a line: if any of it changes, the line is adjusted.
pub fn fingerprint(line: &Line) -> String {
    use sha2::{Digest, Sha256};
    let billed = serde_json::json!([
        line.activity_id,
        line.case_id,
        line.medicaid_id,
        line.date_of_service,
        line.component,
        line.contact_type,
        line.minutes,
        line.units,
        line.billable,
        line.procedure_code,
        line.modifiers,
        line.rendering_provider,
    ]);
    hex::encode(Sha256::digest(billed.to_string().as_bytes()))
}

/// The next batch's lines for one case: a billable line never billed is an `original`; a billed
/// line that is no longer billable is `void`ed; a billed line whose billed content changed is
/// `void`ed and billed again as a `replacement`; anything else is already right and left out.
/// `current` is in evaluation order, `exported` in export order (earlier batches first).
pub fn adjustments(current: &[Line], exported: &[Exported]) -> Vec<Adjustment> {
    // What each activity stands billed for now: its last original or replacement not voided since;
    // and the last line it was ever billed by, voided or not.
    let mut outstanding: HashMap<ActivityId, &Exported> = HashMap::new();
    let mut last_billed: HashMap<ActivityId, &Exported> = HashMap::new();
    for e in exported {
        match e.kind {
            LineKind::Original | LineKind::Replacement => {
                outstanding.insert(e.line.activity_id, e);
                last_billed.insert(e.line.activity_id, e);
            }
            LineKind::Void => {
                outstanding.remove(&e.line.activity_id);
            }
        }
    }
    let mut out = Vec::new();
    for line in current {
        match (outstanding.get(&line.activity_id), line.billable) {
            // An activity is an original once in a month: billed again after a void, it is a
            // replacement of the line that was voided (the store's constraints hold it to this).
            (None, true) => out.push(match last_billed.get(&line.activity_id) {
                None => Adjustment {
                    kind: LineKind::Original,
                    adjusts: None,
                    line: line.clone(),
                },
                Some(voided) => Adjustment {
                    kind: LineKind::Replacement,
                    adjusts: Some(voided.line_id.clone()),
                    line: line.clone(),
                },
            }),
            (None, false) => {}
            (Some(prev), billable) => {
                if billable && prev.fingerprint == fingerprint(line) {
                    continue;
                }
                out.push(Adjustment {
                    kind: LineKind::Void,
                    adjusts: Some(prev.line_id.clone()),
                    line: prev.line.clone(),
                });
                if billable {
                    out.push(Adjustment {
                        kind: LineKind::Replacement,
                        adjusts: Some(prev.line_id.clone()),
                        line: line.clone(),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20-minute monitoring call at `at`.
    fn phone_call(at: DateTime<Utc>) -> StoredContact {
        StoredContact {
            event_id: schemas::EventId::generate(),
            contact: Contact {
                activity_id: ActivityId::generate(),
                occurred_at: at,
                component: TcmComponent::Monitoring,
                contact_type: ContactType::Phone,
                with: vec![],
                minutes: 20,
                has_note: false,
                location: None,
                rendering_provider: None,
                voided: false,
            },
        }
    }

    #[test]
    fn a_months_window_reaches_fourteen_hours_either_side() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap().timestamp();
        let december = Month::parse("2026-12").unwrap();
        assert_eq!(
            december.window(),
            (at("2026-11-30T10:00:00Z"), at("2027-01-01T14:00:00Z")),
            "December runs into the next year"
        );
        // A contact whose local date is in the month in any zone lies in the window, and each
        // of its months (`months_of`) is one whose window holds it.
        for t in [
            "2026-11-30T10:00:00Z",
            "2026-12-15T00:00:00Z",
            "2027-01-01T13:59:59Z",
        ] {
            let when: DateTime<Utc> = t.parse().unwrap();
            let (lo, hi) = december.window();
            assert!(lo <= when.timestamp() && when.timestamp() < hi, "{t}");
        }
        let edge: DateTime<Utc> = "2027-01-01T13:59:59Z".parse().unwrap();
        let contact = phone_call(edge);
        let months = months_of([&contact]);
        assert_eq!(months, [december, Month::parse("2027-01").unwrap()]);
        for m in months {
            let (lo, hi) = m.window();
            assert!(lo <= edge.timestamp() && edge.timestamp() < hi, "{m}");
        }
    }

    /// A batch of a case's contacts alone leaves its header as it was but for the months new
    /// to it (so the store need not write back a header whose months it holds); an event folded
    /// into the header moves `version`.
    #[test]
    fn contacts_leave_the_header_as_it_was() {
        use crate::log::testing::{refs, Stream};
        let mut stream = Stream::new();
        let first = [stream.opened(), stream.contact("2026-11-03T10:00:00Z")];
        let mut case = BillingCase::default();
        let rows = fold(&mut case, &refs(&first)).unwrap();
        assert_eq!(case.version, 1, "the contact is a row, not header");
        assert!(!rows.new_months(&mut case).is_empty(), "November is new");
        let before = case.clone();

        let calls = [
            stream.contact("2026-11-04T10:00:00Z"),
            stream.contact("2026-11-05T10:00:00Z"),
        ];
        let rows = fold(&mut case, &refs(&calls)).unwrap();
        assert_eq!(rows.new_months(&mut case), [], "November is recorded");
        assert_eq!(case, before, "contacts alone change nothing in the header");
        let sequences: Vec<u64> = rows.contacts.iter().map(|r| r.sequence).collect();
        assert_eq!(sequences, [3, 4]);

        let december = [stream.contact("2026-12-10T10:00:00Z")];
        let rows = fold(&mut case, &refs(&december)).unwrap();
        assert_eq!(
            rows.new_months(&mut case),
            [Month::parse("2026-12").unwrap()]
        );
        assert_ne!(case, before, "a month new to the case is in the header");

        let before = case.clone();
        let void = [stream.void(&calls[0])];
        let rows = fold(&mut case, &refs(&void)).unwrap();
        assert_eq!((case.version, rows.voided.len()), (6, 1));
        assert_ne!(case, before);
    }

    /// A batch records only the months new to its case; the months read back from a stored
    /// header, and a header stored before they were kept reads back with none.
    #[test]
    fn a_case_is_recorded_in_a_month_once() {
        let row = |t: &str| ContactRow {
            sequence: 1,
            at: 0,
            contact: phone_call(t.parse().unwrap()),
        };
        let batch = |times: &[&str]| Folded {
            contacts: times.iter().map(|t| row(t)).collect(),
            voided: vec![],
        };
        let month = |m: &str| Month::parse(m).unwrap();
        let mut case = BillingCase::default();
        assert_eq!(
            batch(&["2026-11-03T12:00:00Z", "2026-11-30T20:00:00Z"]).new_months(&mut case),
            [month("2026-11"), month("2026-12")]
        );
        assert_eq!(
            batch(&["2026-11-12T12:00:00Z"]).new_months(&mut case),
            [],
            "recorded before"
        );
        let stored = serde_json::to_value(&case).unwrap();
        assert_eq!(
            stored["recorded_months"],
            serde_json::json!(["2026-11", "2026-12"])
        );
        let mut read: BillingCase = serde_json::from_value(stored).unwrap();
        assert_eq!(read, case);
        assert_eq!(
            batch(&["2026-12-31T12:00:00Z"]).new_months(&mut read),
            [month("2027-01")]
        );
        let mut older: BillingCase = serde_json::from_value(serde_json::json!({
            "case_id": null, "agency": null, "medicaid_id": null, "intake_date": null,
            "transitions": [], "reopenings": [], "contacts": []}))
        .unwrap();
        assert!(older.recorded_months.is_empty());
        assert_eq!(
            batch(&["2026-11-12T12:00:00Z"]).new_months(&mut older),
            [month("2026-11")]
        );
        assert!(serde_json::from_value::<Month>(serde_json::json!("2026-13")).is_err());
    }

    #[test]
    fn every_reason_reads_back_from_its_one_code() {
        let all: Vec<Reason> = Reason::SIMPLE
            .into_iter()
            .chain(DocField::ALL.map(Reason::MissingDocumentation))
            .collect();
        // 14 reasons that carry nothing and one per documentation field: a new variant must be
        // listed in `Reason::SIMPLE` (or carry a field) to be read back.
        assert_eq!(all.len(), 14 + DocField::ALL.len());
        for r in &all {
            let code = r.to_string();
            assert_eq!(code.parse::<Reason>(), Ok(*r), "{code}");
            let json = serde_json::to_string(r).unwrap();
            assert_eq!(json, format!("\"{code}\""));
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), *r);
        }
        assert_eq!(
            Reason::MissingDocumentation(DocField::RenderingProvider).to_string(),
            "missing_documentation:rendering_provider"
        );
        for bad in [
            "",
            "voided:",
            "missing_documentation",
            "missing_documentation:shoe",
            "x",
            "because",
        ] {
            assert!(bad.parse::<Reason>().is_err(), "{bad}");
        }
        for f in DocField::ALL {
            assert_eq!(
                serde_json::to_string(&f).unwrap(),
                format!("\"{}\"", f.as_str())
            );
            assert_eq!(f.as_str().parse::<DocField>(), Ok(f));
        }
    }

    /// The date of service and billing month are local to the agency, whatever offset the
    /// client wrote the time with.
    #[test]
    fn dates_of_service_are_local_to_the_agency() {
        use chrono_tz::Tz;
        // (zone, the instant as the client wrote it, its local date)
        let table: &[(Tz, &str, &str)] = &[
            // 23:30 on the last day of a month
            (
                Tz::America__New_York,
                "2026-10-31T23:30:00-04:00",
                "2026-10-31",
            ),
            (
                Tz::America__Chicago,
                "2026-10-31T23:30:00-05:00",
                "2026-10-31",
            ),
            (
                Tz::America__Los_Angeles,
                "2026-10-31T23:30:00-07:00",
                "2026-10-31",
            ),
            (
                Tz::Pacific__Honolulu,
                "2026-10-31T23:30:00-10:00",
                "2026-10-31",
            ),
            (Tz::UTC, "2026-10-31T23:30:00Z", "2026-10-31"),
            // 00:30 on the first
            (
                Tz::America__New_York,
                "2026-12-01T00:30:00-05:00",
                "2026-12-01",
            ),
            (
                Tz::America__Chicago,
                "2026-12-01T00:30:00-06:00",
                "2026-12-01",
            ),
            (
                Tz::America__Los_Angeles,
                "2026-12-01T00:30:00-08:00",
                "2026-12-01",
            ),
            (
                Tz::Pacific__Honolulu,
                "2026-12-01T00:30:00-10:00",
                "2026-12-01",
            ),
            (Tz::UTC, "2026-12-01T00:30:00Z", "2026-12-01"),
            // the US change from daylight time on 2026-11-01: 01:30 happens twice
            (
                Tz::America__New_York,
                "2026-11-01T01:30:00-04:00",
                "2026-11-01",
            ),
            (
                Tz::America__New_York,
                "2026-11-01T01:30:00-05:00",
                "2026-11-01",
            ),
            (
                Tz::America__Chicago,
                "2026-11-01T23:30:00-06:00",
                "2026-11-01",
            ),
            (
                Tz::America__Los_Angeles,
                "2026-10-31T23:59:00-07:00",
                "2026-10-31",
            ),
            // 29 February 2028
            (
                Tz::America__Los_Angeles,
                "2028-02-29T23:30:00-08:00",
                "2028-02-29",
            ),
            (
                Tz::Pacific__Honolulu,
                "2028-02-29T23:30:00-10:00",
                "2028-02-29",
            ),
            (
                Tz::America__New_York,
                "2028-03-01T00:30:00-05:00",
                "2028-03-01",
            ),
        ];
        for (zone, written, local) in table {
            let with_offset: DateTime<Utc> = chrono::DateTime::parse_from_rfc3339(written)
                .unwrap()
                .with_timezone(&Utc);
            // The same instant given in UTC.
            let in_utc: DateTime<Utc> = with_offset
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                .parse()
                .unwrap();
            let local: NaiveDate = local.parse().unwrap();
            for at in [with_offset, in_utc] {
                let c = Contact {
                    activity_id: ActivityId::generate(),
                    occurred_at: at,
                    component: TcmComponent::Monitoring,
                    contact_type: ContactType::Phone,
                    with: vec![Participant::Guardian],
                    minutes: 20,
                    has_note: true,
                    location: None,
                    rendering_provider: None,
                    voided: false,
                };
                assert_eq!(c.date_of_service(*zone), local, "{written} in {zone}");
                assert_eq!(Month::of(c.date_of_service(*zone)), Month::of(local));
                // The projection's months reach it whatever the zone.
                let stored = StoredContact {
                    event_id: schemas::EventId::generate(),
                    contact: c.clone(),
                };
                assert!(
                    months_of([&stored]).contains(&Month::of(local)),
                    "{written}"
                );
            }
        }
    }
}
