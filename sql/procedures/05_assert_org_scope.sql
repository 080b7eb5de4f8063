CREATE OR REPLACE FUNCTION cmis.assert_platform_connection_org_scope(p_org_id uuid)
RETURNS void
LANGUAGE plpgsql
STABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    -- '' once a transaction-local setting has ended: the same as unset.
    v_setting text := NULLIF(current_setting('app.current_org_id', true), '');
BEGIN
    IF v_setting IS NULL THEN
        IF row_security_active('cmis.platform_connections'::regclass) THEN
            RAISE EXCEPTION 'app.current_org_id is not set, so row-level security lets role % see and write no connection',
                    current_user
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('Run SELECT set_config(''app.current_org_id'', %L, true) in the same transaction first.',
                                    p_org_id);
        END IF;
        RETURN;
    END IF;
    IF v_setting !~* '^\{?[0-9a-f]{4}(-?[0-9a-f]{4}){7}\}?$' THEN
        RAISE EXCEPTION 'app.current_org_id must be an organisation''s uuid, got %', quote_literal(left(v_setting, 60))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set it with set_config(''app.current_org_id'', <org_id>::text, true).';
    END IF;
    IF v_setting::uuid <> p_org_id THEN
        RAISE EXCEPTION 'app.current_org_id is % but p_org_id is %: refusing to touch another organisation''s connections',
                v_setting::uuid, p_org_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Pass the org of the session as p_org_id, or set app.current_org_id to p_org_id in this transaction.';
    END IF;
END
$function$;

COMMENT ON FUNCTION cmis.assert_platform_connection_org_scope(uuid) IS
'Refuse (42501) unless this session may act for organisation p_org_id: when the setting
app.current_org_id is set it must equal p_org_id; when it is not set, row-level security must not be
active for the current role on cmis.platform_connections (a role subject to it would see and write
nothing). 22023 when app.current_org_id is not a uuid. The write functions call it first; nothing
is written when it raises.';
