-- The event store used by postgres-es, plus the outbox and the active-name registry that are
-- written in the same transaction as each event by a trigger.

CREATE TABLE IF NOT EXISTS events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- postgres-es reads this table only when snapshots are enabled (they are not: cqrs-es 0.5.0
-- applies events twice when building one); it is created so the store's schema is complete.
CREATE TABLE IF NOT EXISTS snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- Committed events not yet acknowledged by JetStream. A row is deleted only after the ack.
CREATE TABLE IF NOT EXISTS event_outbox
(
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, sequence)
);

-- Names of environments that are not destroyed: a name is active until InfraDestroyed.
CREATE TABLE IF NOT EXISTS environment_names
(
    name           text PRIMARY KEY,
    environment_id text NOT NULL UNIQUE
);

CREATE OR REPLACE FUNCTION provisioner_events_after_insert() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    env_name text;
BEGIN
    INSERT INTO event_outbox (aggregate_type, aggregate_id, sequence)
    VALUES (NEW.aggregate_type, NEW.aggregate_id, NEW.sequence);

    IF NEW.event_type = 'EnvironmentRequested' THEN
        env_name := NEW.payload -> 'data' -> 'spec' ->> 'name';
        INSERT INTO environment_names (name, environment_id)
        VALUES (env_name, NEW.aggregate_id)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            -- BP409: a custom SQLSTATE the command side maps to "409 name taken".
            RAISE EXCEPTION USING ERRCODE = 'BP409',
                MESSAGE = format('environment name %s is already in use', env_name);
        END IF;
    ELSIF NEW.event_type = 'InfraDestroyed' THEN
        DELETE FROM environment_names WHERE environment_id = NEW.aggregate_id;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS events_after_insert ON events;
CREATE TRIGGER events_after_insert
    AFTER INSERT ON events
    FOR EACH ROW
EXECUTE FUNCTION provisioner_events_after_insert();

-- Idempotency-Key: the first request with a key decides the environment id; repeats get the
-- same answer. request_hash detects a key reused with a different body.
CREATE TABLE IF NOT EXISTS idempotency_keys
(
    principal      text        NOT NULL,
    key            text        NOT NULL,
    request_hash   text        NOT NULL,
    environment_id text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);
