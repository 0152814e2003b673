//! The embedded store's pool, with the one guard sqlx's SQLite driver needs after a failed commit.
//!
//! sqlx (0.8) counts a transaction's depth itself. When `COMMIT` fails with SQLITE_FULL or
//! SQLITE_IOERR, SQLite may already have rolled the transaction back; the count stays at 1, and
//! the `ROLLBACK` sqlx sends when the `Transaction` drops then fails ("no transaction is active"),
//! so the count never comes down. Handed out again, such a connection turns the next `BEGIN` into a
//! `SAVEPOINT`, refuses `BEGIN IMMEDIATE`, and, worst, turns a dropped read transaction into a
//! `ROLLBACK TO` that leaves a real transaction open: every later "commit" on it is a `RELEASE`
//! inside that transaction, acknowledged and never durable. The pool therefore never hands out a
//! connection that sqlx believes is inside a transaction: one is only idle after its release
//! (whose ping lets the driver finish any pending rollback), so a depth above zero there can only
//! be this desynchronised state, and the connection is closed instead.

use sqlx::sqlite::SqlitePoolOptions;
use sqlx::Connection;

/// Pool options for the SQLite store: the caller sets the size.
pub fn sqlite_pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new().before_acquire(|conn, meta| {
        Box::pin(async move {
            if conn.is_in_transaction() {
                tracing::warn!(
                    age_ms = meta.age.as_millis() as u64,
                    "closing a SQLite connection left inside a failed transaction"
                );
                return Ok(false);
            }
            Ok(true)
        })
    })
}
