//! The HL7 FHIR R4 endpoint, `/fhir/r4`: referrals as ServiceRequest and Task (HL7 BSeR, the
//! Gravity SDOH Clinical Care guide), the child as Patient, the agency and the providers as
//! Organization, read from the FHIR projection (`projections::fhir`). A provider's system reads
//! its Tasks here with a `service` token bound to it (a "light" recipient, in BSeR's words,
//! with no FHIR server of its own); agency staff see their agency's (a case manager their own
//! cases'). Answers are `application/fhir+json`; a refusal is an OperationOutcome.
//!
//! What is served is stated by `GET /fhir/r4/metadata` (`capability_statement`), and the
//! contract's "FHIR R4" section; the resources are checked against the official R4 JSON Schema
//! in the end-to-end tests.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, NaiveDate, Utc};
use projections::fhir::{self as render, FhirCase};
use schemas::fhir::{
    Bundle, BundleEntry, BundleLink, BundleSearch, CodeableConcept, OperationOutcome,
    OperationOutcomeIssue, Resource, FHIR_VERSION,
};
use schemas::{CaseId, ProviderId, ReferralId, Role};
use tracing::instrument;

use crate::auth::{reach, Access, Caller, Reach};
use crate::error::ApiError;
use crate::startup::AppState;
use crate::store::fhir::TaskFilter;

mod subscription;
mod update;

/// The base path of the FHIR endpoint.
pub const BASE: &str = "/fhir/r4";

/// `_count` when none is given, and the most a page holds.
const DEFAULT_COUNT: u32 = 50;
const MAX_COUNT: u32 = 1_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/metadata", get(metadata))
        .route("/Task", get(search_tasks))
        .route("/Task/{id}", get(read_task).put(update::update_task))
        .route("/Task/{id}/_history", get(task_history))
        .route("/Task/{id}/_history/{version}", get(read_task_version))
        .route("/ServiceRequest", get(search_service_requests))
        .route("/ServiceRequest/{id}", get(read_service_request))
        .route("/Patient/{id}", get(read_patient))
        .route("/Subscription", axum::routing::post(subscription::create))
        .route(
            "/Subscription/{id}",
            get(subscription::read).delete(subscription::delete),
        )
        .route("/Organization", get(search_organizations))
        .route("/Organization/{id}", get(read_organization))
        .fallback(|| async {
            FhirError(ApiError::not_found(
                "route_not_found",
                "no such FHIR interaction; see /fhir/r4/metadata",
            ))
        })
        .method_not_allowed_fallback(|| async { FhirError(ApiError::MethodNotAllowed) })
}

/// A refusal on the FHIR endpoint: the same status and code as on `/v1`, as an
/// OperationOutcome.
pub struct FhirError(pub ApiError);

impl From<ApiError> for FhirError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<crate::error::StoreError> for FhirError {
    fn from(e: crate::error::StoreError) -> Self {
        Self(ApiError::Store(e))
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.0.parts();
        if status.is_server_error() {
            tracing::error!(error = %self.0, code, "FHIR request failed");
        }
        // FHIR's IssueType for each status (http://hl7.org/fhir/R4/valueset-issue-type.html).
        let issue_type = match status {
            StatusCode::UNAUTHORIZED => "login",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not-found",
            StatusCode::METHOD_NOT_ALLOWED => "not-supported",
            StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => "conflict",
            StatusCode::UNPROCESSABLE_ENTITY => "business-rule",
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
                "too-long"
            }
            StatusCode::REQUEST_TIMEOUT => "timeout",
            s if s.is_server_error() => "transient",
            _ => "invalid",
        };
        let outcome = OperationOutcome {
            issue: vec![OperationOutcomeIssue {
                severity: "error".into(),
                code: issue_type.into(),
                details: Some(CodeableConcept::of("urn:linkage:error", code, None)),
                diagnostics: Some(message),
            }],
        };
        fhir_response(status, &Resource::OperationOutcome(outcome), None)
    }
}

