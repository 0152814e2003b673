//! The application's one clock: every decision that uses "now" or "today" reads it (a command's
//! `received_at`, and through it every future-date check; the date caseloads and measures are
//! computed for; the default `as_of` of a history; the time stamped on a batch or a logged read).
//!
//! Production runs on the system clock. Tests and demonstrations pin it (`Config::clock`, or
//! `LINKAGE_CLOCK=2026-06-15T23:59:30Z`) and may move it by hand: a pinned clock stands still until
//! it is set, so a test's outcome never depends on the hour it runs at.
//!
//! What the clock does not govern: the time the database stamps on a stored event (`recorded_at`,
//! one clock for every replica) and the timers of leases, polls and timeouts, which measure the
//! machine's elapsed time rather than the case's.

use std::sync::{Arc, RwLock};

use chrono::{DateTime, NaiveDate, Utc};

#[derive(Clone)]
pub struct Clock {
    source: Source,
}

#[derive(Clone)]
enum Source {
    System,
    Pinned(Arc<RwLock<DateTime<Utc>>>),
}

impl Clock {
    /// The machine's clock.
    pub fn system() -> Self {
        Self {
            source: Source::System,
        }
    }

    /// A clock that reads `at` until it is set or advanced.
    pub fn pinned(at: DateTime<Utc>) -> Self {
        Self {
            source: Source::Pinned(Arc::new(RwLock::new(at))),
        }
    }

    /// The system clock, or one pinned at `at` when given.
    pub fn from_config(at: Option<DateTime<Utc>>) -> Self {
        at.map_or_else(Self::system, Self::pinned)
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.source {
            Source::System => Utc::now(),
            Source::Pinned(at) => *at.read().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Today's date in UTC.
    pub fn today(&self) -> NaiveDate {
        self.now().date_naive()
    }

    /// Today's date in `zone` (an agency's: `AppState::zones`).
    pub fn today_in(&self, zone: chrono_tz::Tz) -> NaiveDate {
        self.now().with_timezone(&zone).date_naive()
    }

    pub fn is_pinned(&self) -> bool {
        matches!(self.source, Source::Pinned(_))
    }

    /// Moves a pinned clock to `at` (every copy of this clock sees it). Refused on the system
    /// clock, which only the machine moves.
    pub fn set(&self, to: DateTime<Utc>) -> Result<(), ClockError> {
        match &self.source {
            Source::System => Err(ClockError::NotPinned),
            Source::Pinned(at) => {
                *at.write().unwrap_or_else(|e| e.into_inner()) = to;
                Ok(())
            }
        }
    }

    /// Moves a pinned clock forward by `by`.
    pub fn advance(&self, by: chrono::Duration) -> Result<(), ClockError> {
        self.set(self.now() + by)
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::System => f.write_str("Clock::system"),
            Source::Pinned(_) => write!(f, "Clock::pinned({})", self.now()),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClockError {
    #[error("the system clock cannot be set; pin the clock to move it")]
    NotPinned,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_clock_stands_still_until_moved_and_every_copy_sees_the_move() {
        let at: DateTime<Utc> = "2026-06-15T23:59:30Z".parse().unwrap();
        let clock = Clock::pinned(at);
        let copy = clock.clone();
        assert_eq!(clock.now(), at);
        assert_eq!(clock.today().to_string(), "2026-06-15");
        clock.advance(chrono::Duration::seconds(31)).unwrap();
        assert_eq!(copy.now(), at + chrono::Duration::seconds(31));
        assert_eq!(copy.today().to_string(), "2026-06-16", "past midnight");
    }

    #[test]
    fn the_system_clock_cannot_be_set() {
        assert_eq!(Clock::system().set(Utc::now()), Err(ClockError::NotPinned));
        assert!(!Clock::system().is_pinned());
    }
}
