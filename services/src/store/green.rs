//! Blue/green rebuilds of a projection on PostgreSQL. The rebuild writes into empty copies of the
//! projection's tables (and of the checkpoint table) in a schema of its own, through a shadow
//! store whose connections look there first, while the live projection goes on serving reads and
//! following the log. When the copy has caught up, one transaction swaps it in: it waits for the
//! live applier's batch in flight (the checkpoint row's lock), moves the live tables out and the
//! copies in (`ALTER TABLE … SET SCHEMA`, which readers wait for only while the transaction
//! commits), gives the copies' indexes the live ones' names, and sets the live checkpoint to the
//! copy's. A live applier that read a batch before the swap then fails its claim and reads again
//! from the new checkpoint; one whose claim matches the new checkpoint applies its batch to the
//! new rows, which are the same rows (folds are deterministic). Readers never see an empty or
//! half-built projection.
//!
//! The copy is bulk-loaded: its tables start with their primary keys only (billing's contact rows
//! without even that, `KEYED_LATER`), rows go in by `COPY` where a projection has a path for it
//! (`Store::bulk_loading`), and the other indexes are built in one pass each when the rows are in
//! (`Green::index`), before the copy follows the log as the live projection does. The server
//! does about the same work either way (billing's 300,000 contact rows: 5.0-5.2 s by JSON
//! `INSERT … ON CONFLICT DO NOTHING` into the table with its three indexes, 4.6 s by `COPY` plus
//! 0.8-0.9 s for the two indexes at the end), yet the rebuild took 8.1-8.2 s instead of
//! 10.3-11.3 s (README, Projections): no batch maintains the secondary indexes, and this process
//! sends `COPY` rows instead of a JSON array (which counts more was not measured).
//!
//! One rebuild of a projection runs at a time across all processes (a session advisory lock,
//! released when its connection closes, also if the process dies). A copy a crashed rebuild left
//! behind is dropped by the next one.

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};

use super::billing::PG_MARK_VOIDED;
use super::{Backend, LogPosition, Store};
use crate::error::StoreError;

/// A projection's copy under construction: its schema, tables and the shadow store that writes
/// there. Dropped (the schema too) by `swap` or `abandon`.
pub struct Green {
    name: &'static str,
    tables: &'static [&'static str],
    schema: String,
    live_schema: String,
    /// The shadow store: the projection's tables and the checkpoint table resolve to the copy's,
    /// everything else (the events) to the live schema's.
    pub store: Store,
    /// Holds the rebuild's advisory lock for as long as it is open.
    lock: PgConnection,
    /// How to open more connections like `lock` (`index` builds on several at once).
    options: PgConnectOptions,
    /// The live tables' indexes other than primary keys (and `KEYED_LATER`'s primary key),
    /// built on the copy by `index`.
    deferred: Vec<Deferred>,
}

/// A live table's index that the copy gets only when its rows are in (`Green::index`).
struct Deferred {
    table: &'static str,
    name: String,
    /// `CREATE [UNIQUE] INDEX …` as the catalog gives the live one.
    definition: String,
    /// The constraint the index backs (a UNIQUE one, or `KEYED_LATER`'s primary key): its name
    /// and definition.
    constraint: Option<(String, String)>,
    primary: bool,
}

/// The table a bulk load fills by `COPY` alone and looks nothing up in, so that its primary key
/// waits for the rows too: keeping billing's contact key up to date row by row was 0.7-0.9 s of
/// the backend's 1.9-2.2 s of CPU for a standalone binary `COPY` of 298,800 rows, against 0.4 s
/// to build it after them (2026-12-01). A bulk load keeps the updates it would make to their
/// rows in a side table until the key is built (`PENDING_VOIDS`).
const KEYED_LATER: &str = "billing_contacts";

/// The side table of `KEYED_LATER`: the voids a bulk load met (written by
/// `write_billing!`), applied in one statement once the indexes are built. A void only ever turns a
/// row's `voided` true, so applying them later, together, ends where applying each in its batch
/// would have. A void that names no contact row (a transition's, or a second contact of an
/// activity that the unique index then drops) matches nothing, as it would have.
const PENDING_VOIDS: &str = "billing_contact_voids";

