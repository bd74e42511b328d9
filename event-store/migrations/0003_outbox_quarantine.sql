-- Environments whose events the relay holds: the first outbox row of each that can never be
-- published (event missing, too large, invalid subject) and why. That row and the later rows of
-- the same environment stay in event_outbox unpublished, so per-environment order holds; other
-- environments are not affected. Deleting the row (after fixing the cause) releases them.
CREATE TABLE IF NOT EXISTS event_outbox_quarantine
(
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL,
    outbox_id      bigint      NOT NULL,
    reason         text        NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);
