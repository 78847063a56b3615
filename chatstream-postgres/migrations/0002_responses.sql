-- Stored responses of the OpenAI Responses API (chatstream_core::ResponseStore). A record
-- is kept for the store's TTL from its creation (30 days by default, as OpenAI keeps
-- responses); reads and the outcome do not extend it. Times are milliseconds since the
-- Unix epoch by the database's clock.

CREATE TABLE IF NOT EXISTS chatstream_responses (
    id         TEXT PRIMARY KEY,
    -- The principal that created it (only it may read, cancel or delete the response;
    -- the HTTP layer checks). Also inside `record`; a column for operators' queries.
    owner_id   TEXT,
    -- The record's JSON without its outcome (text, not jsonb: jsonb refuses \u0000).
    record     TEXT   NOT NULL,
    -- The outcome's JSON, once the response reached a final state.
    outcome    TEXT,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);

-- Every read is by id (the primary key); sweeps of expired records go by expiry.
CREATE INDEX IF NOT EXISTS chatstream_responses_expiry
    ON chatstream_responses (expires_ms);