/// How `write_billing!` adds a bulk load's voids to `PENDING_VOIDS` (found on the shadow
/// store's search path, the copy's schema first).
pub(super) const COPY_PENDING_VOIDS: &str =
    "COPY billing_contact_voids (case_id, sequence, event_id) FROM STDIN (FORMAT binary)";

/// A row of `TABLE_INDEXES`.
type IndexRow = (String, String, bool, Option<String>, Option<String>);

/// A table's indexes: name, definition, whether it is the primary key, and the constraint it
/// backs (name and definition), if any.
const TABLE_INDEXES: &str = "\
SELECT i.relname::text, pg_get_indexdef(x.indexrelid), x.indisprimary, c.conname::text,
       pg_get_constraintdef(c.oid)
  FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
  LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid
 WHERE x.indrelid = $1::regclass
 ORDER BY i.relname";

/// The columns of a table's constraint `$2` (or of its primary key when `$2` is NULL), in order.
const CONSTRAINT_COLUMNS: &str = "\
SELECT a.attname::text
  FROM pg_constraint c
 CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)
  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
 WHERE c.conrelid = $1::regclass AND (c.conname::text = $2 OR ($2 IS NULL AND c.contype = 'p'))
 ORDER BY k.n";

/// Where the swapped-in projection stands.
#[derive(Debug, Clone, Copy)]
pub struct Swapped {
    pub at: LogPosition,
    pub events: i64,
}

/// Quotes an identifier from the catalog for use in a statement.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An index's definition without its name, schema and table: what two copies of a table's
/// indexes have in common.
fn index_shape(definition: &str) -> String {
    let unique = definition.starts_with("CREATE UNIQUE INDEX");
    let rest = definition
        .split_once(" USING ")
        .map_or(definition, |(_, rest)| rest);
    format!("{unique} {rest}")
}

impl Store {
    /// Starts a blue/green rebuild of projection `name` (PostgreSQL only: None on SQLite, whose
    /// one server rebuilds in place). Fails with `RebuildRunning` if another process is
    /// rebuilding it.
    pub async fn green(
        &self,
        name: &'static str,
        tables: &'static [&'static str],
    ) -> Result<Option<Green>, StoreError> {
        let Backend::Postgres { pool, .. } = &self.backend else {
            return Ok(None);
        };
        let options: PgConnectOptions = (*pool.connect_options()).clone();
        let mut lock = PgConnection::connect_with(&options).await?;
        let key = format!("linkage rebuild {name}");
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(&key)
            .fetch_one(&mut lock)
            .await?;
        if !locked {
            return Err(StoreError::RebuildRunning(name.to_owned()));
        }
        let live_schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&mut lock)
            .await?;
        let schema = format!("linkage_green_{name}");
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(&schema)))
            .execute(&mut lock)
            .await?;
        sqlx::query(&format!("CREATE SCHEMA {}", ident(&schema)))
            .execute(&mut lock)
            .await?;
        sqlx::query(&format!(
            "CREATE TABLE {}.projection_checkpoints (LIKE {}.projection_checkpoints INCLUDING ALL)",
            ident(&schema),
            ident(&live_schema),
        ))
        .execute(&mut lock)
        .await?;
        // The projection's tables with their primary keys only (the upserts' conflict targets);
        // the other indexes wait for the rows.
        let mut deferred = Vec::new();
        for table in tables {
            let (copy, live) = (
                format!("{}.{}", ident(&schema), ident(table)),
                format!("{}.{}", ident(&live_schema), ident(table)),
            );
            sqlx::query(&format!(
                "CREATE TABLE {copy} (LIKE {live} INCLUDING ALL EXCLUDING INDEXES)"
            ))
            .execute(&mut lock)
            .await?;
            let indexes: Vec<IndexRow> = sqlx::query_as(TABLE_INDEXES)
                .bind(&live)
                .fetch_all(&mut lock)
                .await?;
            if *table == KEYED_LATER {
                sqlx::query(&format!(
                    "CREATE TABLE {}.{} (case_id uuid NOT NULL, sequence bigint NOT NULL, \
                     event_id uuid NOT NULL)",
                    ident(&schema),
                    ident(PENDING_VOIDS)
                ))
                .execute(&mut lock)
                .await?;
            }
            for (name, definition, primary, constraint, constraint_definition) in indexes {
                let constraint = constraint.zip(constraint_definition);
                match (primary, constraint) {
                    (true, Some((name, definition))) if *table != KEYED_LATER => {
                        sqlx::query(&format!(
                            "ALTER TABLE {copy} ADD CONSTRAINT {} {definition}",
                            ident(&name)
                        ))
                        .execute(&mut lock)
                        .await?;
                    }
                    (primary, constraint) => deferred.push(Deferred {
                        table,
                        name,
                        definition,
                        constraint,
                        primary,
                    }),
                }
            }
        }
        let store = Store::postgres_with(
            None,
            options.clone(),
            1,
            Some(&format!("{schema},{live_schema}")),
        )
        .await?
        .with_replica(format!("{}-rebuild", self.replica()))
        .exclusive()
        .bulk_loading();
        let store = match self.log_batch() {
            Some(events) => store.with_log_batch(events),
            None => store,
        };
        Ok(Some(Green {
            name,
            tables,
            schema,
            live_schema,
            store,
            lock,
            options,
            deferred,
        }))
    }
}

