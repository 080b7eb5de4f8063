CREATE OR REPLACE FUNCTION cmis.restore_platform_connection(
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
BEGIN
    IF p_org_id IS NULL OR p_connection_id IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN p_org_id IS NULL THEN 'p_org_id' ELSE 'p_connection_id' END
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM cmis.assert_platform_connection_org_scope(p_org_id);

    SELECT c.platform, c.account_id INTO v_platform, v_account_id
      FROM cmis.platform_connections AS c
     WHERE c.connection_id = p_connection_id AND c.org_id = p_org_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    PERFORM cmis.lock_platform_connection_key(p_org_id, v_platform, v_account_id);

    IF EXISTS (
        SELECT FROM cmis.platform_connections AS c
         WHERE c.org_id = p_org_id AND c.platform = v_platform AND c.account_id = v_account_id
           AND c.deleted_at IS NULL AND c.connection_id <> p_connection_id
    ) THEN
        RAISE EXCEPTION 'cannot restore connection %: another live connection exists for platform % account %',
                p_connection_id, quote_literal(v_platform), quote_literal(v_account_id)
            USING ERRCODE = 'unique_violation',
                  HINT = 'Soft-delete the live one first, or call upsert_platform_connection to reconnect.';
    END IF;

    RETURN QUERY
        UPDATE cmis.platform_connections AS c
           SET deleted_at = NULL, updated_at = clock_timestamp()
         WHERE c.connection_id = p_connection_id AND c.org_id = p_org_id AND c.deleted_at IS NOT NULL
        RETURNING c.*;
    IF NOT FOUND THEN
        -- Already live: restoring is idempotent.
        RETURN QUERY
            SELECT c.* FROM cmis.platform_connections AS c
             WHERE c.connection_id = p_connection_id AND c.org_id = p_org_id;
    END IF;
END
$function$;

COMMENT ON FUNCTION cmis.restore_platform_connection(uuid, uuid) IS
'Undelete the connection p_connection_id of organisation p_org_id, keeping its values; a live one is
returned unchanged. Returns the row, or no row when the organisation has no such connection.
Takes the same per-key lock as upsert_platform_connection. Errors: 22004 when an argument is NULL;
42501 when app.current_org_id is set to another org, or is unset for a role under row-level security;
23505 when another live connection holds the same (platform, account_id) - soft-delete it first,
or reconnect with upsert_platform_connection.';
