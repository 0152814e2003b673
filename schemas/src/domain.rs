//! Domain newtypes. Each has exactly one way in: a parsing constructor that checks its invariant.
//! There are no setters; serde deserialisation goes through the same parser.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::SchemaError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id (UUID v7).
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }
            pub fn parse(s: &str) -> Result<Self, SchemaError> {
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|e| SchemaError::BadId { field: $field, detail: e.to_string() })
            }
            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "format": "uuid"})
            }
        }
    };
}

uuid_id!(
    /// A case: one child and family's episode of case management.
    CaseId,
    "case_id"
);
uuid_id!(ReferralId, "referral_id");
uuid_id!(AppointmentId, "appointment_id");
uuid_id!(ScreeningId, "screening_id");
uuid_id!(GoalId, "goal_id");
uuid_id!(
    /// A logged case-management activity (a contact); the unit billing works on.
    ActivityId,
    "activity_id"
);
uuid_id!(
    /// A stored event's id (UUID v7, assigned by the store).
    EventId,
    "event_id"
);

macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:literal, $check:expr, $allowed:literal $(, pattern = $pattern:literal)? $(, openapi_pattern = $openapi_pattern:expr)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        // The OpenAPI document states what `parse` enforces (lengths, and the characters where a
        // pattern can say them), so that clients and generated tests see the same rules.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                // `openapi_pattern` is for rules only the API document states (the public event
                // schemas, already published, keep theirs).
                let pattern: Option<&str> = None $(.or(Some($pattern)))? $(.or(Some($openapi_pattern)))?;
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .min_length(Some(1))
                    .max_length(Some($max))
                    .pattern(pattern)
                    .description(Some(concat!("Trimmed, non-empty; ", $allowed, ".")))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, SchemaError> {
                let s: String = s.into();
                let trimmed = s.trim();
                if trimmed.is_empty() {
                    return Err(SchemaError::Empty { field: $field });
                }
                if trimmed.chars().count() > $max {
                    return Err(SchemaError::TooLong { field: $field, max: $max });
                }
                let check: fn(char) -> bool = $check;
                if !trimmed.chars().all(check) {
                    return Err(SchemaError::BadCharacters { field: $field, allowed: $allowed });
                }
                Ok(Self(trimmed.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = SchemaError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                #[allow(unused_mut)]
                let mut schema = schemars::json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "description": concat!("Trimmed, non-empty; ", $allowed, ".")
                });
                $(schema.insert("pattern".into(), $pattern.into());)?
                schema
            }
        }
    };
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')
}

/// What `printable` text is, as a regular expression (ECMA-262 and Python alike): no control
/// character but newline and tab, and at least one character that trimming keeps. Spelled out
/// rather than `\s`, whose meaning differs between regex dialects.
const PRINTABLE_PATTERN: &str = concat!(
    "^[^\\x00-\\x08\\x0B-\\x1F\\x7F-\\x9F]*",
    "[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]",
    "[^\\x00-\\x08\\x0B-\\x1F\\x7F-\\x9F]*$"
);

fn printable(c: char) -> bool {
    !c.is_control() || c == '\n' || c == '\t'
}

text_newtype!(
    /// A user or system that acts through a token: a case manager, a supervisor, a service.
    ActorId,
    "actor id",
    64,
    id_char,
    "letters, digits and - _ . @",
    pattern = "^[A-Za-z0-9._@-]+$"
);
text_newtype!(
    /// The organisation an actor works for; cases belong to one.
    AgencyId,
    "agency id",
    64,
    id_char,
    "letters, digits and - _ . @",
    pattern = "^[A-Za-z0-9._@-]+$"
);
text_newtype!(
    /// A provider organisation a referral is sent to.
    ProviderId,
    "provider id",
    64,
    id_char,
    "letters, digits and - _ . @",
    pattern = "^[A-Za-z0-9._@-]+$"
);
text_newtype!(
    /// A person's name as the family gives it.
    PersonName,
    "name",
    100,
    printable,
    "printable characters",
    openapi_pattern = PRINTABLE_PATTERN
);
text_newtype!(
    /// Free text a person writes: a reason, a note, a goal.
    Text,
    "text",
    4000,
    printable,
    "printable characters",
    openapi_pattern = PRINTABLE_PATTERN
);
text_newtype!(
    /// A screening item or question code from an instrument definition.
    ItemCode,
    "item code",
    40,
    |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.',
    "lower-case letters, digits, _ and .",
    pattern = "^[a-z0-9_.]+$"
);
text_newtype!(
    /// A state Medicaid recipient id. Synthetic in every fixture of this project.
    MedicaidId,
    "medicaid id",
    20,
    |c| c.is_ascii_uppercase() || c.is_ascii_digit(),
    "upper-case letters and digits",
    pattern = "^[A-Z0-9]+$"
);
text_newtype!(
    /// A client-chosen key that makes a POST safe to retry.
    IdempotencyKey,
    "idempotency key",
    200,
    |c| c.is_ascii_graphic(),
    "visible ASCII",
    pattern = "^[!-~]+$"
);
text_newtype!(
    /// A kind of service a referral asks for (e.g. `outpatient_therapy`, `housing`).
    ServiceType,
    "service type",
    60,
    |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_',
    "lower-case letters, digits and _",
    pattern = "^[a-z0-9_]+$"
);

