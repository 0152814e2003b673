//! Finding a case: the keys a case is searched by, and what a search may show of it.
//!
//! Names are compared case- and accent-insensitively, by prefix: both the stored names and the
//! query are reduced to a key (Unicode compatibility decomposition, combining marks dropped,
//! lower case, inner whitespace collapsed), so "Zoë" is found by "zoe" and "ZO".

use aggregates::Case;
use chrono::NaiveDate;
use schemas::{ActorId, CaseId, MedicaidId, PersonName, Program};
use serde::Serialize;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;
use utoipa::ToSchema;

/// A name as it is searched by.
pub fn name_key(name: &str) -> String {
    let folded: String = name
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a search looks for; every given filter must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaseFilter {
    pub medicaid_id: Option<MedicaidId>,
    /// Name keys (`name_key`), each a prefix of the given or the family name.
    pub name: Vec<String>,
    pub birth_date: Option<NaiveDate>,
    /// Open (true) or closed (false).
    pub open: Option<bool>,
    pub program: Option<Program>,
    pub assigned_to: Option<ActorId>,
}

impl CaseFilter {
    /// The name keys of a query of one to `max` words (split at whitespace as given, so that
    /// the count is what a client sees); None for no words or too many. A word that folding
    /// empties (combining marks alone) asks nothing and is left out.
    pub fn name_words(query: &str, max: usize) -> Option<Vec<String>> {
        let words: Vec<&str> = query.split_whitespace().collect();
        if words.is_empty() || words.len() > max {
            return None;
        }
        Some(
            words
                .into_iter()
                .map(name_key)
                .flat_map(|k| k.split(' ').map(str::to_owned).collect::<Vec<_>>())
                .filter(|w| !w.is_empty())
                .collect(),
        )
    }
}

/// The child as a full search row shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ChildRow {
    pub given_name: PersonName,
    pub family_name: PersonName,
    pub birth_date: NaiveDate,
    pub medicaid_id: Option<MedicaidId>,
}

/// One case found. Minimum necessary: a caller who may read the case gets the child and the
/// intake date; anyone else of the agency gets only `case_id`, `status`, `program` and
/// `assigned_to` (enough to see that a case exists and whom to ask), and `child` is absent.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CaseRow {
    pub case_id: CaseId,
    /// `open` or `closed`.
    pub status: &'static str,
    pub program: Program,
    pub assigned_to: Option<ActorId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intake_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child: Option<ChildRow>,
}

impl CaseRow {
    /// The row of `case`, full or minimal. None for a case not opened.
    pub fn of(case: &Case, full: bool) -> Option<Self> {
        let o = case.opened.as_ref()?;
        Some(Self {
            case_id: o.case_id,
            status: if case.closed.is_none() {
                "open"
            } else {
                "closed"
            },
            program: o.program,
            assigned_to: case.assigned_to.clone(),
            intake_date: full.then_some(o.intake_date),
            child: full.then(|| ChildRow {
                given_name: o.child.given_name.clone(),
                family_name: o.child.family_name.clone(),
                birth_date: o.child.birth_date,
                medicaid_id: o.child.medicaid_id.clone(),
            }),
        })
    }

    /// Whether this row shows the child.
    pub fn is_full(&self) -> bool {
        self.child.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_without_case_or_accents() {
        assert_eq!(name_key("Zoë"), "zoe");
        assert_eq!(name_key("  JOSÉ   María "), "jose maria");
        assert_eq!(name_key("Ångström"), "angstrom");
        assert_eq!(name_key("O'Brien-Núñez"), "o'brien-nunez");
        assert_eq!(
            CaseFilter::name_words("Robin  SAMPLE", 3),
            Some(vec!["robin".to_owned(), "sample".to_owned()])
        );
        assert_eq!(CaseFilter::name_words("   ", 3), None);
        assert_eq!(CaseFilter::name_words("a b c d", 3), None);
        assert_eq!(CaseFilter::name_words("\u{301}", 3), Some(vec![]));
    }
}
