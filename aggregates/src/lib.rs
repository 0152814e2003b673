//! Linkage's write model: the `Case` aggregate (cqrs-es 0.5), its commands, its stored events and
//! every business rule that can refuse a command. Pure: no I/O, no clock (the caller passes the
//! time a command was received), no randomness (the caller passes new ids).

pub mod case;

pub use case::{
    decode, upcasters, Actor, Case, CaseAction, CaseCommand, CaseError, CaseEvent, CaseServices,
    EntryRef, VoidTarget,
};
