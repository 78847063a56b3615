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

/// $1 id.
pub(crate) const INSERT_BARE_IF_ABSENT: &str = concat!(
    "INSERT INTO chatstream_conversations (id, created_ms, last_activity_ms) VALUES ($1, ",
    now!(),
    ", ",
    now!(),
    ") ON CONFLICT (id) DO NOTHING"
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

/// $1 id, $2 ttl ms: slides a live conversation, returns its columns.
pub(crate) const TOUCH: &str = concat!(
    "UPDATE chatstream_conversations SET last_activity_ms = ",
    now!(),
    " WHERE id = $1 AND last_activity_ms >= ",
    now!(),
    " - $2 RETURNING ",
    cols!()
);

/// $1 id.
pub(crate) const MESSAGES: &str =
    "SELECT body FROM chatstream_messages WHERE conversation_id = $1 ORDER BY seq";

/// $1 id, $2 ttl ms.
pub(crate) const DELETE_IF_EXPIRED: &str = concat!(
    "DELETE FROM chatstream_conversations WHERE id = $1 AND last_activity_ms < ",
    now!(),
    " - $2"
);

/// $1 id: locks the row until commit; the count is the next message's seq.
pub(crate) const LOCK_THREAD: &str =
    "SELECT message_count FROM chatstream_conversations WHERE id = $1 FOR UPDATE";

/// $1 id, $2 first seq, $3 roles, $4 bodies (JSON text), in order.
pub(crate) const INSERT_MESSAGES: &str = concat!(
    "INSERT INTO chatstream_messages (conversation_id, seq, role, body, created_ms)",
    " SELECT $1, $2 + m.ord - 1, m.role, m.body, ",
    now!(),
    " FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS m(role, body, ord)"
);

/// $1 id, $2 messages added.
pub(crate) const COUNT_APPENDED: &str = concat!(
    "UPDATE chatstream_conversations SET message_count = message_count + $2,",
    " last_activity_ms = ",
    now!(),
    " WHERE id = $1"
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