/// A FHIR answer: the resource as `application/fhir+json`, with its version as the ETag and
/// its time as Last-Modified when `meta` is given.
fn fhir_response(
    status: StatusCode,
    resource: &Resource,
    meta: Option<&schemas::fhir::Meta>,
) -> Response {
    let body = match serde_json::to_vec(resource) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "a FHIR resource did not serialise");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json; charset=utf-8"),
    );
    if let Some(meta) = meta {
        if let Ok(v) = HeaderValue::from_str(&format!("W/\"{}\"", meta.version_id)) {
            headers.insert(header::ETAG, v);
        }
        let http_date = meta
            .last_updated
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        if let Ok(v) = HeaderValue::from_str(&http_date) {
            headers.insert(header::LAST_MODIFIED, v);
        }
    }
    response
}

fn ok(resource: Resource) -> Response {
    let meta = match &resource {
        Resource::Task(t) => t.meta.clone(),
        Resource::ServiceRequest(s) => s.meta.clone(),
        Resource::Patient(p) => Some(p.meta.clone()),
        _ => None,
    };
    fhir_response(StatusCode::OK, &resource, meta.as_ref())
}

/// What a caller may see of the referrals: the filter every read and search starts from.
fn visible(caller: &Caller) -> Result<TaskFilter, ApiError> {
    let actor = &caller.0;
    let mut filter = TaskFilter::default();
    match reach(actor.role, Access::Referrals) {
        Reach::None => {
            return Err(ApiError::forbidden(
                "role_not_allowed",
                format!("the {} role may not read referrals over FHIR", actor.role),
            ))
        }
        Reach::All => {}
        Reach::Agency => filter.agency = Some(actor.agency.as_str().to_owned()),
        Reach::Own => {
            filter.agency = Some(actor.agency.as_str().to_owned());
            filter.worker_id = Some(actor.id.as_str().to_owned());
        }
    }
    if actor.role == Role::Service {
        // A service token speaks for one provider: it sees the referrals sent to it.
        let provider = actor.provider.clone().ok_or_else(|| {
            ApiError::forbidden(
                "provider_required",
                "this service token is bound to no provider",
            )
        })?;
        filter.provider_id = Some(provider);
    }
    Ok(filter)
}

/// Whether `filter` (what a caller may see) selects referral `id` of this case: the same test
/// as the search's, on the case's state.
fn sees(filter: &TaskFilter, fhir_case: &FhirCase, id: ReferralId) -> bool {
    let case = &fhir_case.case;
    let Some(r) = case.referrals.iter().find(|r| r.referral_id == id) else {
        return false;
    };
    filter
        .agency
        .as_deref()
        .is_none_or(|a| case.agency().is_some_and(|mine| mine.as_str() == a))
        && filter.worker_id.as_deref().is_none_or(|w| {
            case.assigned_to
                .as_ref()
                .is_some_and(|mine| mine.as_str() == w)
        })
        && filter
            .provider_id
            .as_ref()
            .is_none_or(|p| r.provider.id == *p)
}

/// Whether a staff member (not a provider) is asking: staff see the Medicaid id.
fn is_staff(caller: &Caller) -> bool {
    caller.0.role != Role::Service
}

/// The absolute base URL of this endpoint as the client reached it (for Bundle links and
/// `fullUrl`s).
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    format!("{scheme}://{host}{BASE}")
}

#[instrument(skip_all)]
async fn metadata(headers: HeaderMap) -> Response {
    let statement = capability_statement(&base_url(&headers));
    fhir_response(StatusCode::OK, &statement, None)
}

