-- The projector's and the read model's queries, loaded by name (picloud.sqlfile).

-- name: apply_lock
-- Taken by rebuild, and by every projector batch with its commit mode: they never interleave.
SELECT pg_advisory_xact_lock(7215000001)

-- name: begin_batch
-- The projector's batch: the apply lock, and asynchronous commit. The read model is derived,
-- and its checkpoint commits with it: a batch lost in a crash is folded again from the older
-- checkpoint, to the same result. So its commits need not wait for the WAL flush (one fsync
-- less between an append and its projection). Events are still committed synchronously.
SELECT pg_advisory_xact_lock(7215000001), set_config('synchronous_commit', 'off', true)

-- name: leader_lock
-- Session lock electing the one projector that writes; a standby waits here (no polling).
SELECT pg_advisory_lock(7215000002)

-- name: get_checkpoint
SELECT position, xid FROM projection_checkpoints WHERE name = %(name)s

-- name: set_checkpoint
INSERT INTO projection_checkpoints (name, position, xid)
VALUES (%(name)s, %(position)s, %(xid)s::text::xid8)
ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, xid = EXCLUDED.xid

-- name: advance_checkpoint
-- Compare-and-set: moves the checkpoint only from the position this batch read after, and
-- announces it. No row back = someone else (a rebuild) moved it: the batch must roll back.
WITH moved AS (
    INSERT INTO projection_checkpoints AS c (name, position, xid)
    VALUES (%(name)s, %(position)s, %(xid)s::text::xid8)
    ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, xid = EXCLUDED.xid
        WHERE c.position = %(from)s
    RETURNING 1
)
SELECT pg_notify('picloud_projected', %(payload)s) FROM moved

-- name: notify_projected
SELECT pg_notify('picloud_projected', %(payload)s)

-- name: truncate_read_model
TRUNCATE scripts, script_versions, invocations, schedules, script_stats, projection_checkpoints

-- name: script_uploaded
WITH s AS (
    INSERT INTO scripts (name, current_version, latest_version, sha256, created_at, updated_at)
    VALUES (%(name)s, %(version)s, %(version)s, %(sha256)s, %(time)s, %(time)s)
    ON CONFLICT (name) DO UPDATE
        SET current_version = EXCLUDED.current_version,
            latest_version = greatest(scripts.latest_version, EXCLUDED.latest_version),
            sha256 = EXCLUDED.sha256,
            updated_at = EXCLUDED.updated_at,
            deleted_at = NULL
)
INSERT INTO script_versions (name, version, sha256, source, created_at, actor)
VALUES (%(name)s, %(version)s, %(sha256)s, %(source)s, %(time)s, %(actor)s)
ON CONFLICT (name, version) DO NOTHING

-- name: script_rolled_back
UPDATE scripts
SET current_version = %(version)s,
    sha256 = coalesce((SELECT sha256 FROM script_versions
                       WHERE name = %(name)s AND version = %(version)s), scripts.sha256),
    updated_at = %(time)s,
    deleted_at = NULL
WHERE name = %(name)s

-- name: script_access_changed
UPDATE scripts SET require_key = %(require_key)s, updated_at = %(time)s WHERE name = %(name)s

-- name: script_deleted
UPDATE scripts SET deleted_at = %(time)s, updated_at = %(time)s WHERE name = %(name)s

-- name: invocation_requested
INSERT INTO invocations (id, position, script, version, trigger, status, request, event,
                         replay_of, actor, requested_at)
VALUES (%(invocation_id)s, %(position)s, %(script)s, %(version)s, %(trigger)s, 'pending',
        %(request)s, %(event)s, %(replay_of)s, %(actor)s, %(time)s)
ON CONFLICT (id) DO NOTHING

-- name: invocation_finished
-- The first result of an invocation counts; a second one (which the worker should never
-- record) changes nothing.
WITH done AS (
    UPDATE invocations
    SET status = %(status)s, response = %(response)s, error = %(error)s, logs = %(logs)s,
        duration_ms = %(duration_ms)s, fuel_used = %(fuel_used)s, node = %(node)s,
        finished_at = %(time)s
    WHERE id = %(invocation_id)s AND status = 'pending'
    RETURNING script
)
INSERT INTO script_stats AS st (script, invocations, succeeded, failed, total_duration_ms,
                                max_duration_ms, last_invoked_at)
