//! The store's statements. Every value is a bound parameter (`$1`, `$2`, …); the only
//! text spliced in is the clock expression and the column list, both constants.

/// Now by the database's clock (transaction start), ms since the epoch.
macro_rules! now {
    () => {
        "(extract(epoch from now()) * 1000)::bigint"
    };
}

/// The conversation columns [`meta_from_row`](crate::store) reads.
macro_rules! cols {
    () => {
        "id, title, owner_id, org_id, created_ms, last_activity_ms, message_count"
    };
}

pub(crate) const NOW_MS: &str = concat!("SELECT ", now!());

/// Serialises creators of one channel's conversation until commit.
pub(crate) const LOCK_CHANNEL: &str = "SELECT pg_advisory_xact_lock(hashtext($1))";

/// $1 channel, $2 ttl ms: slides a live mapping and its live conversation; returns the id.
pub(crate) const TOUCH_CHANNEL: &str = concat!(
    "WITH c AS (UPDATE chatstream_conversations v SET last_activity_ms = ",
    now!(),
    " FROM chatstream_channels ch WHERE ch.channel = $1 AND v.id = ch.conversation_id",
    " AND ch.last_access_ms >= ",
    now!(),
    " - $2 AND v.last_activity_ms >= ",
    now!(),
    " - $2 RETURNING v.id)",
    " UPDATE chatstream_channels SET last_access_ms = ",
    now!(),
    " WHERE channel = $1 AND conversation_id IN (SELECT id FROM c) RETURNING conversation_id"
);

/// $1 channel, $2 conversation id.
pub(crate) const MAP_CHANNEL: &str = concat!(
    "INSERT INTO chatstream_channels (channel, conversation_id, last_access_ms) VALUES ($1, $2, ",
    now!(),
    ") ON CONFLICT (channel) DO UPDATE SET conversation_id = EXCLUDED.conversation_id,",
    " last_access_ms = EXCLUDED.last_access_ms"
);

/// $1 id.
pub(crate) const INSERT_BARE: &str = concat!(
    "INSERT INTO chatstream_conversations (id, created_ms, last_activity_ms) VALUES ($1, ",
    now!(),
    ", ",
    now!(),
    ")"
);

/// $1 id, $2 title, $3 owner, $4 org.
pub(crate) const INSERT_THREAD: &str = concat!(
    "INSERT INTO chatstream_conversations",
    " (id, title, owner_id, org_id, created_ms, last_activity_ms) VALUES ($1, $2, $3, $4, ",
    now!(),
    ", ",
    now!(),
    ") RETURNING ",
    cols!()
);

/// $1 id, $2 ttl ms: a live conversation's columns, the clock, and its messages in order,
/// one row per message (one row with a NULL body when it has none). One statement, so
/// the count and the messages come from one snapshot.
pub(crate) const READ: &str = concat!(
    "SELECT c.id, c.title, c.owner_id, c.org_id, c.created_ms, c.last_activity_ms,",
    " c.message_count, ",
    now!(),
    " AS now_ms, m.body FROM chatstream_conversations c",
    " LEFT JOIN chatstream_messages m ON m.conversation_id = c.id",
    " WHERE c.id = $1 AND c.last_activity_ms >= ",
    now!(),
    " - $2 ORDER BY m.seq"
);

/// $1 id, $2 the time to record (ms).
pub(crate) const SLIDE: &str = concat!(
    "UPDATE chatstream_conversations SET last_activity_ms = GREATEST(last_activity_ms, $2)",
    " WHERE id = $1"
);

/// $1 id, $2 ttl ms.
pub(crate) const DELETE_IF_EXPIRED: &str = concat!(
    "DELETE FROM chatstream_conversations WHERE id = $1 AND last_activity_ms < ",
    now!(),
    " - $2"
);

/// $1 id, $2 number of messages, $3 roles, $4 bodies (JSON text), in order: one
/// statement, so one transaction. The upsert creates the conversation or locks its row
/// (until the statement commits) and moves its count on by the messages added; the
/// messages are numbered from the count before. Two appends to one conversation are
/// serialised by that row lock, so each one's messages stay contiguous and in order.
pub(crate) const APPEND: &str = concat!(
    "WITH up AS (INSERT INTO chatstream_conversations AS c",
    " (id, created_ms, last_activity_ms, message_count) VALUES ($1, ",
    now!(),
    ", ",
    now!(),
    ", $2) ON CONFLICT (id) DO UPDATE SET message_count = c.message_count + EXCLUDED.message_count,",
    " last_activity_ms = EXCLUDED.last_activity_ms RETURNING c.message_count - $2 AS first)",
    " INSERT INTO chatstream_messages (conversation_id, seq, role, body, created_ms)",
    " SELECT $1, up.first + m.ord - 1, m.role, m.body, ",
    now!(),
    " FROM up, unnest($3::text[], $4::text[]) WITH ORDINALITY AS m(role, body, ord)"
);

