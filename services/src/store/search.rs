//! Finding cases in the caseload projection (`GET /v1/cases`, the duplicate-intake check) and
//! logging every search. Only the filters given become SQL conditions, each served by an index
//! of migration 0010, so a search reads index ranges, not every case.

use aggregates::Case;
use chrono::{DateTime, Utc};
use projections::search::CaseFilter;
use sqlx::types::Json;

use super::{Backend, Store};
use crate::error::StoreError;

/// A `LIKE` pattern matching strings that start with `prefix` (`\` escapes).
fn prefix_pattern(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The SQL of a search and its text parameters, numbered from 1.
fn search_sql(
    filter: &CaseFilter,
    agency: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> (String, Vec<String>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut binds: Vec<String> = Vec::new();
    let mut bind = |value: String| {
        binds.push(value);
        format!("${}", binds.len())
    };
    if let Some(a) = agency {
        conditions.push(format!("agency = {}", bind(a.to_owned())));
    }
    if let Some(m) = &filter.medicaid_id {
        conditions.push(format!("medicaid_id = {}", bind(m.as_str().to_owned())));
    }
    for word in &filter.name {
        let p = bind(prefix_pattern(word));
        conditions.push(format!(
            "(given_key LIKE {p} ESCAPE '\\' OR family_key LIKE {p} ESCAPE '\\')"
        ));
    }
    if let Some(d) = filter.birth_date {
        conditions.push(format!("birth_date = {}", bind(d.to_string())));
    }
    if let Some(p) = filter.program {
        conditions.push(format!("program = {}", bind(p.as_str().to_owned())));
    }
    if let Some(w) = &filter.assigned_to {
        conditions.push(format!("worker_id = {}", bind(w.as_str().to_owned())));
    }
    match filter.open {
        Some(true) => conditions.push("open".into()),
        Some(false) => conditions.push("NOT open".into()),
        None => {}
    }
    if let Some(a) = after {
        conditions.push(format!("case_id > {}", bind(a.to_owned())));
    }
    let mut sql = "SELECT state FROM caseload_cases".to_owned();
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY case_id LIMIT {limit}"));
    (sql, binds)
}

impl Store {
    /// Up to `limit` cases matching `filter` (of `agency`, or all) after the case id `after`, in
    /// case id order, from the caseload projection.
    pub async fn search_cases(
        &self,
        filter: &CaseFilter,
        agency: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Case>, StoreError> {
        let (sql, binds) = search_sql(filter, agency, after, limit);
        on_pool!(self, pool => {
            let mut query = sqlx::query_scalar::<_, Json<Case>>(&sql);
            for b in &binds {
                query = query.bind(b);
            }
            Ok(query.fetch_all(pool).await?.into_iter().map(|Json(c)| c).collect())
        })
    }

    /// The query plan PostgreSQL would use for a search (`EXPLAIN`), for the benchmark and the
    /// tests that hold the search to its indexes. None on SQLite.
    pub async fn search_plan(
        &self,
        filter: &CaseFilter,
        agency: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let Backend::Postgres { pool, .. } = &self.backend else {
            return Ok(None);
        };
        let (sql, binds) = search_sql(filter, agency, None, 101);
        let explain = format!("EXPLAIN {sql}");
        let mut query = sqlx::query_scalar::<_, String>(&explain).persistent(false);
        for b in &binds {
            query = query.bind(b);
        }
        Ok(Some(query.fetch_all(pool).await?.join("\n")))
    }

    /// Records a search: who, the filters as asked, how many rows and how many full rows.
    pub async fn log_search(
        &self,
        actor: &aggregates::Actor,
        filters: &str,
        rows: usize,
        full_rows: usize,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO case_searches (searched_at, actor_id, actor_role, actor_agency, \
                   filters, rows, full_rows) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(at)
                .bind(actor.id.as_str())
                .bind(actor.role.as_str())
                .bind(actor.agency.as_str())
                .bind(filters)
                .bind(rows as i64)
                .bind(full_rows as i64)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_filters_given_become_conditions() {
        let filter = CaseFilter {
            name: vec!["ro_b%".into()],
            open: Some(true),
            ..CaseFilter::default()
        };
        let (sql, binds) = search_sql(&filter, Some("north"), None, 11);
        assert_eq!(
            sql,
            "SELECT state FROM caseload_cases WHERE agency = $1 AND (given_key LIKE $2 ESCAPE '\\' \
             OR family_key LIKE $2 ESCAPE '\\') AND open ORDER BY case_id LIMIT 11"
        );
        assert_eq!(binds, ["north", "ro\\_b\\%%"]);
    }
}
