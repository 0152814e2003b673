-- FHIR subscriptions: see the PostgreSQL migration of the same name.
CREATE TABLE fhir_subscriptions
(
    id                 text PRIMARY KEY,
    agency             text    NOT NULL,
    provider_id        text    NOT NULL,
    actor_id           text    NOT NULL,
    reason             text    NOT NULL,
    endpoint           text    NOT NULL,
    headers            text    NOT NULL,
    status             text    NOT NULL,
    error              text,
    created_at         text    NOT NULL,
    events_since_start integer NOT NULL DEFAULT 0
) STRICT;
CREATE TABLE fhir_deliveries
(
    subscription_id text    NOT NULL,
    referral_id     text    NOT NULL,
    version         integer NOT NULL,
    PRIMARY KEY (subscription_id, referral_id)
) STRICT;
