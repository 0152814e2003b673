//! Linkage's shared vocabulary: parse-only domain newtypes, the contract's enums, the HTTP wire
//! types, and the screening instruments (versioned data, not code).
//!
//! Nothing here does I/O. Every other crate depends on this one; it depends on none of them.

pub mod domain;
pub mod enums;
pub mod fhir;
pub mod instruments;
pub mod metadata;
pub mod public;
pub mod wire;

pub use domain::*;
pub use enums::*;
pub use metadata::EventMetadata;

/// Every way a value from outside can fail to parse into a domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("{field} has characters outside {allowed}")]
    BadCharacters {
        field: &'static str,
        allowed: &'static str,
    },
    #[error("{field} must be between {min} and {max}, got {got}")]
    OutOfRange {
        field: &'static str,
        min: i64,
        max: i64,
        got: i64,
    },
    #[error("{field} is not a valid id: {detail}")]
    BadId { field: &'static str, detail: String },
    #[error("unknown instrument {instrument} version {version}")]
    UnknownInstrument { instrument: String, version: String },
    #[error("instrument definition {name} is invalid: {detail}")]
    BadInstrumentDefinition { name: String, detail: String },
}