SELECT script, 1, %(ok)s::int, 1 - %(ok)s::int, %(duration_ms)s, %(duration_ms)s, %(time)s
FROM done
ON CONFLICT (script) DO UPDATE
    SET invocations = st.invocations + 1,
        succeeded = st.succeeded + EXCLUDED.succeeded,
        failed = st.failed + EXCLUDED.failed,
        total_duration_ms = st.total_duration_ms + EXCLUDED.total_duration_ms,
        max_duration_ms = greatest(st.max_duration_ms, EXCLUDED.max_duration_ms),
        last_invoked_at = greatest(st.last_invoked_at, EXCLUDED.last_invoked_at)

-- name: schedule_set
INSERT INTO schedules (name, script, cron, timezone, payload, next_fire_time, created_at,
                       updated_at)
VALUES (%(name)s, %(script)s, %(cron)s, %(timezone)s, %(payload)s, %(next_fire_time)s,
        %(time)s, %(time)s)
ON CONFLICT (name) DO UPDATE
    SET script = EXCLUDED.script, cron = EXCLUDED.cron, timezone = EXCLUDED.timezone,
        payload = EXCLUDED.payload, next_fire_time = EXCLUDED.next_fire_time,
        updated_at = EXCLUDED.updated_at

-- name: schedule_of
SELECT cron, timezone, last_fire_time FROM schedules WHERE name = %(name)s

-- name: schedule_deleted
DELETE FROM schedules WHERE name = %(name)s

-- name: cron_ticked
UPDATE schedules
SET last_fire_time = %(fire_time)s, next_fire_time = %(next_fire_time)s
WHERE name = %(name)s AND (last_fire_time IS NULL OR last_fire_time < %(fire_time)s)

-- name: list_scripts
SELECT s.name, s.current_version, s.latest_version, s.sha256, s.created_at, s.updated_at,
       s.require_key
FROM scripts s WHERE s.deleted_at IS NULL ORDER BY s.name

-- name: get_script
SELECT s.name, s.current_version, s.latest_version, s.sha256, s.created_at, s.updated_at,
       s.require_key
FROM scripts s WHERE s.name = %(name)s AND s.deleted_at IS NULL

-- name: list_versions
SELECT name, version, sha256, source, created_at, actor
FROM script_versions WHERE name = %(name)s ORDER BY version

-- name: get_version
SELECT name, version, sha256, source, created_at, actor
FROM script_versions WHERE name = %(name)s AND version = %(version)s

-- name: list_invocations
SELECT id, position, script, version, trigger, status, request, event, response, error, logs,
       duration_ms, fuel_used, node, replay_of, actor, requested_at, finished_at
FROM invocations
WHERE (%(script)s::text IS NULL OR script = %(script)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(since)s::timestamptz IS NULL OR requested_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR requested_at < %(until)s::timestamptz)
  AND (%(before)s::bigint IS NULL OR position < %(before)s::bigint)
ORDER BY position DESC
LIMIT %(limit)s

-- name: get_invocation
SELECT id, position, script, version, trigger, status, request, event, response, error, logs,
       duration_ms, fuel_used, node, replay_of, actor, requested_at, finished_at
FROM invocations WHERE id = %(id)s

-- name: list_schedules
SELECT name, script, cron, timezone, payload, next_fire_time, last_fire_time, created_at,
       updated_at
FROM schedules ORDER BY name

-- name: get_schedule
SELECT name, script, cron, timezone, payload, next_fire_time, last_fire_time, created_at,
       updated_at
FROM schedules WHERE name = %(name)s

-- name: script_stats
SELECT script, invocations, succeeded, failed, total_duration_ms, max_duration_ms,
       last_invoked_at
FROM script_stats WHERE (%(script)s::text IS NULL OR script = %(script)s::text)
ORDER BY script

-- name: lag
-- Committed events not yet in the read model (projection lag, for /metrics).
SELECT count(*) FROM events
WHERE (xid, position) > (
    coalesce((SELECT xid FROM projection_checkpoints WHERE name = %(name)s), '0'::xid8),
    coalesce((SELECT position FROM projection_checkpoints WHERE name = %(name)s), 0))
