//! The end-to-end suites, linked into one test binary: every suite links the whole service, and
//! one binary instead of ten keeps a fresh clone's build small (each was ~300 MB with debug
//! info) and links once. Run one suite with `cargo test -p linkage-tests --test e2e <suite>::`.

mod api;
mod audit;
mod bench;
mod billing;
mod bus;
mod caseloads;
mod closure;
mod contract;
mod fhir;
mod fuzz;
mod group_commit;
mod history;
mod log;
mod measures;
mod paging;
mod reliability;
mod replicas;
mod roles;
mod search;
mod sso;
mod tokens;