/// A JSON number with no fractional part, as JSON Schema's `integer` means it: `3` and `3.0`
/// alike (a client's JSON library may write either). Anything else is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeNumber(pub i64);

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = WholeNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<WholeNumber, E> {
                Ok(WholeNumber(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<WholeNumber, E> {
                i64::try_from(n)
                    .map(WholeNumber)
                    .map_err(|_| E::custom(format!("{n} is too large")))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<WholeNumber, E> {
                // Within ±2^53 every whole f64 is exact and converts losslessly.
                const EXACT: f64 = 9_007_199_254_740_992.0;
                if n.fract() == 0.0 && n.abs() <= EXACT {
                    Ok(WholeNumber(n as i64))
                } else {
                    Err(E::custom(format!("{n} is not a whole number")))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Deserializes an `i64` field that JSON may write as `3` or `3.0` (see [`WholeNumber`]).
pub fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    WholeNumber::deserialize(d).map(|w| w.0)
}

/// Minutes of a case-management activity: 1 to 1440 (one day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "WholeNumber", into = "u16")]
pub struct Minutes(u16);

impl utoipa::PartialSchema for Minutes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .minimum(Some(1))
            .maximum(Some(Minutes::MAX))
            .description(Some("Minutes of the activity: 1 to 1440 (one day)."))
            .into()
    }
}

impl utoipa::ToSchema for Minutes {}

impl Minutes {
    pub const MAX: u16 = 1440;
    pub fn parse(n: i64) -> Result<Self, SchemaError> {
        if !(1..=i64::from(Self::MAX)).contains(&n) {
            return Err(SchemaError::OutOfRange {
                field: "minutes",
                min: 1,
                max: i64::from(Self::MAX),
                got: n,
            });
        }
        Ok(Self(n as u16))
    }
    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<WholeNumber> for Minutes {
    type Error = SchemaError;
    fn try_from(n: WholeNumber) -> Result<Self, Self::Error> {
        Self::parse(n.0)
    }
}

impl From<Minutes> for u16 {
    fn from(m: Minutes) -> u16 {
        m.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_newtypes_trim_and_refuse_empty_or_long() {
        assert_eq!(ActorId::parse("  cm-ada ").unwrap().as_str(), "cm-ada");
        assert_eq!(
            ActorId::parse("   "),
            Err(SchemaError::Empty { field: "actor id" })
        );
        assert!(matches!(
            ActorId::parse("a b"),
            Err(SchemaError::BadCharacters { .. })
        ));
        assert!(matches!(
            PersonName::parse("x".repeat(101)),
            Err(SchemaError::TooLong { .. })
        ));
        assert!(MedicaidId::parse("ZZ00000001").is_ok());
        assert!(MedicaidId::parse("zz0001").is_err());
        assert!(ItemCode::parse("bhn.depression").is_ok());
        assert!(ItemCode::parse("BHN").is_err());
    }

    #[test]
    fn minutes_are_bounded_to_a_day() {
        assert!(Minutes::parse(0).is_err());
        assert!(Minutes::parse(-5).is_err());
        assert_eq!(Minutes::parse(1440).unwrap().get(), 1440);
        assert!(Minutes::parse(1441).is_err());
        let m: Result<Minutes, _> = serde_json::from_str("0");
        assert!(m.is_err());
    }

    #[test]
    fn deserialisation_goes_through_the_parser() {
        let r: Result<ActorId, _> = serde_json::from_str("\"\"");
        assert!(r.is_err());
        let id: CaseId = serde_json::from_str("\"0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b11\"").unwrap();
        assert_eq!(id.to_string(), "0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b11");
        assert_eq!(CaseId::generate().as_uuid().get_version_num(), 7);
    }
}
