-- FHIR subscriptions (issue 14: the R4 Subscriptions backport, topic "a Task owned by me
-- changed", rest-hook, id-only). Operational state, not a projection: a subscription's channel,
-- and per subscription the version of each Task it was last told about (at-least-once: a
-- delivery is recorded only after the endpoint answered 2xx).
CREATE TABLE fhir_subscriptions
(
    id                 text PRIMARY KEY,
    agency             text   NOT NULL,
    provider_id        text   NOT NULL,
    actor_id           text   NOT NULL,
    reason             text   NOT NULL,
    endpoint           text   NOT NULL,
    -- channel.header: a JSON array of "Name: value" strings sent with each notification.
    headers            text   NOT NULL,
    -- requested | active | error | off
    status             text   NOT NULL,
    error              text,
    created_at         text   NOT NULL,
    events_since_start bigint NOT NULL DEFAULT 0
);
CREATE TABLE fhir_deliveries
(
    subscription_id text   NOT NULL,
    referral_id     text   NOT NULL,
    version         bigint NOT NULL,
    PRIMARY KEY (subscription_id, referral_id)
);
