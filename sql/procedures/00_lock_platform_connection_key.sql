CREATE OR REPLACE FUNCTION cmis.lock_platform_connection_key(
    p_org_id uuid,
    p_platform text,
    p_account_id text
)
RETURNS void
LANGUAGE sql
VOLATILE
PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $function$
    -- Two 32-bit keys: the first names this lock space, the second the
    -- connection key. A hash collision only makes two keys wait for each other.
    SELECT pg_advisory_xact_lock(
        hashtext('cmis.platform_connections'),
        hashtext(p_org_id::text || E'\x1f' || p_platform || E'\x1f' || p_account_id));
$function$;

COMMENT ON FUNCTION cmis.lock_platform_connection_key(uuid, text, text) IS
'Take the transaction-scoped advisory lock that serialises every cmis-repo write to one
(org_id, platform, account_id) key. upsert_platform_connection, soft_delete_platform_connection
and restore_platform_connection take it; SQL of your own that reads-then-writes one key can take
it too: SELECT cmis.lock_platform_connection_key(org, platform, account). It is released at the
end of the transaction. Lock several keys in one transaction in a fixed order to avoid deadlocks.';
