//! The Case aggregate: one child and family's episode of case management, from intake to
//! transition (and possibly reopening).

mod commands;
mod decide;
mod error;
mod events;
mod state;
#[cfg(test)]
mod tests;
mod upcast;

pub use commands::*;
pub use error::{CaseError, RefusalKind};
pub use events::*;
pub use state::*;
pub use upcast::{decode, upcasters};