impl Green {
    /// Builds the indexes the copy's tables were created without, one pass over the rows each,
    /// and ends the bulk load: from here on the copy is written as the live projection is.
    ///
    /// The indexes are built all at once, each by `CREATE INDEX` on a connection of its own
    /// (index builds share the table's lock), and a constraint's index then becomes the
    /// constraint (`ADD CONSTRAINT … USING INDEX`, which checks nothing again). One after
    /// another, billing's three took 1.27-1.30 s in three runs on this machine; together,
    /// 0.97-1.02 s (2026-12-01).
    ///
    /// A UNIQUE constraint is where the live projection's `INSERT … ON CONFLICT DO NOTHING`
    /// refused a second row (billing: one contact per activity id), and it kept the first row
    /// written, which is the first in primary-key order (a case's rows are keyed by their place
    /// in its stream). A bulk load refused nothing: should the constraint not hold, the rows
    /// after the first are deleted, as the live projection would never have written them, and
    /// the index is built again.
    pub async fn index(&mut self) -> Result<(), StoreError> {
        let deferred = std::mem::take(&mut self.deferred);
        // Every statement is made first, so a definition this code cannot read fails as itself
        // before any index is built.
        let statements = deferred
            .iter()
            .map(|d| self.create_statement(d))
            .collect::<Result<Vec<_>, _>>()?;
        let built =
            futures::future::join_all(statements.iter().map(|create| self.create(create))).await;
        for ((d, create), built) in deferred.iter().zip(&statements).zip(built) {
            match built {
                Ok(()) => {}
                Err(e) if super::is_code(&e, "23505") && d.constraint.is_some() => {
                    let (name, _) = d.constraint.as_ref().expect("checked");
                    let table = format!("{}.{}", ident(&self.schema), ident(d.table));
                    let live = format!("{}.{}", ident(&self.live_schema), ident(d.table));
                    let deleted = self.keep_first(&table, &live, name).await?;
                    tracing::warn!(
                        table = d.table,
                        constraint = name.as_str(),
                        deleted,
                        "the rebuilt rows broke a unique constraint; kept the first of each, as the live projection does"
                    );
                    sqlx::query(create).execute(&mut self.lock).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        for d in &deferred {
            self.attach(d).await?;
        }
        if self.tables.contains(&KEYED_LATER) {
            self.apply_pending_voids().await?;
        }
        self.store.bulk = false;
        Ok(())
    }

    /// `CREATE [UNIQUE] INDEX` of deferred index `d` on the copy, under the live index's name
    /// (the copy's own schema holds it).
    fn create_statement(&self, d: &Deferred) -> Result<String, StoreError> {
        let table = format!("{}.{}", ident(&self.schema), ident(d.table));
        let unique = d.definition.starts_with("CREATE UNIQUE INDEX");
        let Some((_, method)) = d.definition.split_once(" USING ") else {
            return Err(StoreError::Unexpected(format!(
                "an index definition without USING: {}",
                d.definition
            )));
        };
        Ok(format!(
            "CREATE {}INDEX {} ON {table} USING {method}",
            if unique { "UNIQUE " } else { "" },
            ident(&d.name)
        ))
    }

    /// Runs `create` (a deferred index's `CREATE INDEX`) on a connection of its own.
    async fn create(&self, create: &str) -> Result<(), sqlx::Error> {
        let mut connection = PgConnection::connect_with(&self.options).await?;
        let built = sqlx::query(create).execute(&mut connection).await;
        connection.close().await?;
        built.map(|_| ())
    }

    /// Makes deferred index `d` the constraint it backs on the copy, as the live table has it
    /// (if it backs one).
    async fn attach(&mut self, d: &Deferred) -> Result<(), StoreError> {
        let Some((name, definition)) = &d.constraint else {
            return Ok(());
        };
        let kind = match (d.primary, definition.starts_with("UNIQUE")) {
            (true, _) => "PRIMARY KEY",
            (false, true) => "UNIQUE",
            (false, false) => {
                return Err(StoreError::Unexpected(format!(
                    "{}: a constraint that no index can become: {definition}",
                    d.table
                )))
            }
        };
        sqlx::query(&format!(
            "ALTER TABLE {}.{} ADD CONSTRAINT {} {kind} USING INDEX {}",
            ident(&self.schema),
            ident(d.table),
            ident(name),
            ident(&d.name)
        ))
        .execute(&mut self.lock)
        .await?;
        Ok(())
    }

    /// Marks the contact rows the bulk load's voids name (`PENDING_VOIDS`), now that their key
    /// is built, and drops the side table.
    async fn apply_pending_voids(&mut self) -> Result<(), StoreError> {
        let schema = ident(&self.schema);
        let voids = format!("{schema}.{}", ident(PENDING_VOIDS));
        let marked = sqlx::query(&format!(
            "UPDATE {schema}.{} k SET {PG_MARK_VOIDED} FROM {voids} v \
             WHERE k.case_id = v.case_id AND k.sequence = v.sequence AND k.event_id = v.event_id",
            ident(KEYED_LATER)
        ))
        .execute(&mut self.lock)
        .await?
        .rows_affected();
        sqlx::query(&format!("DROP TABLE {voids}"))
            .execute(&mut self.lock)
            .await?;
        tracing::debug!(marked, "applied the bulk load's voids");
        Ok(())
    }

    /// Deletes every row of `table` that repeats an earlier one's columns of constraint `name`
    /// (as table `live` has it), earlier in primary-key order; returns how many.
    async fn keep_first(&mut self, table: &str, live: &str, name: &str) -> Result<u64, StoreError> {
        let mut columns = Vec::new();
        for constraint in [Some(name), None] {
            let names: Vec<String> = sqlx::query_scalar(CONSTRAINT_COLUMNS)
                .bind(live)
                .bind(constraint)
                .fetch_all(&mut self.lock)
                .await?;
            columns.push(names.iter().map(|c| ident(c)).collect::<Vec<_>>());
        }
        let (unique, key) = (&columns[0], &columns[1]);
        if unique.is_empty() || key.is_empty() {
            return Err(StoreError::Unexpected(format!(
                "{live}: no columns for constraint {name} or the primary key"
            )));
        }
        let same = unique
            .iter()
            .map(|c| format!("a.{c} = b.{c}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let side = |t: &str| {
            key.iter()
                .map(|c| format!("{t}.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let deleted = sqlx::query(&format!(
            "DELETE FROM {table} a USING {table} b WHERE {same} AND ({}) > ({})",
            side("a"),
            side("b")
        ))
        .execute(&mut self.lock)
        .await?
        .rows_affected();
        Ok(deleted)
    }

    /// Swaps the copy in for the live projection, in one transaction, and drops the old rows.
    pub async fn swap(mut self, live: &Store) -> Result<Swapped, StoreError> {
        let Backend::Postgres { pool, .. } = &live.backend else {
            unreachable!("a green copy exists only on PostgreSQL")
        };
        let (schema, live_schema) = (ident(&self.schema), ident(&self.live_schema));
        let retired = ident(&format!("linkage_retired_{}", self.name));
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {retired} CASCADE"))
            .execute(&mut self.lock)
            .await?;
        let mut tx = pool.begin().await?;
        // Readers queue behind the swap's locks: never wait long for a long reader to end.
        sqlx::query("SET LOCAL lock_timeout = '10s'")
            .execute(&mut *tx)
            .await?;
        // The live applier's batch in flight commits first; the next waits for the swap.
        sqlx::query("SELECT name FROM projection_checkpoints WHERE name = $1 FOR UPDATE")
            .bind(self.name)
            .execute(&mut *tx)
            .await?;
        let copy = sqlx::query(&format!(
            "SELECT txid, position, events FROM {schema}.projection_checkpoints WHERE name = $1"
        ))
        .bind(self.name)
        .fetch_optional(&mut *tx)
        .await?;
        let (at, events) = match copy {
            Some(row) => (
                LogPosition {
                    txid: row.try_get("txid")?,
                    position: row.try_get("position")?,
                },
                row.try_get("events")?,
            ),
            None => (LogPosition::START, 0),
        };
        sqlx::query(&format!("CREATE SCHEMA {retired}"))
            .execute(&mut *tx)
            .await?;
        for table in self.tables {
            let indexes = "SELECT indexname::text, indexdef FROM pg_indexes \
                           WHERE schemaname = $1 AND tablename = $2";
            let old: Vec<(String, String)> = sqlx::query_as(indexes)
                .bind(&self.live_schema)
                .bind(table)
                .fetch_all(&mut *tx)
                .await?;
            let table_name = ident(table);
            sqlx::query(&format!(
                "ALTER TABLE {live_schema}.{table_name} SET SCHEMA {retired}"
            ))
            .execute(&mut *tx)
            .await?;
            sqlx::query(&format!(
                "ALTER TABLE {schema}.{table_name} SET SCHEMA {live_schema}"
            ))
            .execute(&mut *tx)
            .await?;
            let mut new: Vec<(String, String)> = sqlx::query_as(indexes)
                .bind(&self.live_schema)
                .bind(table)
                .fetch_all(&mut *tx)
                .await?;
            // The copy's indexes take the names the migrations gave the live ones, so that a
            // later migration finds them.
            for (old_name, old_definition) in &old {
                let shape = index_shape(old_definition);
                let renamed = new
                    .iter()
                    .position(|(_, d)| index_shape(d) == shape)
                    .map(|i| new.swap_remove(i).0);
                match renamed {
                    Some(name) if name != *old_name => {
                        sqlx::query(&format!(
                            "ALTER INDEX {live_schema}.{} RENAME TO {}",
                            ident(&name),
                            ident(old_name)
                        ))
                        .execute(&mut *tx)
                        .await?;
                    }
                    Some(_) => {}
                    None => {
                        return Err(StoreError::Corrupt(format!(
                            "the rebuilt {table} lacks index {old_name}"
                        )))
                    }
                }
            }
        }
        sqlx::query(
            "INSERT INTO projection_checkpoints (name, txid, position, events, error, updated_at, applied_by) \
             VALUES ($1, $2, $3, $4, NULL, now(), $5) \
             ON CONFLICT (name) DO UPDATE SET txid = excluded.txid, position = excluded.position, \
             events = excluded.events, error = NULL, updated_at = excluded.updated_at, \
             applied_by = excluded.applied_by",
        )
        .bind(self.name)
        .bind(at.txid)
        .bind(at.position)
        .bind(events)
        .bind(self.store.replica())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.store.close().await;
        sqlx::query(&format!("DROP SCHEMA {retired} CASCADE"))
            .execute(&mut self.lock)
            .await?;
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut self.lock)
            .await?;
        self.lock.close().await?;
        Ok(Swapped { at, events })
    }

    /// Gives the copy up (a failed rebuild): drops its schema; the live projection is untouched.
    pub async fn abandon(mut self) -> Result<(), StoreError> {
        self.store.close().await;
        sqlx::query(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            ident(&self.schema)
        ))
        .execute(&mut self.lock)
        .await?;
        self.lock.close().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{index_shape, COPY_PENDING_VOIDS, PENDING_VOIDS};

    #[test]
    fn the_bulk_load_copies_its_voids_into_the_side_table_that_index_applies() {
        assert!(COPY_PENDING_VOIDS.starts_with(&format!("COPY {PENDING_VOIDS} (")));
    }

    #[test]
    fn index_shapes_ignore_names_and_schemas() {
        let live = "CREATE INDEX caseload_cases_by_worker ON public.caseload_cases USING btree (worker_id) WHERE open";
        let copy = "CREATE INDEX caseload_cases_worker_id_idx ON public.caseload_cases USING btree (worker_id) WHERE open";
        assert_eq!(index_shape(live), index_shape(copy));
        let unique = "CREATE UNIQUE INDEX caseload_cases_pkey ON public.caseload_cases USING btree (worker_id) WHERE open";
        assert_ne!(index_shape(live), index_shape(unique));
    }
}
