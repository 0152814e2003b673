//! Wake-ups across replicas on PostgreSQL. After this replica commits, it says so on the
//! `linkage_log` channel (NOTIFY, with its name as the payload), and it listens there for the
//! others: their word moves `Store::log_moved`, which the projector, the relay and the event
//! stream wait on. Polling stays as the fallback (a lost notification costs one poll period).
//!
//! The notification is sent by one task per replica on its own statement, never inside a
//! command's transaction: a transaction that notifies takes a cluster-wide lock when it commits,
//! which would serialize the commands. Bursts coalesce: the task sends at most one notification
//! per `SPACING`, covering every commit since the previous one.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::{Backend, Store};

const CHANNEL: &str = "linkage_log";

/// The least time between two notifications from one replica.
const SPACING: Duration = Duration::from_millis(5);

/// How long to wait before listening again after the listening connection failed.
const RETRY: Duration = Duration::from_secs(1);

impl Store {
    /// Tells the other replicas when this one commits, and this one when they do, until `stop`
    /// turns true. On SQLite (one process) there is nobody to tell: it returns at once.
    pub async fn run_wakeups(&self, mut stop: watch::Receiver<bool>) {
        let Backend::Postgres { pool, .. } = &self.backend else {
            return;
        };
        let notify = async {
            let mut commits = self.commits.subscribe();
            while commits.changed().await.is_ok() {
                if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(&self.replica)
                    .execute(pool)
                    .await
                {
                    tracing::warn!(error = %e, "could not tell the other replicas of a commit");
                }
                tokio::time::sleep(SPACING).await;
            }
        };
        let listen = async {
            loop {
                let mut listener = match listener(pool).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for other replicas' commits; retrying");
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                };
                loop {
                    match listener.recv().await {
                        Ok(n) if n.payload() != self.replica => {
                            self.log_moved.send_modify(|n| *n = n.wrapping_add(1));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "stopped hearing other replicas' commits; listening again");
                            tokio::time::sleep(RETRY).await;
                            break;
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            () = notify => {}
            () = listen => {}
        }
    }
}

/// A connection of `pool`'s database listening on `CHANNEL`.
async fn listener(pool: &sqlx::PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