/// $1 owner, $2 ttl ms.
pub(crate) const LIST_OWNER: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM chatstream_conversations WHERE owner_id = $1 AND last_activity_ms >= ",
    now!(),
    " - $2 ORDER BY last_activity_ms DESC"
);

/// $1 org, $2 ttl ms.
pub(crate) const LIST_ORG: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM chatstream_conversations WHERE org_id = $1 AND last_activity_ms >= ",
    now!(),
    " - $2 ORDER BY last_activity_ms DESC"
);

/// $1 ttl ms.
pub(crate) const STATS: &str = concat!(
    "SELECT count(*) AS conversations, COALESCE(sum(message_count), 0)::bigint AS messages,",
    " count(*) FILTER (WHERE age < 86400000) AS day,",
    " count(*) FILTER (WHERE age >= 86400000 AND age < 604800000) AS week,",
    " count(*) FILTER (WHERE age >= 604800000 AND age < 2592000000) AS month,",
    " count(*) FILTER (WHERE age >= 2592000000) AS older,",
    " min(created_ms) AS oldest, max(created_ms) AS newest,",
    " (pg_total_relation_size('chatstream_conversations')",
    " + pg_total_relation_size('chatstream_messages')",
    " + pg_total_relation_size('chatstream_channels'))::bigint AS bytes",
    " FROM (SELECT message_count, created_ms, ",
    now!(),
    " - last_activity_ms AS age FROM chatstream_conversations WHERE last_activity_ms >= ",
    now!(),
    " - $1) c"
);

/// $1 ttl ms: deletes everything, counts what was live.
pub(crate) const CLEAR_ALL: &str = concat!(
    "WITH d AS (DELETE FROM chatstream_conversations RETURNING last_activity_ms)",
    " SELECT count(*) FILTER (WHERE last_activity_ms >= ",
    now!(),
    " - $1) FROM d"
);

/// $1 age ms, $2 ttl ms: deletes what is idle for longer than the age, counts what was live.
pub(crate) const CLEAR_OLDER: &str = concat!(
    "WITH d AS (DELETE FROM chatstream_conversations WHERE last_activity_ms < ",
    now!(),
    " - $1 RETURNING last_activity_ms)",
    " SELECT count(*) FILTER (WHERE last_activity_ms >= ",
    now!(),
    " - $2) FROM d"
);

/// $1 cutoff ms, $2 batch: deletes a batch of expired conversations.
pub(crate) const SWEEP: &str = concat!(
    "DELETE FROM chatstream_conversations WHERE id IN (SELECT id FROM chatstream_conversations",
    " WHERE last_activity_ms < $1 ORDER BY last_activity_ms LIMIT $2)"
);

// Stored responses ([`PgResponseStore`](crate::PgResponseStore)).

/// $1 id, $2 owner, $3 record JSON (without outcome), $4 outcome JSON, $5 ttl ms: stores
/// a record, replacing one of the same id (and its outcome, and its expiry).
pub(crate) const RESPONSE_PUT: &str = concat!(
    "INSERT INTO chatstream_responses (id, owner_id, record, outcome, created_ms, expires_ms)",
    " VALUES ($1, $2, $3, $4, ",
    now!(),
    ", ",
    now!(),
    " + $5) ON CONFLICT (id) DO UPDATE SET owner_id = EXCLUDED.owner_id,",
    " record = EXCLUDED.record, outcome = EXCLUDED.outcome,",
    " created_ms = EXCLUDED.created_ms, expires_ms = EXCLUDED.expires_ms"
);

/// $1 id: a live record and its outcome.
pub(crate) const RESPONSE_GET: &str = concat!(
    "SELECT record, outcome FROM chatstream_responses WHERE id = $1 AND expires_ms > ",
    now!()
);

/// $1 id, $2 outcome JSON: sets the outcome of a live record that has none (one row
/// changed when written).
pub(crate) const RESPONSE_FINISH: &str = concat!(
    "UPDATE chatstream_responses SET outcome = $2",
    " WHERE id = $1 AND outcome IS NULL AND expires_ms > ",
    now!()
);

/// $1 id: deletes the record; the row says whether it was live.
pub(crate) const RESPONSE_DELETE: &str = concat!(
    "DELETE FROM chatstream_responses WHERE id = $1 RETURNING expires_ms > ",
    now!(),
    " AS live"
);

/// $1 batch: deletes a batch of expired records.
pub(crate) const RESPONSE_SWEEP: &str = concat!(
    "DELETE FROM chatstream_responses WHERE id IN (SELECT id FROM chatstream_responses",
    " WHERE expires_ms <= ",
    now!(),
    " ORDER BY expires_ms LIMIT $1)"
);
