//! Read models built from Case events. Pure: they take events or folded state and return views;
//! storing and serving them is `services`' job.

pub mod audit;
pub mod billing;
pub mod case_view;
pub mod caseload;
pub mod fhir;
pub mod history;
pub mod log;
pub mod measures;
pub mod public;
pub mod search;
pub mod sorted_json;
pub mod zones;

pub use case_view::CaseView;
