//! Screening instruments as versioned data. The definitions live in `schemas/instruments/*.json`
//! and are embedded at build time; a state's customised item list is a new file and a new
//! version, never a code change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{InstrumentKind, ItemCode, SchemaError};

const BUILTIN: &[(&str, &str)] = &[
    (
        "cans-synthetic-2026.1.json",
        include_str!("../instruments/cans-synthetic-2026.1.json"),
    ),
    (
        "prapare-2016-core.json",
        include_str!("../instruments/prapare-2016-core.json"),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Need,
    Strength,
    Question,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub code: ItemCode,
    pub domain: String,
    pub kind: ItemKind,
    pub text: String,
    /// For questions: the allowed answer codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    pub min: u8,
    pub max: u8,
    /// Ratings of a need at or above this are actionable (CANS: 2 and 3).
    pub actionable_min: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Instrument {
    pub instrument: InstrumentKind,
    pub version: String,
    pub name: String,
    /// True when the item list is a representative subset, not the full published instrument.
    pub representative_subset: bool,
    pub note: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Scale>,
    pub items: Vec<Item>,
}

/// One value given for one item: a 0-3 rating (CANS) or an answer code (PRAPARE).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum RatingValue {
    Score(#[serde(deserialize_with = "crate::domain::whole_number")] i64),
    Answer(String),
}

/// Why a set of ratings does not fit its instrument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RatingProblem {
    pub item: String,
    pub problem: String,
}

impl Instrument {
    pub fn item(&self, code: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.code.as_str() == code)
    }

    /// Checks every rating against the definition; on success returns the actionable needs
    /// (needs rated at or above the scale's actionable threshold), in item order.
    pub fn check(
        &self,
        ratings: &BTreeMap<ItemCode, RatingValue>,
    ) -> Result<Vec<ItemCode>, Vec<RatingProblem>> {
        let mut problems = Vec::new();
        if ratings.is_empty() {
            problems.push(RatingProblem {
                item: String::new(),
                problem: "no ratings given".into(),
            });
        }
        for (code, value) in ratings {
            let Some(item) = self.item(code.as_str()) else {
                problems.push(RatingProblem {
                    item: code.to_string(),
                    problem: format!("not an item of {} {}", self.instrument, self.version),
                });
                continue;
            };
            match (item.kind, value, &self.scale, &item.answers) {
                (ItemKind::Need | ItemKind::Strength, RatingValue::Score(n), Some(scale), _) => {
                    if *n < i64::from(scale.min) || *n > i64::from(scale.max) {
                        problems.push(RatingProblem {
                            item: code.to_string(),
                            problem: format!("rating {n} is outside {}-{}", scale.min, scale.max),
                        });
                    }
                }
                (ItemKind::Question, RatingValue::Answer(a), _, Some(answers)) => {
                    if !answers.iter().any(|x| x == a) {
                        problems.push(RatingProblem {
                            item: code.to_string(),
                            problem: format!("`{a}` is not one of: {}", answers.join(", ")),
                        });
                    }
                }
                (ItemKind::Question, _, _, _) => problems.push(RatingProblem {
                    item: code.to_string(),
                    problem: "expects an answer code (a string)".into(),
                }),
                _ => problems.push(RatingProblem {
                    item: code.to_string(),
                    problem: "expects a whole-number rating".into(),
                }),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let threshold = self.scale.as_ref().map(|s| i64::from(s.actionable_min));
        Ok(self
            .items
            .iter()
            .filter(|i| i.kind == ItemKind::Need)
            .filter(|i| match (ratings.get(&i.code), threshold) {
                (Some(RatingValue::Score(n)), Some(t)) => *n >= t,
                _ => false,
            })
            .map(|i| i.code.clone())
            .collect())
    }
}

/// The instruments this server knows, by kind and version.
#[derive(Debug, Clone)]
pub struct Catalog {
    instruments: Vec<Instrument>,
}

impl Catalog {
    /// The definitions shipped in `schemas/instruments/`.
    pub fn builtin() -> Result<Self, SchemaError> {
        let mut instruments = Vec::new();
        for (name, text) in BUILTIN {
            let i: Instrument =
                serde_json::from_str(text).map_err(|e| SchemaError::BadInstrumentDefinition {
                    name: (*name).to_owned(),
                    detail: e.to_string(),
                })?;
            instruments.push(i);
        }
        Ok(Self { instruments })
    }

    pub fn all(&self) -> &[Instrument] {
        &self.instruments
    }

    /// The named version, or the newest one of that kind when `version` is None.
    pub fn get(
        &self,
        kind: InstrumentKind,
        version: Option<&str>,
    ) -> Result<&Instrument, SchemaError> {
        let mut of_kind = self.instruments.iter().filter(|i| i.instrument == kind);
        let found = match version {
            Some(v) => of_kind.find(|i| i.version == v),
            None => of_kind.max_by(|a, b| a.version.cmp(&b.version)),
        };
        found.ok_or_else(|| SchemaError::UnknownInstrument {
            instrument: kind.to_string(),
            version: version.unwrap_or("latest").to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratings(pairs: &[(&str, RatingValue)]) -> BTreeMap<ItemCode, RatingValue> {
        pairs
            .iter()
            .map(|(c, v)| (ItemCode::parse(*c).unwrap(), v.clone()))
            .collect()
    }

    #[test]
    fn builtin_definitions_parse_and_have_the_published_shape() {
        let c = Catalog::builtin().unwrap();
        let prapare = c.get(InstrumentKind::Prapare, None).unwrap();
        assert_eq!(prapare.items.len(), 17, "PRAPARE has 17 core questions");
        let groups: std::collections::BTreeSet<_> =
            prapare.items.iter().map(|i| &i.domain).collect();
        assert_eq!(groups.len(), 4, "in 4 groups");
        assert!(prapare.items.iter().all(|i| i
            .answers
            .as_ref()
            .unwrap()
            .iter()
            .any(|a| a == "choose_not_to_answer")));
        let cans = c.get(InstrumentKind::Cans, None).unwrap();
        assert!(cans.representative_subset);
        assert!(cans.items.iter().any(|i| i.kind == ItemKind::Strength));
        assert!(c.get(InstrumentKind::Cans, Some("1999")).is_err());
    }

    #[test]
    fn cans_ratings_are_checked_and_actionable_needs_found() {
        let c = Catalog::builtin().unwrap();
        let cans = c.get(InstrumentKind::Cans, None).unwrap();
        let ok = ratings(&[
            ("bhn.depression", RatingValue::Score(2)),
            ("bhn.anxiety", RatingValue::Score(1)),
            ("rb.self_harm", RatingValue::Score(3)),
            ("str.resilience", RatingValue::Score(3)),
        ]);
        let needs = cans.check(&ok).unwrap();
        let needs: Vec<_> = needs.iter().map(|n| n.as_str()).collect();
        assert_eq!(
            needs,
            vec!["bhn.depression", "rb.self_harm"],
            "strengths are never needs"
        );
        let bad = ratings(&[
            ("bhn.depression", RatingValue::Score(4)),
            ("xx.unknown", RatingValue::Score(1)),
            ("bhn.anxiety", RatingValue::Answer("high".into())),
        ]);
        assert_eq!(cans.check(&bad).unwrap_err().len(), 3);
    }

    #[test]
    fn prapare_answers_come_from_the_definition() {
        let c = Catalog::builtin().unwrap();
        let p = c.get(InstrumentKind::Prapare, None).unwrap();
        let ok = ratings(&[
            (
                "fh.housing_worry",
                RatingValue::Answer("choose_not_to_answer".into()),
            ),
            ("se.stress", RatingValue::Answer("somewhat".into())),
        ]);
        assert_eq!(p.check(&ok).unwrap(), vec![]);
        let bad = ratings(&[("se.stress", RatingValue::Answer("extreme".into()))]);
        assert!(p.check(&bad).is_err());
        let bad = ratings(&[("se.stress", RatingValue::Score(2))]);
        assert!(p.check(&bad).is_err());
    }
}
