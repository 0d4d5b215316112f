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

-- A worker that handed the result to the waiting ingress in its reply NOTIFY marks its
-- transaction (picloud.replied): the job's completion then needs no second NOTIFY.
CREATE OR REPLACE FUNCTION picloud_job_done_notify() RETURNS trigger
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
