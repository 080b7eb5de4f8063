-- Undo what 0004 changed, newest change first, from the statements it
-- recorded: privileges, the policy and row-level security go back to what
-- they were. cmis_app is dropped only if 0004 created it and no other
-- database of the cluster still grants it anything (roles are cluster-wide).

DO $rollback$
DECLARE
    v_undo record;
    v_function regprocedure;
BEGIN
    IF to_regclass('cmis.cmis_repo_undo') IS NULL THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'cmis_app') THEN
        -- Every install of sql/procedures/ grants EXECUTE on our functions.
        FOR v_function IN
            SELECT p.oid FROM pg_proc p
             WHERE p.pronamespace = 'cmis'::regnamespace AND p.proname LIKE '%platform_connection%'
        LOOP
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM cmis_app', v_function);
        END LOOP;
    END IF;
    FOR v_undo IN
        SELECT undo_id, undo_sql FROM cmis.cmis_repo_undo
         WHERE migration = '0004_tenant_isolation'
         ORDER BY undo_id DESC
    LOOP
        IF v_undo.undo_sql = 'DROP ROLE cmis_app' THEN
            BEGIN
                DROP ROLE cmis_app;
            EXCEPTION WHEN dependent_objects_still_exist THEN
                RAISE NOTICE 'keeping role cmis_app: other databases of this cluster grant it privileges';
            END;
        ELSE
            EXECUTE v_undo.undo_sql;
        END IF;
        DELETE FROM cmis.cmis_repo_undo WHERE undo_id = v_undo.undo_id;
    END LOOP;
END
$rollback$;
