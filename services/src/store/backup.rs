//! Backup and restore of the whole store, taken while servers run.
//!
//! - SQLite: `VACUUM INTO` writes a consistent copy (one read transaction, so every table as of one
//!   moment) to a new file. It is SQLite's documented online copy, reachable through sqlx; the C
//!   backup API (`sqlite3_backup_*`) is not exposed by sqlx, and a second SQLite binding (rusqlite)
//!   would link a second copy of the library.
//! - PostgreSQL: `pg_dump --format=custom`, which reads every table in one repeatable-read
//!   snapshot, and `pg_restore` into an empty database in one transaction. The binaries come from
//!   `LINKAGE_PG_BIN` (a directory), else `PATH`, else the newest `/usr/lib/postgresql/*/bin`.
//!   A password in the URL reaches them through `PGPASSWORD`, never the command line.
//!
//! A backup's kind is read from its first bytes, so `restore` needs only the file and a target.
//! A restore refuses a target that already holds a store: it changes nothing there.

use std::path::{Path, PathBuf};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::{Backend, Store};
use crate::error::StoreError;

/// Which kind of store a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    Sqlite,
    Postgres,
}

impl BackupKind {
    /// The kind of the backup file `path` (its magic bytes).
    pub fn of(path: &Path) -> Result<Self, StoreError> {
        use std::io::Read;
        let mut head = [0u8; 16];
        let mut file = std::fs::File::open(path).map_err(|e| backup_error(path, e))?;
        let n = file.read(&mut head).map_err(|e| backup_error(path, e))?;
        match &head[..n] {
            h if h.starts_with(b"SQLite format 3\0") => Ok(Self::Sqlite),
            h if h.starts_with(b"PGDMP") => Ok(Self::Postgres),
            _ => Err(StoreError::Backup(format!(
                "{} is neither a SQLite database nor a pg_dump archive",
                path.display()
            ))),
        }
    }
}

/// Where a restore writes.
#[derive(Debug, Clone, Copy)]
pub enum RestoreTarget<'a> {
    /// The embedded store's directory (its `linkage.db` must not exist yet).
    Sqlite { data_dir: &'a Path },
    /// An existing, empty PostgreSQL database.
    Postgres { url: &'a str },
}

fn backup_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backup(format!("{}: {e}", path.display()))
}

impl Store {
    /// Writes a consistent copy of the whole store to `out`, which must not exist; its size in
    /// bytes.
    pub async fn backup(&self, out: &Path) -> Result<u64, StoreError> {
        if out.exists() {
            return Err(StoreError::Backup(format!(
                "{} exists; a backup never overwrites a file",
                out.display()
            )));
        }
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(StoreError::Backup(format!(
                    "directory {} does not exist",
                    dir.display()
                )));
            }
        }
        match &self.backend {
            Backend::Sqlite { pool, .. } => {
                let path = out
                    .to_str()
                    .ok_or_else(|| backup_error(out, "the path is not UTF-8"))?;
                sqlx::query("VACUUM INTO $1")
                    .bind(path)
                    .execute(pool)
                    .await?;
            }
            Backend::Postgres { .. } => {
                let url = self.pg_url.as_deref().ok_or_else(|| {
                    StoreError::Backup("this store was not opened from a URL".into())
                })?;
                let mut command = pg_tool("pg_dump", url)?;
                command
                    .arg("--format=custom")
                    .arg("--no-owner")
                    .arg("--file")
                    .arg(out);
                run(command, "pg_dump").await?;
            }
        }
        Ok(std::fs::metadata(out)
            .map_err(|e| backup_error(out, e))?
            .len())
    }
}

