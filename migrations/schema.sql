-- The declared schema of PiCloud's tables (procrastinate's comes from its package).
-- tests/test_migrations.py checks that migrating an empty database gives exactly this.

------------------------------------------------------------------------------------------------
-- The event store: one append-only table.
--
-- position   global position (identity; gaps where a transaction rolled back)
-- xid        the appending transaction's id: readers order by (xid, position) and only read
--            transactions below the snapshot's xmin, so a late commit is never skipped
-- stream     "script-{name}", "invocation-{id}", ...; version is 1, 2, 3... within it
-- hash       sha256 over the previous hash *of the same stream* and the event (see
--            picloud/events/store.py): a per-stream chain, so appends to different streams
--            never wait on each other
CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid             xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream          text NOT NULL,
    version         integer NOT NULL CHECK (version > 0),
    type            text NOT NULL,
    schema_version  smallint NOT NULL DEFAULT 1 CHECK (schema_version > 0),
    data            jsonb NOT NULL,
    metadata        jsonb NOT NULL,
    time            timestamptz NOT NULL,
    hash            text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    CONSTRAINT events_stream_version UNIQUE (stream, version)
);
CREATE INDEX events_xid_position ON events (xid, position);
CREATE INDEX events_type_position ON events (type, position);
CREATE INDEX events_actor_position ON events ((metadata ->> 'actor'), position);
CREATE INDEX events_time ON events (time);

-- The hash of an event: sha256 of these fields joined by newlines, the jsonb values in their
-- canonical text form, the time as integer microseconds since the epoch. `picloud audit verify`
-- recomputes it in Python (picloud/events/store.py: event_hash) without trusting this function.
CREATE FUNCTION picloud_event_hash(
    prev text, stream text, version integer, type text, schema_version integer,
    data jsonb, metadata jsonb, "time" timestamptz
) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
RETURN encode(sha256(convert_to(concat_ws(E'\n',
    prev, stream, version::text, type, schema_version::text, data::text, metadata::text,
    ((extract(epoch FROM "time") * 1000000)::bigint)::text), 'UTF8')), 'hex');

CREATE FUNCTION picloud_events_refuse_change() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER events_refuse_update_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION picloud_events_refuse_change();

CREATE TRIGGER events_refuse_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION picloud_events_refuse_change();

-- NOTIFY picloud_events with the highest position of each insert (delivered at commit).
CREATE FUNCTION picloud_events_notify() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('picloud_events', (SELECT max(position) FROM inserted)::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_notify
    AFTER INSERT ON events
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION picloud_events_notify();

------------------------------------------------------------------------------------------------
-- The read model, folded from the events by picloud/projections. Every column is derived
-- from the log (times are event times), so a rebuild reproduces it exactly.

CREATE TABLE scripts (
    name            text PRIMARY KEY,
    current_version integer NOT NULL,
    latest_version  integer NOT NULL,
    sha256          text NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    deleted_at      timestamptz
);

CREATE TABLE script_versions (
    name        text NOT NULL,
    version     integer NOT NULL,
    sha256      text NOT NULL,
    source      text NOT NULL,
    created_at  timestamptz NOT NULL,
    actor       text,
    PRIMARY KEY (name, version)
);

CREATE TABLE invocations (
    id           text PRIMARY KEY,
    position     bigint NOT NULL UNIQUE,      -- of invocation.requested: the list order
    script       text NOT NULL,
    version      integer NOT NULL,
    trigger      text NOT NULL,
    status       text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    request      jsonb,
    event        jsonb NOT NULL,
    response     jsonb,
    error        jsonb,
    logs         jsonb NOT NULL DEFAULT '[]',
    duration_ms  double precision,
    fuel_used    bigint,
    node         text,
    replay_of    text,
    actor        text,
    requested_at timestamptz NOT NULL,
    finished_at  timestamptz
);
CREATE INDEX invocations_script_position ON invocations (script, position DESC);
CREATE INDEX invocations_status_position ON invocations (status, position DESC);
CREATE INDEX invocations_replay_of ON invocations (replay_of) WHERE replay_of IS NOT NULL;

CREATE TABLE schedules (
    name            text PRIMARY KEY,
    script          text NOT NULL,
    cron            text NOT NULL,
    timezone        text NOT NULL,
    payload         jsonb,
    next_fire_time  timestamptz,
    last_fire_time  timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

CREATE TABLE script_stats (
    script             text PRIMARY KEY,
    invocations        bigint NOT NULL DEFAULT 0,
    succeeded          bigint NOT NULL DEFAULT 0,
    failed             bigint NOT NULL DEFAULT 0,
    total_duration_ms  double precision NOT NULL DEFAULT 0,
    max_duration_ms    double precision NOT NULL DEFAULT 0,
    last_invoked_at    timestamptz
);

-- Where each projector is in the log: the last event applied, as (xid, position).
CREATE TABLE projection_checkpoints (
    name      text PRIMARY KEY,
    position  bigint NOT NULL,
    xid       xid8 NOT NULL
);

------------------------------------------------------------------------------------------------
-- API tokens: only the sha256 of a token is stored. Written in the same transaction as the
-- token.created / token.revoked event.
CREATE TABLE api_tokens (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    token_hash  text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

------------------------------------------------------------------------------------------------
-- NOTIFY picloud_job_done with the job id when a procrastinate job ends (a terminal status,
-- or deleted by finish_job(delete_job => true) while todo/doing), unless the worker handed the
-- result to the waiting ingress in its own reply NOTIFY and marked its transaction so
-- (picloud.replied).
CREATE FUNCTION picloud_job_done_notify() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('picloud.replied', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('picloud_job_done', OLD.id::text);
    ELSE
        PERFORM pg_notify('picloud_job_done', NEW.id::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER picloud_job_done_update
    AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('succeeded', 'failed', 'cancelled', 'aborted'))
    EXECUTE FUNCTION picloud_job_done_notify();

CREATE TRIGGER picloud_job_done_delete
    AFTER DELETE ON procrastinate_jobs
    FOR EACH ROW
    WHEN (OLD.status IN ('todo', 'doing'))
    EXECUTE FUNCTION picloud_job_done_notify();

------------------------------------------------------------------------------------------------
-- Whether invoking a script needs a key (an API token allowed to invoke it): set by
-- script.access_changed, public by default.
ALTER TABLE scripts ADD COLUMN require_key boolean NOT NULL DEFAULT false;

-- NOTIFY picloud_scripts with a script's name when its current version, its access or its
-- deletion changes in the read model (delivered at commit), and with '' when the table is
-- emptied (a rebuild): every ingress keeps what it needs to invoke a script in memory and
-- drops it on these.
CREATE FUNCTION picloud_scripts_notify() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        PERFORM pg_notify('picloud_scripts', '');
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('picloud_scripts', OLD.name);
    ELSE
        PERFORM pg_notify('picloud_scripts', NEW.name);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER picloud_scripts_inserted_or_deleted
    AFTER INSERT OR DELETE ON scripts
    FOR EACH ROW
    EXECUTE FUNCTION picloud_scripts_notify();

CREATE TRIGGER picloud_scripts_updated
    AFTER UPDATE ON scripts
    FOR EACH ROW
    WHEN (OLD.current_version IS DISTINCT FROM NEW.current_version
          OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at
          OR OLD.require_key IS DISTINCT FROM NEW.require_key)
    EXECUTE FUNCTION picloud_scripts_notify();

CREATE TRIGGER picloud_scripts_truncated
    AFTER TRUNCATE ON scripts
    FOR EACH STATEMENT
    EXECUTE FUNCTION picloud_scripts_notify();
