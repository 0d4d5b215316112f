-- The event store's queries, loaded by name (picloud.sqlfile).

-- name: lock_stream
-- Serialise appends to one stream until the transaction ends (other streams do not wait).
SELECT pg_advisory_xact_lock(hashtextextended(%(stream)s, 7215))

-- name: stream_head
SELECT version, hash FROM events WHERE stream = %(stream)s ORDER BY version DESC LIMIT 1

-- name: append_one
-- Appends one event after the stream's head if the head is at %(expected)s (NULL: any).
-- No row back = the head moved (a concurrent writer that committed first). Two writers that
-- both saw the same head: the second one blocks on the unique (stream, version) index and
-- then fails with a unique violation. The hash is computed here, over the stored jsonb's
-- canonical text, chained to the stream's previous hash.
WITH last AS (
    SELECT version, hash FROM events WHERE stream = %(stream)s ORDER BY version DESC LIMIT 1
), head AS (
    SELECT coalesce((SELECT version FROM last), 0) AS version,
           coalesce((SELECT hash FROM last), repeat('0', 64)) AS hash
), new AS (
    SELECT head.version + 1 AS version, head.hash AS prev, clock_timestamp() AS time
    FROM head
    WHERE %(expected)s::integer IS NULL OR head.version = %(expected)s::integer
)
INSERT INTO events (stream, version, type, schema_version, data, metadata, time, hash)
SELECT %(stream)s, new.version, %(type)s, %(schema_version)s, %(data)s, %(metadata)s, new.time,
       picloud_event_hash(new.prev, %(stream)s, new.version, %(type)s, %(schema_version)s,
                          %(data)s, %(metadata)s, new.time)
FROM new
RETURNING position, version, time, hash, data, metadata, xid

-- name: read_all
-- Never skips a late commit: only transactions below the snapshot's xmin are read (all of
-- them have ended, and every transaction still running or yet to start has an xid >= xmin),
-- in (xid, position) order from the checkpoint's (xid, position). An event whose transaction
-- commits later has an xid >= today's xmin, so it sorts after everything returned today.
WITH frontier AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin),
     checkpoint AS (
         SELECT coalesce((SELECT xid FROM events WHERE position = %(after)s), '0'::xid8) AS xid
     )
SELECT position, stream, version, type, data, metadata, time, hash, schema_version, events.xid
FROM events, frontier, checkpoint
WHERE events.xid < frontier.xmin
  AND (events.xid, position) > (checkpoint.xid, %(after)s::bigint)
ORDER BY events.xid, position
LIMIT %(limit)s

-- name: read_batch
-- read_all, plus whether committed events are held back (see withheld_after), in one round
-- trip, for the projector: one row with NULL event columns when no event is returned.
-- Scalar subqueries, not joined CTEs, so that both parts are index scans.
-- pg_current_snapshot() is the statement's snapshot: the same in both parts.
WITH batch AS (
    SELECT position, stream, version, type, data, metadata, time, hash, schema_version, xid
    FROM events
    WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
      AND (xid, position) > (
          coalesce((SELECT e.xid FROM events e WHERE e.position = %(after)s), '0'::xid8),
          %(after)s::bigint)
    ORDER BY xid, position
    LIMIT %(limit)s
)
SELECT coalesce(
           (SELECT xid FROM events ORDER BY xid DESC, position DESC LIMIT 1)
               >= pg_snapshot_xmin(pg_current_snapshot()),
           false) AS held,
       batch.*
FROM (SELECT) AS one LEFT JOIN batch ON true
ORDER BY batch.xid, batch.position

-- name: withheld_after
-- Are there committed events after the checkpoint that read_all holds back because an older
-- transaction (of any kind) is still running? The checkpoint's xid is below today's xmin (it
-- was read when it was below that day's xmin, and xmin never goes back), so that is: is the
-- newest visible event's xid at or above xmin? One step down the (xid, position) index.
SELECT coalesce(
    (SELECT xid FROM events ORDER BY xid DESC, position DESC LIMIT 1)
        >= pg_snapshot_xmin(pg_current_snapshot()),
    false)

-- name: xid_of
SELECT xid FROM events WHERE position = %(position)s

-- name: read_stream
SELECT position, stream, version, type, data, metadata, time, hash, schema_version, xid
FROM events WHERE stream = %(stream)s ORDER BY version

-- name: query_events
SELECT position, stream, version, type, data, metadata, time, hash, schema_version, xid
FROM events
WHERE (%(types)s::text[] IS NULL OR type = ANY(%(types)s::text[]))
  AND (%(type_prefix)s::text IS NULL OR starts_with(type, %(type_prefix)s::text))
  AND (%(stream)s::text IS NULL OR stream = %(stream)s::text)
  AND (%(actor)s::text IS NULL OR metadata ->> 'actor' = %(actor)s::text)
  AND (%(since)s::timestamptz IS NULL OR time >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR time < %(until)s::timestamptz)
  AND (%(after)s::bigint IS NULL OR position > %(after)s::bigint)
ORDER BY position
LIMIT %(limit)s

-- name: last_audit_anchor
-- The newest check that recorded how many events it found up to which position.
SELECT data, time FROM events
WHERE stream = 'audit' AND type = 'audit.verified' AND data ? 'through_position'
ORDER BY version DESC LIMIT 1

-- name: all_events_for_verify
-- Every event, stream by stream in version order (picloud audit verify).
SELECT position, stream, version, type, schema_version, data::text, metadata::text,
       (extract(epoch FROM time) * 1000000)::bigint AS time_us, hash
FROM events ORDER BY stream, version
