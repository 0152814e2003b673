"""Schemathesis hooks for Linkage's API run (ops/schemathesis.sh, tests/tests/e2e/fuzz.rs).

Every constraint the server enforces on a single value (lengths, patterns, ranges, formats, enums,
required headers, at-least-one lists) is in the OpenAPI document, and schemathesis's
`positive_data_acceptance` check holds the server to it. A few refusals are not about a value but
about stored state or about two fields together, which an OpenAPI document cannot state. A
schema-valid request refused for one of them is the API working as documented, so that check's
failure is dropped here, and only when the answer is exactly that refusal: a 4xx in the contract's
error shape carrying one of the codes below. Every other check, and this check for every other
answer, stays as strict as schemathesis makes it.
"""

import json

import schemathesis

# The refusal codes that depend on state or on two fields together, and why.
STATE_OR_CROSS_FIELD = {
    # Opaque cursors are valid only as the list gave them out; a generated string is not one.
    "invalid_cursor": "a cursor is valid only as the list issued it",
    # Rules about the case's stored state or the clock.
    "date_in_future": "a date after today, which moves with the clock",
    "date_before_intake": "a date before the case's intake date",
    "date_out_of_order": "a date before the entry it follows",
    "unknown_goal": "goal ids must be of the current care plan",
    "unaddressed_needs": "a care plan must address or defer the screenings' needs",
    # Rules relating two fields of one request, or a field and the caller.
    "not_paged": "limit and cursor page the JSON answer; the CSV export streams whole",
    "invalid_period": "`from` after `to`",
    "unknown_instrument": "the version must be one of that instrument's",
    "invalid_ratings": "the ratings must fit the instrument's items",
    "unknown_items": "the item codes must be the instrument's",
    "reason_required": "this status needs a reason",
    "outcome_required": "this status needs an outcome",
    "outcome_not_allowed": "an outcome only with completed",
    "reason_code_not_allowed": "the reason code must fit the status",
    "reported_by_required": "staff recording a recipient's status say who reported it",
    "reported_by_mismatch": "reported_by must match the channel",
    "reported_by_not_allowed": "a recipient's own token reports for itself",
    "missed_reason_required": "a missed appointment needs a reason",
    "rescheduled_for_required": "a rescheduled appointment needs the new time",
    "field_not_allowed": "the field does not fit this outcome",
    "provider_not_allowed": "a provider only with role service",
    "provider_required": "role service needs a provider",
    "never_expires_not_allowed": "`never` only with role service",
    "agency_required": "an admin must name the agency",
}


def _error_code(response):
    try:
        body = json.loads(response.content or b"")
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None
    return body["error"].get("code")


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keep every failure except a schema-valid request refused for a documented state or
    cross-field rule."""
    if getattr(failure, "code", None) != "ST202":
        return True
    if not 400 <= response.status_code < 500:
        return True
    return _error_code(response) not in STATE_OR_CROSS_FIELD
