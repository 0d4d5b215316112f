-- Cluster liveness (picloud/workers/peers.py and worker.py). Advisory lock keys:
-- (liveness class, worker id) held exclusively by a live worker's listener session;
-- (queue class, hashtext(queue)) held shared by each live worker serving that node queue.

-- name: hold_liveness
SELECT pg_advisory_lock(%(cls)s, %(worker)s)

-- name: serve_queue
SELECT pg_advisory_lock_shared(%(cls)s, hashtext(%(queue)s))

-- name: session_settings
-- The session that holds the liveness lock: named in pg_stat_activity, and TCP keep-alives
-- and a TCP user timeout on the server's side so that a machine that vanishes ends its
-- session (and frees its locks) in about 25-30 s (no effect on a Unix socket).
SELECT set_config('application_name', %(name)s, false),
       set_config('tcp_keepalives_idle', '10', false),
       set_config('tcp_keepalives_interval', '5', false),
       set_config('tcp_keepalives_count', '3', false),
       set_config('tcp_user_timeout', '30000', false)

-- name: register_again
-- A worker whose row was reaped while its session was down (a dropped connection, not a
-- dead process) comes back under the same id.
INSERT INTO procrastinate_workers (id) OVERRIDING SYSTEM VALUE VALUES (%(worker)s)
ON CONFLICT (id) DO NOTHING

-- name: announce
SELECT pg_notify('picloud_peers', %(worker)s::text)

-- name: serialize_reaps
-- Re-queues run one at a time in the cluster (they are rare): two at once could each lock
-- some of the same worker's jobs and then wait for each other in the cascade of deleting it.
SELECT pg_advisory_xact_lock(%(reap_cls)s, %(reap_key)s)

-- name: workers
SELECT id FROM procrastinate_workers ORDER BY id

-- name: requeue_jobs_of
-- The `doing` jobs of a dead worker (and of workers whose row is gone), back to their queue,
-- or to the shared queue for a node queue. Rows locked by another reaper are skipped: it
-- re-queues them; once committed they are `todo` and no reaper selects them again.
WITH stalled AS (
    SELECT id, queue_name FROM procrastinate_jobs
    WHERE status = 'doing' AND (worker_id = %(worker)s OR worker_id IS NULL)
    FOR UPDATE SKIP LOCKED
)
SELECT id, procrastinate_retry_job_v2(
    id, now(), NULL, CASE WHEN queue_name LIKE 'node-%%' THEN %(shared)s END, NULL)
FROM stalled

-- name: requeue_job
-- One stalled job (locked by the caller), as in requeue_jobs_of.
SELECT procrastinate_retry_job_v2(
    id, now(), NULL, CASE WHEN queue_name LIKE 'node-%%' THEN %(shared)s END, NULL)
FROM procrastinate_jobs WHERE id = %(job)s

-- name: release_node_queues
-- `todo` jobs of node queues that no live worker serves (nobody holds the queue's lock in
-- shared mode, so the exclusive try-lock succeeds; it is released at commit), to the shared
-- queue.
UPDATE procrastinate_jobs SET queue_name = %(shared)s
WHERE status = 'todo' AND queue_name LIKE 'node-%%'
  AND pg_try_advisory_xact_lock(%(cls)s, hashtext(queue_name))
RETURNING id

-- name: forget_worker
DELETE FROM procrastinate_workers WHERE id = %(worker)s

-- name: wake_queue
-- Moving a job to a queue sends no NOTIFY (procrastinate's trigger is on INSERT only).
SELECT pg_notify('procrastinate_queue_v1#' || %(queue)s,
                 json_build_object('type', 'job_inserted', 'job_id', %(job)s)::text)

-- name: unlock_liveness
SELECT pg_advisory_unlock(%(cls)s, %(worker)s)