/// Restores the backup `file` into `target`, which must hold no store yet; the kinds must match.
/// Open the store afterwards as usual: migrations newer than the backup then run.
pub async fn restore(file: &Path, target: RestoreTarget<'_>) -> Result<(), StoreError> {
    let kind = BackupKind::of(file)?;
    match (kind, target) {
        (BackupKind::Sqlite, RestoreTarget::Sqlite { data_dir }) => {
            let db = data_dir.join("linkage.db");
            if db.exists() {
                return Err(StoreError::Backup(format!(
                    "{} exists; restore into an empty data directory",
                    db.display()
                )));
            }
            std::fs::create_dir_all(data_dir).map_err(StoreError::DataDir)?;
            // Copied beside, then renamed: the store appears whole or not at all.
            let partial = data_dir.join("linkage.db.restoring");
            std::fs::copy(file, &partial).map_err(|e| backup_error(&partial, e))?;
            std::fs::rename(&partial, &db).map_err(|e| backup_error(&db, e))?;
            Ok(())
        }
        (BackupKind::Postgres, RestoreTarget::Postgres { url }) => {
            let options: PgConnectOptions = url.parse().map_err(StoreError::Connect)?;
            let mut c = PgConnection::connect_with(&options).await?;
            let tables: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema()",
            )
            .fetch_one(&mut c)
            .await?;
            c.close().await?;
            if tables > 0 {
                return Err(StoreError::Backup(format!(
                    "the target database holds {tables} tables; restore into an empty database"
                )));
            }
            let mut command = pg_tool("pg_restore", url)?;
            // pg_restore takes the database only as an argument (its name: no password in it).
            let database = options.get_database().unwrap_or("postgres").to_owned();
            command
                .arg("--dbname")
                .arg(database)
                .arg("--no-owner")
                .arg("--exit-on-error")
                .arg("--single-transaction")
                .arg(file);
            run(command, "pg_restore").await
        }
        (kind, _) => Err(StoreError::Backup(format!(
            "{} holds a {kind:?} store; restore it into a store of that kind",
            file.display()
        ))),
    }
}

/// A PostgreSQL client tool connected to the database at `url` through libpq's environment
/// variables, so that the password never appears on a command line.
fn pg_tool(name: &str, url: &str) -> Result<tokio::process::Command, StoreError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| StoreError::Backup(format!("the database URL does not parse: {e}")))?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut command = tokio::process::Command::new(pg_binary(name)?);
    command.env_remove("PGSERVICE");
    if let Some(host) = parsed.host_str() {
        command.env("PGHOST", host);
    }
    if let Some(port) = parsed.port() {
        command.env("PGPORT", port.to_string());
    }
    if !parsed.username().is_empty() {
        command.env("PGUSER", decode(parsed.username()));
    }
    if let Some(password) = parsed.password() {
        command.env("PGPASSWORD", decode(password));
    }
    let database = parsed.path().trim_start_matches('/');
    if !database.is_empty() {
        command.env("PGDATABASE", decode(database));
    }
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            "sslmode" => command.env("PGSSLMODE", value.as_ref()),
            "host" => command.env("PGHOST", value.as_ref()),
            "options" => command.env("PGOPTIONS", value.as_ref()),
            _ => &mut command,
        };
    }
    Ok(command)
}

/// Where the PostgreSQL client binary `name` is.
fn pg_binary(name: &str) -> Result<PathBuf, StoreError> {
    if let Some(dir) = std::env::var_os("LINKAGE_PG_BIN") {
        return Ok(PathBuf::from(dir).join(name));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let candidate = e.path().join("bin").join(name);
            candidate.is_file().then_some((version, candidate))
        })
        .collect();
    installed.sort();
    installed.pop().map(|(_, p)| p).ok_or_else(|| {
        StoreError::Backup(format!(
            "{name} not found: install PostgreSQL's client tools or set LINKAGE_PG_BIN"
        ))
    })
}

async fn run(mut command: tokio::process::Command, name: &str) -> Result<(), StoreError> {
    let output = command
        .output()
        .await
        .map_err(|e| StoreError::Backup(format!("cannot run {name}: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(StoreError::Backup(format!(
        "{name} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_tools_get_the_password_from_the_environment_only() {
        std::env::set_var("LINKAGE_PG_BIN", "/nowhere");
        let command = pg_tool(
            "pg_dump",
            "postgres://u%40x:p%2Bw%25d@db.example:6543/lk?sslmode=require",
        )
        .unwrap();
        let command = command.as_std();
        let env: std::collections::HashMap<_, _> = command
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.to_owned())))
            .collect();
        assert_eq!(env["PGPASSWORD"], "p+w%d");
        assert_eq!(env["PGUSER"], "u@x");
        assert_eq!(env["PGHOST"], "db.example");
        assert_eq!(env["PGPORT"], "6543");
        assert_eq!(env["PGDATABASE"], "lk");
        assert_eq!(env["PGSSLMODE"], "require");
        assert!(command
            .get_args()
            .all(|a| !a.to_string_lossy().contains("p+w")));
    }
}
