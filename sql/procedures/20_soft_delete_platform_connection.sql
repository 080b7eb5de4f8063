CREATE OR REPLACE FUNCTION cmis.soft_delete_platform_connection(
    p_org_id uuid,
    p_connection_id uuid
)
RETURNS SETOF cmis.platform_connections
LANGUAGE plpgsql
VOLATILE
PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_platform varchar;
    v_account_id varchar;
    v_now timestamptz;
BEGIN
    IF p_org_id IS NULL OR p_connection_id IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN p_org_id IS NULL THEN 'p_org_id' ELSE 'p_connection_id' END
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM cmis.assert_platform_connection_org_scope(p_org_id);

    SELECT c.platform, c.account_id INTO v_platform, v_account_id
      FROM cmis.platform_connections AS c
     WHERE c.connection_id = p_connection_id AND c.org_id = p_org_id AND c.deleted_at IS NULL;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    -- Same lock as upsert_platform_connection: a reconnect and a disconnect of
    -- one key never interleave.
    PERFORM cmis.lock_platform_connection_key(p_org_id, v_platform, v_account_id);
    -- Stamped after the lock: a call that waited must not look older than the
    -- deletions made while it waited ("most recently deleted" follows our order).
    v_now := clock_timestamp();

    RETURN QUERY
        UPDATE cmis.platform_connections AS c
           SET deleted_at = v_now, updated_at = v_now
         WHERE c.connection_id = p_connection_id AND c.org_id = p_org_id AND c.deleted_at IS NULL
        RETURNING c.*;
END
$function$;

COMMENT ON FUNCTION cmis.soft_delete_platform_connection(uuid, uuid) IS
'Disconnect: soft-delete the live connection p_connection_id of organisation p_org_id by setting
deleted_at (and updated_at). Returns the deleted row, or no row when nothing live matched (an unknown
id, another organisation''s id, or an already deleted row). Takes the same per-key lock as
upsert_platform_connection. Errors: 22004 when an argument is NULL; 42501 when app.current_org_id is
set to another org, or is unset for a role under row-level security.';
