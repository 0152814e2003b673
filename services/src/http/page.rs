//! Query strings and cursor pagination, one way for every route.
//!
//! `QueryParams` parses the query string itself, so a bad one is the contract's JSON error
//! (axum's `Query` rejection is plain text): an unknown parameter or a repeated one is `400
//! unknown_parameter` / `400 repeated_parameter`. Every list pages: `limit` (default 100, 1 to
//! 1,000, else `400 invalid_limit`) and an opaque `cursor` (`400 invalid_cursor` when it was not
//! made by this list); the answer's `next_cursor` is null at the end. A cursor holds the sort key
//! of the last item served (a case's sequence, a worker id, ...), so a page starts strictly after
//! it: items that arrive meanwhile are neither skipped (they sort after the key) nor repeated.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// A query string parsed into `T` (a `#[serde(deny_unknown_fields)]` struct), refusing bad ones
/// with the contract's JSON errors: an unknown parameter `400 unknown_parameter`, a repeated one
/// `400 repeated_parameter`, a missing one `400 missing_parameter`, a malformed value `400
/// invalid_value`.
#[derive(Debug)]
pub struct StrictQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        for (key, _) in form_urlencoded::parse(query.as_bytes()) {
            if !seen.insert(key.clone()) {
                return Err(ApiError::bad_request(
                    "repeated_parameter",
                    format!("query parameter `{key}` is given more than once"),
                ));
            }
        }
        serde_urlencoded::from_str(query)
            .map(StrictQuery)
            .map_err(|e| {
                let message = e.to_string();
                let code = if message.starts_with("unknown field") {
                    "unknown_parameter"
                } else if message.starts_with("missing field") {
                    "missing_parameter"
                } else {
                    "invalid_value"
                };
                ApiError::bad_request(code, format!("query: {message}"))
            })
    }
}

/// The paging parameters of a list with no other parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// How many items (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1, max_length = 512)]
    pub cursor: Option<String>,
}

impl Page {
    /// `limit` and `cursor` as given, for the list whose cursors are of `kind`.
    pub fn parse(
        kind: &'static str,
        limit: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<Self, ApiError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_limit",
                        format!("limit must be a whole number from 1 to {MAX_LIMIT}, got `{s}`"),
                    )
                })?,
        };
        let after = cursor.map(|c| decode(kind, c)).transpose()?;
        Ok(Page { kind, limit, after })
    }
}

impl ListQuery {
    pub fn page(&self, kind: &'static str) -> Result<Page, ApiError> {
        Page::parse(kind, self.limit.as_deref(), self.cursor.as_deref())
    }
}

/// Where a page starts and how long it is.
#[derive(Debug, Clone)]
pub struct Page {
    kind: &'static str,
    pub limit: usize,
    /// The sort key of the last item of the previous page, as `next` wrote it.
    pub after: Option<String>,
}

impl Page {
    /// The page of `items` (already sorted by `key`, ascending) after the cursor, and the cursor
    /// of the next page (None at the end).
    pub fn of<T>(&self, items: Vec<T>, key: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
        let mut page: Vec<T> = items
            .into_iter()
            .filter(|item| self.after.as_ref().is_none_or(|after| key(item) > *after))
            .take(self.limit + 1)
            .collect();
        let next = self.cut(&mut page, &key);
        (page, next)
    }

    /// Trims `fetched` (up to `limit + 1` items after the cursor, in key order) to the page and
    /// returns the next page's cursor when there was more.
    pub fn cut<T>(&self, fetched: &mut Vec<T>, key: impl Fn(&T) -> String) -> Option<String> {
        if fetched.len() <= self.limit {
            return None;
        }
        fetched.truncate(self.limit);
        fetched.last().map(|last| encode(self.kind, &key(last)))
    }
}

/// An opaque cursor: the list's kind and the key, base64url. Not a secret, not a promise of
/// format: clients pass it back as they got it.
pub fn encode(kind: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{key}"))
}

fn decode(kind: &str, cursor: &str) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_cursor",
            "cursor is not one this list gave out; pass back `next_cursor` as it was",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .map(str::to_owned)
        .ok_or_else(invalid)
}

/// A sequence number as a key that sorts as the number does.
pub fn seq_key(n: u64) -> String {
    format!("{n:020}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(limit: Option<&str>, cursor: Option<&str>) -> Result<Page, ApiError> {
        Page::parse("events", limit, cursor)
    }

    #[test]
    fn pages_neither_skip_nor_repeat_and_end_with_no_cursor() {
        let items: Vec<u64> = (1..=25).collect();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (got, next) = page(Some("10"), cursor.as_deref())
                .unwrap()
                .of(items.clone(), |n| seq_key(*n));
            seen.extend(got);
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, items);
        // An exact multiple ends without an empty last page.
        let (got, next) = page(Some("25"), None)
            .unwrap()
            .of(items.clone(), |n| seq_key(*n));
        assert_eq!((got.len(), next), (25, None));
        assert_eq!(page(None, None).unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn bad_limits_and_foreign_cursors_are_refused() {
        for limit in ["0", "1001", "-1", "ten", ""] {
            let err = page(Some(limit), None).unwrap_err();
            assert!(err.to_string().contains("limit"), "{limit}: {err}");
        }
        let other = encode("audit", &seq_key(3));
        assert!(page(None, Some(&other)).is_err());
        assert!(page(None, Some("%%%")).is_err());
        assert!(page(None, Some(&encode("events", "x"))).is_ok());
    }
}
