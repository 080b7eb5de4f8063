-- The floor of any PL/pgSQL upsert_platform_connection: the bare INSERT ...
-- ON CONFLICT DO UPDATE inside a function of the same signature, settings
-- (SET search_path) and result (RETURNS TABLE, RETURN QUERY), and nothing
-- else: no argument checks, org check, key lock or restore. For
-- bench.function_floor --variant: what a function call costs by itself.

CREATE OR REPLACE FUNCTION cmis.upsert_platform_connection_shell(
    p_org_id uuid,
    p_platform text,
    p_account_id text,
    p_account_name text DEFAULT NULL,
    p_status text DEFAULT 'active',
    p_access_token text DEFAULT NULL,
    p_refresh_token text DEFAULT NULL,
    p_token_expires_at timestamptz DEFAULT NULL,
    p_scopes jsonb DEFAULT NULL,
    p_account_metadata jsonb DEFAULT NULL,
    p_auto_sync boolean DEFAULT NULL,
    p_sync_frequency_minutes integer DEFAULT NULL
)
RETURNS TABLE (
    outcome text,
    connection_id uuid,
    org_id uuid,
    platform varchar,
    account_id varchar,
    account_name varchar,
    status varchar,
    access_token text,
    refresh_token text,
    token_expires_at timestamptz,
    scopes jsonb,
    account_metadata jsonb,
    last_sync_at timestamptz,
    last_error_at timestamptz,
    last_error_message text,
    auto_sync boolean,
    sync_frequency_minutes integer,
    created_at timestamptz,
    updated_at timestamptz,
    deleted_at timestamptz
)
LANGUAGE plpgsql
VOLATILE
PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $function$
#variable_conflict use_column
DECLARE
    v_now timestamptz := clock_timestamp();
    v_new_id uuid := gen_random_uuid();
    v_row cmis.platform_connections;
BEGIN
    INSERT INTO cmis.platform_connections AS c (
        connection_id, org_id, platform, account_id, account_name, status,
        access_token, refresh_token, token_expires_at, scopes, account_metadata,
        auto_sync, sync_frequency_minutes, created_at, updated_at)
    VALUES (
        v_new_id, p_org_id, p_platform, p_account_id, p_account_name, COALESCE(p_status, 'active'),
        p_access_token, p_refresh_token, p_token_expires_at, p_scopes, p_account_metadata,
        COALESCE(p_auto_sync, true), COALESCE(p_sync_frequency_minutes, 15), v_now, v_now)
    ON CONFLICT (org_id, platform, account_id) WHERE deleted_at IS NULL
    DO UPDATE
       SET account_name = COALESCE(p_account_name, c.account_name),
           status = COALESCE(p_status, c.status),
           access_token = COALESCE(p_access_token, c.access_token),
           refresh_token = COALESCE(p_refresh_token, c.refresh_token),
           token_expires_at = COALESCE(p_token_expires_at, c.token_expires_at),
           scopes = COALESCE(p_scopes, c.scopes),
           account_metadata = COALESCE(p_account_metadata, c.account_metadata),
           auto_sync = COALESCE(p_auto_sync, c.auto_sync),
           sync_frequency_minutes = COALESCE(p_sync_frequency_minutes, c.sync_frequency_minutes),
           updated_at = v_now
    RETURNING c.* INTO v_row;
    RETURN QUERY SELECT
        CASE v_row.connection_id WHEN v_new_id THEN 'created' ELSE 'updated' END, v_row.connection_id, v_row.org_id, v_row.platform, v_row.account_id,
        v_row.account_name, v_row.status, v_row.access_token, v_row.refresh_token,
        v_row.token_expires_at, v_row.scopes, v_row.account_metadata, v_row.last_sync_at,
        v_row.last_error_at, v_row.last_error_message, v_row.auto_sync,
        v_row.sync_frequency_minutes, v_row.created_at, v_row.updated_at, v_row.deleted_at;
END
$function$;
