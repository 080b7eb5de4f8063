CREATE OR REPLACE FUNCTION cmis.lock_platform_connection_key(
    p_org_id uuid,
    p_platform text,
    p_account_id text
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $function$
BEGIN
    -- Two 32-bit keys each: the first names the lock space, the second the
    -- organisation or the connection key. A hash collision makes two keys
    -- one lock: calls for them wait for each other (and a transaction that
    -- writes several keys in byte order may then meet them out of order). The organisation's lock, shared here, is the
    -- one upsert_platform_connections (bulk) holds exclusively; taken first.
    -- (PL/pgSQL, not SQL: a SQL function is planned again on every call,
    -- which cost 40 us of each upsert; PL/pgSQL keeps its plans.)
    PERFORM pg_advisory_xact_lock_shared(
        hashtext('cmis.platform_connections/org'), hashtext(p_org_id::text));
    PERFORM pg_advisory_xact_lock(
        hashtext('cmis.platform_connections'),
        hashtext(p_org_id::text || E'\x1f' || p_platform || E'\x1f' || p_account_id));
END
$function$;

COMMENT ON FUNCTION cmis.lock_platform_connection_key(uuid, text, text) IS
'Take the transaction-scoped advisory lock that serialises every cmis-repo write to one
(org_id, platform, account_id) key, after the organisation''s lock in shared mode (which the bulk
upsert_platform_connections holds exclusively). upsert_platform_connection,
soft_delete_platform_connection and restore_platform_connection take it; SQL of your own that
reads-then-writes one key can take it too: SELECT cmis.lock_platform_connection_key(org, platform,
account). Both are released at the end of the transaction. Lock several keys in one transaction in
a fixed order (platform, then account_id, COLLATE "C", as the bulk call does) to avoid deadlocks;
for many keys prefer the bulk call (one lock per key fills the server''s lock table).
upsert_platform_connection takes the same two locks inline.';
