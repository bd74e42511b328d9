-- The environment read model keeps the domain state it was derived from, so the projection
-- folds the next event with the domain's own fold (Environment::apply) and derives the view
-- from the result. NULL on rows written before this migration: the projection rebuilds that
-- environment's state from the event store when its next event arrives.

ALTER TABLE environments_view
    ADD COLUMN IF NOT EXISTS state jsonb;
