//! The HL7 FHIR R4 (4.0.1) resources Linkage serves under `/fhir/r4`, as typed serde models of
//! the elements it fills in: Task and ServiceRequest (a referral, as HL7 BSeR and the Gravity
//! SDOH Clinical Care guide carry it), Patient, Organization, Bundle, OperationOutcome.
//!
//! Hand-written, and only the elements used: the FHIR model crates were weighed for issue 14
//! (`ARCHITECTURE.md`, "FHIR"); the official R4 JSON Schema checks every served resource in the
//! end-to-end tests, so a field spelt wrong here fails there.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// The FHIR version served.
pub const FHIR_VERSION: &str = "4.0.1";
/// The media type of every FHIR answer.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Code systems and identifier systems Linkage defines (URNs: Linkage publishes no canonical
/// web address for them).
pub mod system {
    pub const AGENCY: &str = "urn:linkage:agency";
    pub const PROVIDER: &str = "urn:linkage:provider";
    pub const REFERRAL: &str = "urn:linkage:referral";
    pub const CASE: &str = "urn:linkage:case";
    pub const SERVICE_TYPE: &str = "urn:linkage:service-type";
    pub const STATUS_REASON: &str = "urn:linkage:status-reason";
    pub const REFERRAL_OUTCOME: &str = "urn:linkage:referral-outcome";
    pub const TASK_OUTPUT: &str = "urn:linkage:task-output";
    pub const MEDICAID_ID: &str = "urn:linkage:medicaid-id";
    /// HL7 BSeR's Task business statuses.
    pub const BSER_BUSINESS_STATUS: &str =
        "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS";
    /// The Gravity SDOH Clinical Care guide's temporary codes (`contacting-subject-prohibited`).
    pub const SDOHCC_TEMPORARY: &str =
        "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes";
    /// HL7 v2 table 0203, identifier types (`MA`: Medicaid number).
    pub const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
    /// FHIR's Task codes (`fulfill`).
    pub const TASK_CODE: &str = "http://hl7.org/fhir/CodeSystem/task-code";
}

/// The one subscription topic served (the R4 Subscriptions backport's `criteria`): a Task owned
/// by the subscriber's provider was created or changed.
pub const TASK_TOPIC: &str = "urn:linkage:topic:task-owner-changed";

/// The backport's payload content extension (`id-only` is the one served).
pub const BACKPORT_PAYLOAD_CONTENT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content";

/// A subscription (R4 Subscription, as the Subscriptions backport uses it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub status: String,
    #[serde(default)]
    pub reason: String,
    pub criteria: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub channel: SubscriptionChannel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionChannel {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The payload's extensions (`backport-payload-content`).
    #[serde(rename = "_payload", default, skip_serializing_if = "Option::is_none")]
    pub payload_element: Option<serde_json::Value>,
    /// Sent with each notification; accepted, never shown back.
    #[serde(default, skip_serializing)]
    pub header: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub version_id: String,
    pub last_updated: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Coding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl Coding {
    pub fn new(system: &str, code: &str, display: Option<&str>) -> Self {
        Self {
            system: Some(system.to_owned()),
            code: Some(code.to_owned()),
            display: display.map(str::to_owned),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CodeableConcept {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coding: Vec<Coding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl CodeableConcept {
    pub fn of(system: &str, code: &str, display: Option<&str>) -> Self {
        Self {
            coding: vec![Coding::new(system, code, display)],
            text: None,
        }
    }

    /// The code of its first coding in `system`.
    pub fn code_in(&self, system: &str) -> Option<&str> {
        self.coding
            .iter()
            .find(|c| c.system.as_deref() == Some(system))
            .and_then(|c| c.code.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Reference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl Reference {
    pub fn to(resource_type: &str, id: &str, display: Option<&str>) -> Self {
        Self {
            reference: Some(format!("{resource_type}/{id}")),
            display: display.map(str::to_owned),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Identifier {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CodeableConcept>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Identifier {
    pub fn of(system: &str, value: &str) -> Self {
        Self {
            kind: None,
            system: Some(system.to_owned()),
            value: Some(value.to_owned()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HumanName {
    pub family: String,
    pub given: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    pub text: String,
}

/// One of a Task's outputs: what was done (an appointment, the loop's outcome).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskOutput {
    #[serde(rename = "type")]
    pub kind: CodeableConcept,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_date_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_codeable_concept: Option<CodeableConcept>,
}

/// A referral's fulfilment, as the recipient sees and updates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<CodeableConcept>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_status: Option<CodeableConcept>,
    pub intent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeableConcept>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub focus: Option<Reference>,
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub for_: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authored_on: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Reference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<TaskOutput>,
}

/// What is asked of the recipient: the referral itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    pub status: String,
    pub intent: String,
    pub priority: String,
    pub code: CodeableConcept,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order_detail: Vec<CodeableConcept>,
    pub subject: Reference,
    pub authored_on: NaiveDate,
    pub requester: Reference,
    pub performer: Vec<Reference>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Patient {
    pub id: String,
    pub meta: Meta,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    pub name: Vec<HumanName>,
    pub birth_date: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    pub id: String,
    pub identifier: Vec<Identifier>,
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleLink {
    pub relation: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleSearch {
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleEntry {
    pub full_url: String,
    pub resource: Resource,
    /// In a `searchset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<BundleSearch>,
    /// In a `history`: the interaction that made this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<BundleRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<BundleResponse>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRequest {
    pub method: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleResponse {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    pub link: Vec<BundleLink>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry: Vec<BundleEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationOutcomeIssue {
    pub severity: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<CodeableConcept>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationOutcome {
    pub issue: Vec<OperationOutcomeIssue>,
}

/// Any resource Linkage serves, tagged with its `resourceType` as FHIR JSON requires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "resourceType")]
#[allow(clippy::large_enum_variant)]
pub enum Resource {
    Task(Task),
    ServiceRequest(ServiceRequest),
    Patient(Patient),
    Organization(Organization),
    Bundle(Bundle),
    OperationOutcome(OperationOutcome),
    Subscription(Subscription),
    /// Served as built (`/metadata`), never read back.
    CapabilityStatement(serde_json::Map<String, serde_json::Value>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_carry_their_type_and_fhir_names() {
        let task = Resource::Task(Task {
            id: Some("t1".into()),
            meta: None,
            identifier: vec![],
            status: "requested".into(),
            status_reason: None,
            business_status: None,
            intent: "order".into(),
            priority: None,
            code: None,
            focus: Some(Reference::to("ServiceRequest", "t1", None)),
            for_: None,
            authored_on: None,
            last_modified: None,
            requester: None,
            owner: None,
            output: vec![],
        });
        let json = serde_json::to_value(&task).unwrap();
        assert_eq!(json["resourceType"], "Task");
        assert_eq!(json["focus"]["reference"], "ServiceRequest/t1");
        assert!(json.get("for").is_none() && json.get("output").is_none());
        let back: Resource = serde_json::from_value(json).unwrap();
        assert_eq!(back, task);
    }
}
