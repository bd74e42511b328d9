-- The environment read model shows conditions (InfraReady, ClusterReachable, BaselineInstalled,
-- AppReady) beside the status. Rows written before this migration show none until their next
-- event: their stored state has no conditions, so the projection rebuilds it from the event
-- store then.

ALTER TABLE environments_view
    ADD COLUMN IF NOT EXISTS conditions jsonb NOT NULL DEFAULT '[]'::jsonb;