/// What this endpoint serves, exactly: the interactions, search parameters and includes the
/// handlers below implement.
pub fn capability_statement(base: &str) -> Resource {
    let param = |name: &str, kind: &str, doc: &str| serde_json::json!({"name": name, "type": kind, "documentation": doc});
    let count = param("_count", "number", "page size: 1 to 1000, default 50");
    let statement = serde_json::json!({
        "status": "active",
        "date": "2026-12-01",
        "publisher": "Linkage",
        "kind": "instance",
        "software": {"name": "Linkage", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Linkage referral tracking", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "documentation": "Referrals (HL7 BSeR, Gravity SDOH Clinical Care) as ServiceRequest and Task. \
                A provider's service token sees the referrals sent to it; agency staff their agency's.",
            "security": {
                "service": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "OAuth"}]}],
                "description": "Authorization: Bearer <token>: a Linkage token, or the agency's OpenID provider's JWT"
            },
            "resource": [
                {
                    "type": "Task",
                    "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "history-instance"},
                        {"code": "search-type"}, {"code": "update",
                        "documentation": "the referral's provider only (a service token), with If-Match; \
                        one step of the loop changed in status, businessStatus, statusReason or output"}],
                    "updateCreate": false,
                    "conditionalUpdate": false,
                    "versioning": "versioned-update",
                    "searchInclude": ["Task:focus", "Task:patient"],
                    "searchParam": [
                        param("owner", "reference", "Organization/<id> of the provider"),
                        param("status", "token", "Task.status; several separated by commas"),
                        param("focus", "reference", "ServiceRequest/<id>"),
                        param("_lastUpdated", "date", "gt or lt a time (each at most once)"),
                        count.clone(),
                    ]
                },
                {
                    "type": "ServiceRequest",
                    "interaction": [{"code": "read"}, {"code": "search-type"}],
                    "searchParam": [
                        param("performer", "reference", "Organization/<id> of the provider"),
                        param("status", "token", "ServiceRequest.status; several separated by commas"),
                        count,
                    ]
                },
                {"type": "Patient", "interaction": [{"code": "read"}]},
                {
                    "type": "Subscription",
                    "interaction": [{"code": "create"}, {"code": "read"}, {"code": "delete"}],
                    "documentation": "the R4 Subscriptions backport: criteria urn:linkage:topic:task-owner-changed \
                        (a Task owned by the subscriber's provider was created or changed), channel rest-hook, \
                        payload id-only; a provider's own system (a service token) subscribes"
                },
                {
                    "type": "Organization",
                    "interaction": [{"code": "read"}, {"code": "search-type"}],
                    "searchParam": [param("identifier", "token",
                        "urn:linkage:agency|<id> or urn:linkage:provider|<id>")]
                }
            ]
        }]
    });
    match statement {
        serde_json::Value::Object(map) => Resource::CapabilityStatement(map),
        _ => unreachable!("a JSON object literal"),
    }
}

fn parse_referral_id(id: &str) -> Result<ReferralId, ApiError> {
    ReferralId::parse(id).map_err(|_| ApiError::not_found("not_found", "no resource with this id"))
}

/// The state of the case holding referral `id`, if the caller may see that referral.
async fn readable_referral(
    state: &AppState,
    caller: &Caller,
    id: &str,
    route: &str,
) -> Result<(ReferralId, FhirCase), ApiError> {
    let id = parse_referral_id(id)?;
    let filter = visible(caller)?;
    let not_found = || ApiError::not_found("not_found", "no resource with this id");
    let fhir_case = state.store.fhir_referral(id).await?.ok_or_else(not_found)?;
    let case_id = fhir_case
        .case
        .opened
        .as_ref()
        .map(|o| o.case_id)
        .ok_or_else(not_found)?;
    let allowed = sees(&filter, &fhir_case, id);
    state
        .store
        .log_read(&caller.0, case_id, route, allowed, state.clock.now())
        .await?;
    if !allowed {
        return Err(ApiError::forbidden(
            "case_not_allowed",
            "this referral is not sent to your provider, not of your agency, or not of your cases",
        ));
    }
    Ok((id, fhir_case))
}

#[instrument(skip_all, fields(id = %id))]
async fn read_task(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let caller = caller?;
    let (id, fhir_case) = readable_referral(&state, &caller, &id, "GET /fhir/r4/Task/{id}").await?;
    let task = render::task(&fhir_case, id)
        .ok_or_else(|| ApiError::not_found("not_found", "no resource with this id"))?;
    Ok(ok(Resource::Task(task)))
}

/// A case's stored events as the folds read them.
async fn case_log(
    state: &AppState,
    case_id: CaseId,
) -> Result<Vec<projections::log::LogEvent>, ApiError> {
    Ok(state
        .store
        .events_of(case_id)
        .await?
        .into_iter()
        .map(|event| projections::log::LogEvent {
            at: projections::log::LogPosition {
                txid: 0,
                position: event.position,
            },
            case_id,
            event,
        })
        .collect())
}

/// A stored event the FHIR fold cannot apply: the store's fault, not the caller's.
fn unfoldable(e: projections::log::ApplyError) -> ApiError {
    ApiError::Store(crate::error::StoreError::Corrupt(format!(
        "a stored event does not fold: {e}"
    )))
}

