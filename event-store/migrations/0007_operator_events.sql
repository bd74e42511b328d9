-- The runbook's operations as events (issue 9): `MarkedDestroyed` (an admin declares the
-- resources removed by hand) frees the environment's name as `InfraDestroyed` does, and
-- `MarkedFailed` (an admin declares the operation in flight failed) ends its deadline as the
-- other events that end an operation do. Both functions are replaced whole; their triggers
-- (0001, 0004) call them by name and stay as they are.

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
    ELSIF NEW.event_type IN ('InfraDestroyed', 'MarkedDestroyed') THEN
        DELETE FROM environment_names WHERE environment_id = NEW.aggregate_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION provisioner_track_deadlines() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    started_at timestamptz;
BEGIN
    IF NEW.aggregate_type <> 'Environment' THEN
        RETURN NULL;
    END IF;
    -- An event that names no operation (only a defect or a hand edit writes one, or an admin's
    -- MarkedFailed of a step that never started) tracks nothing: the event store never refuses
    -- an event for this table's sake.
    IF NEW.payload -> 'data' ->> 'operation_id' IS NULL THEN
        RETURN NULL;
    END IF;
    IF NEW.event_type IN ('InfraApplyStarted', 'BootstrapStarted', 'DestroyStarted') THEN
        started_at := provisioner_recorded_at(NEW.metadata);
        INSERT INTO operation_deadlines
            (environment_id, operation_id, step, started_sequence, started_at, deadline)
        VALUES (NEW.aggregate_id,
                NEW.payload -> 'data' ->> 'operation_id',
                provisioner_step_of(NEW.event_type),
                NEW.sequence,
                started_at,
                provisioner_deadline(started_at, NEW.payload))
        ON CONFLICT (environment_id) DO UPDATE
            SET operation_id     = EXCLUDED.operation_id,
                step             = EXCLUDED.step,
                started_sequence = EXCLUDED.started_sequence,
                started_at       = EXCLUDED.started_at,
                deadline         = EXCLUDED.deadline;
    ELSIF NEW.event_type IN ('InfraApplied', 'InfraApplyFailed', 'BootstrapCompleted',
                             'BootstrapFailed', 'InfraDestroyed', 'DestroyFailed',
                             'OperationCancelled', 'OperationTimedOut', 'MarkedFailed') THEN
        DELETE FROM operation_deadlines
         WHERE environment_id = NEW.aggregate_id
           AND operation_id = NEW.payload -> 'data' ->> 'operation_id';
    END IF;
    RETURN NULL;
END
$$;
