-- Tenants and their tokens (issue 10).
--
-- Every environment belongs to the tenant named in its `EnvironmentRequested` (`payload.data.
-- tenant`; `default` for one requested before tenants existed). Here, in the event's own
-- transaction:
--  * every event's metadata is given its environment's tenant (a BEFORE INSERT trigger), so each
--    event says whose it is whoever caused it (a user, an admin, the process manager, an
--    executor's result, the deadline sweep);
--  * environment names are unique per tenant, not across tenants (a name taken in another
--    tenant must not tell anyone it exists);
--  * a tenant's quota of active (not destroyed) environments is enforced: concurrent requests
--    of one tenant are serialised by an advisory lock and counted after it, so the quota holds
--    however many requests race.

CREATE TABLE IF NOT EXISTS api_tokens
(
    id         text PRIMARY KEY,
    -- SHA-256 of the token: the token itself is shown once and never stored.
    digest     bytea       NOT NULL UNIQUE,
    tenant     text        NOT NULL,
    role       text        NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    name       text        NOT NULL,
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    revoked_by text
);

CREATE INDEX IF NOT EXISTS api_tokens_tenant ON api_tokens (tenant, created_at, id);

-- The quota of active environments per tenant; the row of tenant '*' is every other tenant's.
-- The API writes the whole table from its settings when it starts.
CREATE TABLE IF NOT EXISTS tenant_quotas
(
    tenant           text PRIMARY KEY,
    max_environments integer NOT NULL CHECK (max_environments >= 0)
);

ALTER TABLE environments_view ADD COLUMN IF NOT EXISTS tenant text NOT NULL DEFAULT 'default';
CREATE INDEX IF NOT EXISTS environments_view_tenant_page ON environments_view (tenant, created_at, id);

ALTER TABLE environment_names ADD COLUMN IF NOT EXISTS tenant text NOT NULL DEFAULT 'default';
ALTER TABLE environment_names DROP CONSTRAINT IF EXISTS environment_names_pkey;
ALTER TABLE environment_names ADD PRIMARY KEY (tenant, name);

-- The tenant of the environment an event belongs to.
CREATE OR REPLACE FUNCTION provisioner_event_tenant(event events) RETURNS text
    LANGUAGE sql STABLE AS
$$
SELECT coalesce(
    CASE
        WHEN event.event_type = 'EnvironmentRequested' THEN event.payload -> 'data' ->> 'tenant'
        ELSE (SELECT first.payload -> 'data' ->> 'tenant'
                FROM events first
               WHERE first.aggregate_type = event.aggregate_type
                 AND first.aggregate_id = event.aggregate_id
                 AND first.sequence = 1)
    END,
    'default')
$$;

CREATE OR REPLACE FUNCTION provisioner_events_set_tenant() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    NEW.metadata := (NEW.metadata::jsonb
                     || jsonb_build_object('tenant', provisioner_event_tenant(NEW)))::json;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS events_set_tenant ON events;
CREATE TRIGGER events_set_tenant
    BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION provisioner_events_set_tenant();

-- Replaced whole (0007's, plus the tenant and the quota); its trigger (0001) calls it by name.
CREATE OR REPLACE FUNCTION provisioner_events_after_insert() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    env_name   text;
    env_tenant text;
    quota      integer;
    active     bigint;
BEGIN
    INSERT INTO event_outbox (aggregate_type, aggregate_id, sequence)
    VALUES (NEW.aggregate_type, NEW.aggregate_id, NEW.sequence);

    IF NEW.event_type = 'EnvironmentRequested' THEN
        env_name := NEW.payload -> 'data' -> 'spec' ->> 'name';
        env_tenant := provisioner_event_tenant(NEW);
        -- One tenant's requests one at a time from here to their commit, so the count below
        -- sees every earlier one.
        PERFORM pg_advisory_xact_lock(hashtextextended('provisioner-tenant:' || env_tenant, 0));
        INSERT INTO environment_names (tenant, name, environment_id)
        VALUES (env_tenant, env_name, NEW.aggregate_id)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            -- BP409: a custom SQLSTATE the command side maps to "409 name taken".
            RAISE EXCEPTION USING ERRCODE = 'BP409',
                MESSAGE = format('environment name %s is already in use', env_name);
        END IF;
        SELECT coalesce((SELECT q.max_environments FROM tenant_quotas q WHERE q.tenant = env_tenant),
                        (SELECT q.max_environments FROM tenant_quotas q WHERE q.tenant = '*'))
          INTO quota;
        IF quota IS NOT NULL THEN
            SELECT count(*) INTO active FROM environment_names WHERE tenant = env_tenant;
            IF active > quota THEN
                -- BP429: the command side maps it to "429 quota exceeded".
                RAISE EXCEPTION USING ERRCODE = 'BP429',
                    MESSAGE = format('tenant %s already has %s active environments, its quota',
                                     env_tenant, quota);
            END IF;
        END IF;
    ELSIF NEW.event_type IN ('InfraDestroyed', 'MarkedDestroyed') THEN
        DELETE FROM environment_names WHERE environment_id = NEW.aggregate_id;
    END IF;
    RETURN NULL;
END
$$;
