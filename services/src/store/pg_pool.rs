//! The PostgreSQL store's pools: a connection is tested before it is handed out only when it has
//! been idle a while.
//!
//! By default sqlx (0.8) tests every idle connection with a round trip (a "ping") before handing
//! it out, and again each time one goes back to the pool (that one cannot be turned off). Under
//! load a connection is idle for microseconds, and the test on acquire only doubles the round
//! trips of every statement: a profile of the HTTP benchmark (2026-12-01) put the pings at 9% of
//! the server process's CPU, and each wakes a PostgreSQL backend. A connection that has been
//! idle for `IDLE_CHECK` or longer is still tested, so that one the server closed while the
//! pool was quiet (a restart, an idle timeout) is replaced instead of failing a request; one
//! that fails within that window fails its statement, which the caller answers as it answers a
//! lost connection at any other moment.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::Connection;

/// A connection idle this long is tested before it is handed out.
pub const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Pool options for the PostgreSQL store: the caller sets the size and the waits.
pub fn pg_pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < IDLE_CHECK {
                    return Ok(true);
                }
                match conn.ping().await {
                    Ok(()) => Ok(true),
                    Err(error) => {
                        tracing::info!(%error, "closing a pooled connection that failed its test");
                        Ok(false)
                    }
                }
            })
        })
}