/// Every version of a referral's Task, from its case's stored events, oldest first.
async fn task_versions(
    state: &AppState,
    caller: &Caller,
    id: &str,
    route: &str,
) -> Result<Vec<schemas::fhir::Task>, ApiError> {
    let (id, fhir_case) = readable_referral(state, caller, id, route).await?;
    let case_id = fhir_case
        .case
        .opened
        .as_ref()
        .map(|o| o.case_id)
        .ok_or_else(|| ApiError::not_found("not_found", "no resource with this id"))?;
    let events = case_log(state, case_id).await?;
    let refs: Vec<&projections::log::LogEvent> = events.iter().collect();
    render::task_history(&refs, id).map_err(unfoldable)
}

/// `GET /Task/{id}/_history`: every version, newest first (a `history` Bundle): the referral's
/// business statuses and appointments as they were.
#[instrument(skip_all, fields(id = %id))]
async fn task_history(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let caller = caller?;
    let versions = task_versions(&state, &caller, &id, "GET /fhir/r4/Task/{id}/_history").await?;
    let base = base_url(&headers);
    let entries: Vec<BundleEntry> = versions
        .into_iter()
        .rev()
        .map(|task| {
            let first = task.meta.as_ref().is_some_and(|m| m.version_id == "1");
            let last_modified = task.meta.as_ref().map(|m| m.last_updated);
            BundleEntry {
                full_url: format!("{base}/Task/{id}"),
                request: Some(schemas::fhir::BundleRequest {
                    method: if first { "POST" } else { "PUT" }.into(),
                    url: if first {
                        "Task".into()
                    } else {
                        format!("Task/{id}")
                    },
                }),
                response: Some(schemas::fhir::BundleResponse {
                    status: if first { "201" } else { "200" }.into(),
                    last_modified,
                }),
                resource: Resource::Task(task),
                search: None,
            }
        })
        .collect();
    let bundle = Bundle {
        kind: "history".into(),
        total: Some(entries.len() as u64),
        link: vec![BundleLink {
            relation: "self".into(),
            url: format!("{base}/Task/{id}/_history"),
        }],
        entry: entries,
    };
    Ok(fhir_response(
        StatusCode::OK,
        &Resource::Bundle(bundle),
        None,
    ))
}

/// `GET /Task/{id}/_history/{version}`: one version as it was (vread).
#[instrument(skip_all, fields(id = %id, version = %version))]
async fn read_task_version(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path((id, version)): Path<(String, String)>,
) -> Result<Response, FhirError> {
    let caller = caller?;
    let task = task_versions(
        &state,
        &caller,
        &id,
        "GET /fhir/r4/Task/{id}/_history/{version}",
    )
    .await?
    .into_iter()
    .find(|t| t.meta.as_ref().is_some_and(|m| m.version_id == version))
    .ok_or_else(|| ApiError::not_found("not_found", "no such version of this Task"))?;
    Ok(ok(Resource::Task(task)))
}

#[instrument(skip_all, fields(id = %id))]
async fn read_service_request(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let caller = caller?;
    let (id, fhir_case) =
        readable_referral(&state, &caller, &id, "GET /fhir/r4/ServiceRequest/{id}").await?;
    let request = render::service_request(&fhir_case, id)
        .ok_or_else(|| ApiError::not_found("not_found", "no resource with this id"))?;
    Ok(ok(Resource::ServiceRequest(request)))
}

#[instrument(skip_all, fields(id = %id))]
async fn read_patient(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let caller = caller?;
    let not_found = || ApiError::not_found("not_found", "no resource with this id");
    let case_id = CaseId::parse(&id).map_err(|_| not_found())?;
    let filter = visible(&caller)?;
    let fhir_case = state.store.fhir_case(&id).await?.ok_or_else(not_found)?;
    // A Patient is shown to whoever may see one of the child's referrals.
    let allowed = fhir_case
        .case
        .referrals
        .iter()
        .any(|r| sees(&filter, &fhir_case, r.referral_id));
    state
        .store
        .log_read(
            &caller.0,
            case_id,
            "GET /fhir/r4/Patient/{id}",
            allowed,
            state.clock.now(),
        )
        .await?;
    if !allowed {
        return Err(ApiError::forbidden(
            "case_not_allowed",
            "none of this child's referrals is sent to your provider, of your agency, or of your cases",
        )
        .into());
    }
    let patient = render::patient(&fhir_case, is_staff(&caller)).ok_or_else(not_found)?;
    Ok(ok(Resource::Patient(patient)))
}

