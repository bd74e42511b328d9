-- Read models, built by the projections from the events stream.

CREATE TABLE IF NOT EXISTS environments_view
(
    id            text PRIMARY KEY,
    name          text        NOT NULL,
    status        text        NOT NULL,
    provider      text        NOT NULL,
    spec          jsonb       NOT NULL,
    outputs       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    error         jsonb,
    operation     jsonb,
    -- the sequence of the last event applied: the projection's idempotency checkpoint
    version       bigint      NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS environments_view_name ON environments_view (name);
CREATE INDEX IF NOT EXISTS environments_view_status ON environments_view (status);
CREATE INDEX IF NOT EXISTS environments_view_page ON environments_view (created_at, id);
