-- Tokens with a lifecycle (see the PostgreSQL migration of the same number). SQLite cannot make
-- an added column NOT NULL without a default; the application always writes one.
ALTER TABLE tokens ADD COLUMN token_id text;
UPDATE tokens SET token_id = lower(hex(randomblob(16))) WHERE token_id IS NULL;
CREATE UNIQUE INDEX tokens_by_id ON tokens (token_id);
ALTER TABLE tokens ADD COLUMN expires_at text;
ALTER TABLE tokens ADD COLUMN last_used_at text;