/// The Organizations the caller may see: its agency's (every agency's for an admin) and the
/// providers of the referrals it may see.
async fn visible_organizations(
    state: &AppState,
    caller: &Caller,
) -> Result<Vec<schemas::fhir::Organization>, ApiError> {
    let filter = visible(caller)?;
    let rows = state.store.fhir_organizations(&filter).await?;
    let mut out = vec![render::agency_organization(&caller.0.agency)];
    for (agency, provider, name) in rows {
        if let Ok(agency) = schemas::AgencyId::parse(agency) {
            let org = render::agency_organization(&agency);
            if !out.iter().any(|o| o.id == org.id) {
                out.push(org);
            }
        }
        if let Ok(provider) = ProviderId::parse(provider) {
            let org = render::provider_organization(&provider, name.as_deref());
            if !out.iter().any(|o| o.id == org.id) {
                out.push(org);
            }
        }
    }
    Ok(out)
}

#[instrument(skip_all, fields(id = %id))]
async fn read_organization(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let caller = caller?;
    let org = visible_organizations(&state, &caller)
        .await?
        .into_iter()
        .find(|o| o.id == id)
        .ok_or_else(|| ApiError::not_found("not_found", "no resource with this id"))?;
    Ok(ok(Resource::Organization(org)))
}

/// Changed strictly after, strictly before (`_lastUpdated`).
type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A search's query, parsed strictly: an unknown or repeated parameter is refused (a client
/// that means to ignore nothing is told what was not understood).
struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn parse(raw: Option<String>, known: &[&str]) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        for (name, _) in &pairs {
            if !known.contains(&name.as_str()) {
                return Err(ApiError::bad_request(
                    "unknown_parameter",
                    format!(
                        "search parameter `{name}` is not supported here; supported: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(Self { pairs })
    }

    fn all<'a>(&'a self, name: &str) -> Vec<&'a str> {
        self.pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn one<'a>(&'a self, name: &str) -> Result<Option<&'a str>, ApiError> {
        let values = self.all(name);
        let first = values.first().copied();
        if values.len() > 1 {
            return Err(ApiError::bad_request(
                "repeated_parameter",
                format!("`{name}` may be given once"),
            ));
        }
        Ok(first)
    }

    fn count(&self) -> Result<u32, ApiError> {
        match self.one("_count")? {
            None => Ok(DEFAULT_COUNT),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=MAX_COUNT).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(
                    "invalid_count",
                    format!("_count must be a whole number from 1 to {MAX_COUNT}"),
                )),
            },
        }
    }

    fn page_after(&self) -> Result<Option<ReferralId>, ApiError> {
        self.one("_page_after")?
            .map(|v| {
                ReferralId::parse(v).map_err(|_| {
                    ApiError::bad_request("invalid_cursor", "_page_after is not from a next link")
                })
            })
            .transpose()
    }

    /// Comma-separated token values, each one of `allowed`.
    fn tokens(&self, name: &str, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
        let Some(v) = self.one(name)? else {
            return Ok(vec![]);
        };
        v.split(',')
            .map(|t| {
                let t = t.trim();
                if allowed.contains(&t) {
                    Ok(t.to_owned())
                } else {
                    Err(ApiError::bad_request(
                        "invalid_parameter",
                        format!("`{name}` must be among {}", allowed.join(", ")),
                    ))
                }
            })
            .collect()
    }

    /// `_lastUpdated=gt<time>` and/or `lt<time>` (a date means its start, UTC).
    fn last_updated(&self) -> Result<Window, ApiError> {
        let (mut after, mut before) = (None, None);
        for v in self.all("_lastUpdated") {
            let bad = || {
                ApiError::bad_request(
                    "invalid_parameter",
                    "_lastUpdated takes gt<time> or lt<time> (RFC 3339, or a date), each at most once",
                )
            };
            let (prefix, value) = v.split_at_checked(2).ok_or_else(bad)?;
            let at = DateTime::parse_from_rfc3339(value)
                .map(|t| t.with_timezone(&Utc))
                .or_else(|_| {
                    value
                        .parse::<NaiveDate>()
                        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
                })
                .map_err(|_| bad())?;
            let slot = match prefix {
                "gt" => &mut after,
                "lt" => &mut before,
                _ => return Err(bad()),
            };
            if slot.replace(at).is_some() {
                return Err(bad());
            }
        }
        Ok((after, before))
    }
}

