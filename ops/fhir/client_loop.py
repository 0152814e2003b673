"""One step of the referral loop, as a provider's system with no FHIR server of its own would take
it against Linkage's FHIR endpoint, through fhirpy (PyPI): a real FHIR client, not Linkage code.

    client_loop.py BASE TOKEN find
    client_loop.py BASE TOKEN accept|unattended|kept TASK_ID
    client_loop.py BASE TOKEN schedule TASK_ID TIME        (also to reschedule)
    client_loop.py BASE TOKEN complete TASK_ID OUTCOME

Prints one JSON document: for `find`, the requested Tasks with what they reference; for a step,
the Task's status, business status and version as the server answered the update. An update is
sent with If-Match naming the version read (fhirpy's save() sends none; the client's
extra_headers add it)."""

import json
import sys

from fhirpy import SyncFHIRClient

BSER = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
OUTPUT = "urn:linkage:task-output"


def find(client):
    tasks = (
        client.resources("Task")
        .search(status="requested")
        .include("Task", "focus")
        .include("Task", "patient")
        .limit(50)
        .fetch()
    )
    found = []
    for task in tasks:
        request = client.reference(reference=task["focus"]["reference"]).to_resource()
        patient = client.reference(reference=task["for"]["reference"]).to_resource()
        found.append(
            {
                "task": task["id"],
                "version": task["meta"]["versionId"],
                "owner": task["owner"]["reference"],
                "service_request": request["id"],
                "service_type": request["code"]["coding"][0]["code"],
                "performer": request["performer"][0]["reference"],
                "patient": patient["id"],
                "patient_family": patient["name"][0]["family"],
                "patient_identifiers": len(patient.get("identifier", [])),
            }
        )
    return found


def step(base, auth, name, task_id, *args):
    task = dict(SyncFHIRClient(base, authorization=auth).get("Task", task_id))
    version = task["meta"]["versionId"]

    def business(status, code):
        task["status"] = status
        task["businessStatus"] = {"coding": [{"system": BSER, "code": code}]}

    outputs = list(task.get("output", []))
    if name == "accept":
        business("accepted", "3.0")
    elif name == "schedule":
        business("in-progress", "5.1.1")
        outputs.append(
            {
                "type": {"coding": [{"system": OUTPUT, "code": "appointment-scheduled"}]},
                "valueDateTime": args[0],
            }
        )
    elif name == "unattended":
        business("in-progress", "5.1.2")
    elif name == "kept":
        business("in-progress", "5.1.4")
    elif name == "complete":
        business("completed", "7.0")
        outputs.append(
            {
                "type": {"coding": [{"system": OUTPUT, "code": "referral-outcome"}]},
                "valueCodeableConcept": {
                    "coding": [{"system": "urn:linkage:referral-outcome", "code": args[0]}]
                },
            }
        )
    else:
        raise SystemExit(f"unknown step {name}")
    if outputs:
        task["output"] = outputs
    updater = SyncFHIRClient(base, authorization=auth, extra_headers={"If-Match": f'W/"{version}"'})
    fields = {k: v for k, v in task.items() if k != "resourceType"}
    saved = updater.resource("Task", **fields)
    saved.save()
    return {
        "status": saved["status"],
        "business_status": saved["businessStatus"]["coding"][0]["code"],
        "version": saved["meta"]["versionId"],
        "was": version,
    }


def main():
    base, token, name, *args = sys.argv[1:]
    auth = f"Bearer {token}"
    if name == "find":
        out = find(SyncFHIRClient(base, authorization=auth))
    else:
        out = step(base, auth, name, *args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
