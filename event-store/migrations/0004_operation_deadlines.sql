-- The operation in flight of each environment and when it must have ended. A trigger writes it
-- in the same transaction as the events that start and end operations, so a deadline is as
-- durable as the event that set it: the deadline sweep finds overdue operations here after any
-- restart, whatever NATS did meanwhile.

CREATE TABLE IF NOT EXISTS operation_deadlines
(
    -- at most one operation is in flight per environment
    environment_id   text PRIMARY KEY,
    operation_id     text        NOT NULL,
    step             text        NOT NULL,
    -- the sequence of the …Started event
    started_sequence bigint      NOT NULL,
    -- the …Started event's recorded_at
    started_at       timestamptz NOT NULL,
    -- started_at + the job's timeout_seconds; NULL for an operation started before deadlines
    -- existed, for which the sweep applies the configured timeout of its step
    deadline         timestamptz
);

CREATE INDEX IF NOT EXISTS operation_deadlines_due ON operation_deadlines (deadline);

-- A recorded_at as a timestamp; the commit time if it does not parse (it always does: the
-- command side writes it), so a bad value can never make a commit fail.
CREATE OR REPLACE FUNCTION provisioner_recorded_at(metadata json) RETURNS timestamptz
    LANGUAGE plpgsql AS
$$
BEGIN
    RETURN COALESCE((metadata ->> 'recorded_at')::timestamptz, now());
EXCEPTION
    WHEN others THEN RETURN now();
END
$$;

-- started_at + the job's timeout_seconds; NULL when the job carries none or one that does not
-- parse (the sweep then applies the configured timeout), so a bad value never fails a commit.
CREATE OR REPLACE FUNCTION provisioner_deadline(started_at timestamptz, payload json) RETURNS timestamptz
    LANGUAGE plpgsql AS
$$
BEGIN
    RETURN started_at + make_interval(
            secs => (payload -> 'data' -> 'job' ->> 'timeout_seconds')::double precision);
EXCEPTION
    WHEN others THEN RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION provisioner_step_of(event_type text) RETURNS text
    LANGUAGE sql IMMUTABLE AS
$$
SELECT CASE event_type
           WHEN 'InfraApplyStarted' THEN 'infra'
           WHEN 'BootstrapStarted' THEN 'bootstrap'
           WHEN 'DestroyStarted' THEN 'destroy'
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
    -- An event that names no operation (only a defect or a hand edit writes one) tracks nothing:
    -- the event store never refuses an event for this table's sake.
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
                             'OperationCancelled', 'OperationTimedOut') THEN
        DELETE FROM operation_deadlines
         WHERE environment_id = NEW.aggregate_id
           AND operation_id = NEW.payload -> 'data' ->> 'operation_id';
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS events_track_deadlines ON events;
CREATE TRIGGER events_track_deadlines
    AFTER INSERT ON events
    FOR EACH ROW
EXECUTE FUNCTION provisioner_track_deadlines();

-- Operations already in flight when this migration runs: an environment whose last
-- operation event is a …Started event. Their jobs carry no timeout (deadline NULL).
INSERT INTO operation_deadlines
    (environment_id, operation_id, step, started_sequence, started_at, deadline)
SELECT aggregate_id,
       payload -> 'data' ->> 'operation_id',
       provisioner_step_of(event_type),
       sequence,
       provisioner_recorded_at(metadata),
       provisioner_deadline(provisioner_recorded_at(metadata), payload)
  FROM (SELECT DISTINCT ON (aggregate_id) aggregate_id, sequence, event_type, payload, metadata
          FROM events
         WHERE aggregate_type = 'Environment'
           AND event_type IN ('InfraApplyStarted', 'BootstrapStarted', 'DestroyStarted',
                              'InfraApplied', 'InfraApplyFailed', 'BootstrapCompleted',
                              'BootstrapFailed', 'InfraDestroyed', 'DestroyFailed',
                              'OperationCancelled', 'OperationTimedOut')
         ORDER BY aggregate_id, sequence DESC) AS last_operation_event
 WHERE provisioner_step_of(event_type) IS NOT NULL
   AND payload -> 'data' ->> 'operation_id' IS NOT NULL
ON CONFLICT (environment_id) DO NOTHING;
