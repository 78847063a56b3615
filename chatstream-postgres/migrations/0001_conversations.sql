-- Conversations (seed 002 threads, seed 004 channels' threads), their messages in order,
-- and the channel -> conversation mapping. Times are milliseconds since the Unix epoch,
-- taken from the database's clock, so that every instance agrees on expiry.

CREATE TABLE IF NOT EXISTS chatstream_conversations (
    id               TEXT PRIMARY KEY,
    title            TEXT,
    owner_id         TEXT,
    org_id           TEXT,
    created_ms       BIGINT NOT NULL,
    last_activity_ms BIGINT NOT NULL,
    message_count    BIGINT NOT NULL DEFAULT 0
);

-- GET /chat/threads: a user's or an organisation's threads, newest activity first.
CREATE INDEX IF NOT EXISTS chatstream_conversations_owner
    ON chatstream_conversations (owner_id, last_activity_ms DESC) WHERE owner_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS chatstream_conversations_org
    ON chatstream_conversations (org_id, last_activity_ms DESC) WHERE org_id IS NOT NULL;
-- Expiry sweeps and clear_older_than.
CREATE INDEX IF NOT EXISTS chatstream_conversations_activity
    ON chatstream_conversations (last_activity_ms);

-- One row per message; `seq` numbers a conversation's messages from 0 without gaps.
-- `body` is the message as JSON text (not jsonb: jsonb refuses \u0000).
CREATE TABLE IF NOT EXISTS chatstream_messages (
    conversation_id TEXT   NOT NULL REFERENCES chatstream_conversations (id) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    role            TEXT   NOT NULL,
    body            TEXT   NOT NULL,
    created_ms      BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

CREATE TABLE IF NOT EXISTS chatstream_channels (
    channel         TEXT PRIMARY KEY,
    conversation_id TEXT   NOT NULL REFERENCES chatstream_conversations (id) ON DELETE CASCADE,
    last_access_ms  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS chatstream_channels_conversation
    ON chatstream_channels (conversation_id);
