-- Tokens with a lifecycle: an id to name one by (list, revoke) without its secret, an expiry, and
-- when it was last used (kept to the minute, not written on every request).
ALTER TABLE tokens ADD COLUMN token_id text;
UPDATE tokens SET token_id = gen_random_uuid()::text WHERE token_id IS NULL;
ALTER TABLE tokens ALTER COLUMN token_id SET NOT NULL;
CREATE UNIQUE INDEX tokens_by_id ON tokens (token_id);
ALTER TABLE tokens ADD COLUMN expires_at timestamptz;
ALTER TABLE tokens ADD COLUMN last_used_at timestamptz;
