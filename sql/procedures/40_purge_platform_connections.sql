CREATE OR REPLACE FUNCTION cmis.purge_platform_connections(
    p_org_id uuid,
    p_older_than interval
)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_purged bigint;
BEGIN
    IF p_org_id IS NULL OR p_older_than IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN p_org_id IS NULL THEN 'p_org_id' ELSE 'p_older_than' END
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF p_older_than < interval '0' THEN
        RAISE EXCEPTION 'p_older_than must not be negative, got %', p_older_than
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass how long ago, such as interval ''90 days''.';
    END IF;
    PERFORM cmis.assert_platform_connection_org_scope(p_org_id);

    DELETE FROM cmis.platform_connections AS c
     WHERE c.org_id = p_org_id AND c.deleted_at < clock_timestamp() - p_older_than;
    GET DIAGNOSTICS v_purged = ROW_COUNT;
    RETURN v_purged;
END
$function$;

COMMENT ON FUNCTION cmis.purge_platform_connections(uuid, interval) IS
'Hard-delete the connections of organisation p_org_id that were soft-deleted more than p_older_than
ago; live rows are never touched. Returns how many rows were deleted. Errors: 22004 when an argument
is NULL; 22023 for a negative interval; 42501 when app.current_org_id is set to another org, or is
unset for a role under row-level security.
Example: SELECT cmis.purge_platform_connections(p_org_id => ''…'', p_older_than => interval ''90 days'');';