/// Narrows `filter` to the provider the parameter `name` (`owner`, `performer`: `Organization/<id>`
/// or the bare id) names; false when it names none of the providers whose referrals the caller
/// sees (the search then matches nothing).
async fn narrow_to_provider(
    state: &AppState,
    query: &Query,
    name: &str,
    filter: &mut TaskFilter,
) -> Result<bool, ApiError> {
    let Some(v) = query.one(name)? else {
        return Ok(true);
    };
    let id = v.strip_prefix("Organization/").unwrap_or(v);
    let named = state
        .store
        .fhir_organizations(filter)
        .await?
        .into_iter()
        .filter_map(|(_, p, _)| ProviderId::parse(p).ok())
        .find(|p| render::provider_organization_id(p) == id);
    match named {
        Some(p) if filter.provider_id.as_ref().is_none_or(|mine| *mine == p) => {
            filter.provider_id = Some(p);
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// A searchset Bundle of one page, with `self` and (when more follow) `next` links.
fn searchset(
    base: &str,
    kind: &str,
    query: &Query,
    page: &crate::store::fhir::TaskPage,
    entries: Vec<BundleEntry>,
) -> Resource {
    let keep: Vec<(String, String)> = query
        .pairs
        .iter()
        .filter(|(n, _)| n != "_page_after")
        .cloned()
        .collect();
    let url = |after: Option<&ReferralId>| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (n, v) in &keep {
            q.append_pair(n, v);
        }
        if let Some(a) = after {
            q.append_pair("_page_after", &a.to_string());
        }
        let q = q.finish();
        if q.is_empty() {
            format!("{base}/{kind}")
        } else {
            format!("{base}/{kind}?{q}")
        }
    };
    let mut link = vec![BundleLink {
        relation: "self".into(),
        url: url(query.page_after().ok().flatten().as_ref()),
    }];
    if page.more {
        if let Some((last, _)) = page.rows.last() {
            link.push(BundleLink {
                relation: "next".into(),
                url: url(Some(last)),
            });
        }
    }
    Resource::Bundle(Bundle {
        kind: "searchset".into(),
        total: Some(page.total),
        link,
        entry: entries,
    })
}

fn entry(base: &str, resource: Resource, mode: &str) -> Option<BundleEntry> {
    let (kind, id) = match &resource {
        Resource::Task(t) => ("Task", t.id.clone()?),
        Resource::ServiceRequest(s) => ("ServiceRequest", s.id.clone()?),
        Resource::Patient(p) => ("Patient", p.id.clone()),
        Resource::Organization(o) => ("Organization", o.id.clone()),
        _ => return None,
    };
    Some(BundleEntry {
        full_url: format!("{base}/{kind}/{id}"),
        resource,
        search: Some(BundleSearch { mode: mode.into() }),
        request: None,
        response: None,
    })
}

/// Logs a read of each case a page shows, once per case.
async fn log_page_reads(
    state: &AppState,
    caller: &Caller,
    page: &crate::store::fhir::TaskPage,
    route: &str,
) -> Result<(), ApiError> {
    let mut cases: Vec<CaseId> = page
        .rows
        .iter()
        .filter_map(|(_, s)| s.case.opened.as_ref().map(|o| o.case_id))
        .collect();
    cases.sort_unstable();
    cases.dedup();
    if !cases.is_empty() {
        state
            .store
            .log_reads(&caller.0, &cases, route, true, state.clock.now())
            .await?;
    }
    Ok(())
}

#[instrument(skip_all)]
async fn search_tasks(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, FhirError> {
    let caller = caller?;
    let query = Query::parse(
        raw,
        &[
            "owner",
            "status",
            "focus",
            "_lastUpdated",
            "_count",
            "_include",
            "_page_after",
            "_format",
        ],
    )?;
    let mut filter = visible(&caller)?;
    let count = query.count()?;
    filter.after = query.page_after()?;
    filter.statuses = query.tokens("status", &render::task_statuses())?;
    (filter.updated_after, filter.updated_before) = query.last_updated()?;
    let includes: Vec<&str> = query.all("_include");
    for i in &includes {
        if !["Task:focus", "Task:patient"].contains(i) {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "_include takes Task:focus or Task:patient",
            )
            .into());
        }
    }
    if let Some(focus) = query.one("focus")? {
        let id = focus.strip_prefix("ServiceRequest/").unwrap_or(focus);
        match ReferralId::parse(id) {
            Ok(id) => filter.referral_id = Some(id),
            Err(_) => return empty_search(&headers, "Task", &query),
        }
    }
    if !narrow_to_provider(&state, &query, "owner", &mut filter).await? {
        return empty_search(&headers, "Task", &query);
    }
    let page = state.store.fhir_tasks(&filter, count).await?;
    log_page_reads(&state, &caller, &page, "GET /fhir/r4/Task").await?;
    let base = base_url(&headers);
    let mut entries = Vec::new();
    let mut included = Vec::new();
    let staff = is_staff(&caller);
    for (id, fhir_case) in &page.rows {
        if let Some(task) = render::task(fhir_case, *id) {
            entries.extend(entry(&base, Resource::Task(task), "match"));
        }
        if includes.contains(&"Task:focus") {
            if let Some(sr) = render::service_request(fhir_case, *id) {
                included.extend(entry(&base, Resource::ServiceRequest(sr), "include"));
            }
        }
        if includes.contains(&"Task:patient") {
            if let Some(p) = render::patient(fhir_case, staff) {
                if !included
                    .iter()
                    .any(|e: &BundleEntry| e.full_url.ends_with(&format!("/Patient/{}", p.id)))
                {
                    included.extend(entry(&base, Resource::Patient(p), "include"));
                }
            }
        }
    }
    entries.extend(included);
    Ok(fhir_response(
        StatusCode::OK,
        &searchset(&base, "Task", &query, &page, entries),
        None,
    ))
}

fn empty_search(headers: &HeaderMap, kind: &str, query: &Query) -> Result<Response, FhirError> {
    let page = crate::store::fhir::TaskPage {
        rows: vec![],
        more: false,
        total: 0,
    };
    Ok(fhir_response(
        StatusCode::OK,
        &searchset(&base_url(headers), kind, query, &page, vec![]),
        None,
    ))
}

#[instrument(skip_all)]
async fn search_service_requests(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, FhirError> {
    let caller = caller?;
    let query = Query::parse(
        raw,
        &["performer", "status", "_count", "_page_after", "_format"],
    )?;
    let mut filter = visible(&caller)?;
    let count = query.count()?;
    filter.after = query.page_after()?;
    for s in query.tokens("status", &render::service_request_statuses())? {
        filter.statuses.extend(
            render::task_statuses_behind(&s)
                .into_iter()
                .map(str::to_owned),
        );
    }
    if !narrow_to_provider(&state, &query, "performer", &mut filter).await? {
        return empty_search(&headers, "ServiceRequest", &query);
    }
    let page = state.store.fhir_tasks(&filter, count).await?;
    log_page_reads(&state, &caller, &page, "GET /fhir/r4/ServiceRequest").await?;
    let base = base_url(&headers);
    let entries = page
        .rows
        .iter()
        .filter_map(|(id, s)| render::service_request(s, *id))
        .filter_map(|sr| entry(&base, Resource::ServiceRequest(sr), "match"))
        .collect();
    Ok(fhir_response(
        StatusCode::OK,
        &searchset(&base, "ServiceRequest", &query, &page, entries),
        None,
    ))
}

#[instrument(skip_all)]
async fn search_organizations(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, FhirError> {
    let caller = caller?;
    let query = Query::parse(raw, &["identifier", "_format"])?;
    let wanted = query.one("identifier")?.map(|v| match v.split_once('|') {
        Some((system, value)) => (Some(system.to_owned()), value.to_owned()),
        None => (None, v.to_owned()),
    });
    let base = base_url(&headers);
    let orgs: Vec<_> = visible_organizations(&state, &caller)
        .await?
        .into_iter()
        .filter(|o| {
            wanted.as_ref().is_none_or(|(system, value)| {
                o.identifier.iter().any(|i| {
                    i.value.as_deref() == Some(value)
                        && system.as_ref().is_none_or(|s| i.system.as_ref() == Some(s))
                })
            })
        })
        .collect();
    let page = crate::store::fhir::TaskPage {
        rows: vec![],
        more: false,
        total: orgs.len() as u64,
    };
    let entries = orgs
        .into_iter()
        .filter_map(|o| entry(&base, Resource::Organization(o), "match"))
        .collect();
    Ok(fhir_response(
        StatusCode::OK,
        &searchset(&base, "Organization", &query, &page, entries),
        None,
    ))
}
