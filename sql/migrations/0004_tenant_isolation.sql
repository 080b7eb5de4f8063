-- depends: 0003_install_procedures
--
-- Tenant isolation on cmis.platform_connections:
--   * row-level security is enabled (FORCE is left as it is: an opt-in, see
--     the README), with one permissive policy that keeps every session to the
--     organisation in the setting app.current_org_id:
--         USING / WITH CHECK
--         (org_id = NULLIF(current_setting('app.current_org_id', true), '')::uuid)
--     A database the Laravel app made already has it (named org_isolation or
--     platform_connections_org_isolation): that policy is kept under its name
--     and given the WITH CHECK it lacks; the app's older form without NULLIF,
--     which fails with 22P02 in a session where the setting was set and reset
--     (it is then '' rather than unset), gets the NULLIF. Only when there is no
--     such policy is platform_connections_org_isolation created, so there are
--     never two org policies that disagree. Only those two exact forms count:
--     any other permissive policy open to the application (one that adds an
--     admin bypass to the org check included) is left as it is and named in
--     a WARNING, since it may widen what a session sees.
--   * the NOLOGIN role cmis_app is created if absent, with exactly what the
--     application needs: USAGE on schema cmis, SELECT/INSERT/UPDATE/DELETE on
--     cmis.platform_connections, SELECT on cmis.orgs(org_id) (the upsert checks
--     the organisation exists), EXECUTE on the functions (granted again by
--     every install of sql/procedures/). No TRUNCATE, no DDL, no ownership.
-- Each change records the statement that undoes it in cmis.cmis_repo_undo;
-- the rollback replays them newest first.

DO $migration$
DECLARE
    c_migration constant text := '0004_tenant_isolation';
    c_table constant regclass := 'cmis.platform_connections'::regclass;
    c_org_check constant text :=
        '(org_id = NULLIF(current_setting(''app.current_org_id'', true), '''')::uuid)';
    -- pg_policies' renderings of the two forms the app has used: with NULLIF,
    -- and the older one without. Only these are taken for org isolation.
    c_known_form constant text :=
        '(org_id = (NULLIF(current_setting(''app.current_org_id''::text, true), ''''::text))::uuid)';
    c_unsafe_form constant text :=
        '(org_id = (current_setting(''app.current_org_id''::text, true))::uuid)';
    v_pol record;
    v_grant record;
    v_has_org_policy boolean := false;
    v_role_oid oid;
BEGIN
    ------------------------------------------------------------------------
    -- 1. Row-level security and the org policy.
    ------------------------------------------------------------------------
    IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = c_table) THEN
        ALTER TABLE cmis.platform_connections ENABLE ROW LEVEL SECURITY;
        INSERT INTO cmis.cmis_repo_undo (migration, undo_sql)
        VALUES (c_migration, 'ALTER TABLE cmis.platform_connections DISABLE ROW LEVEL SECURITY');
    END IF;

    FOR v_pol IN
        SELECT p.policyname, p.qual, p.with_check,
               format('DROP POLICY %1$I ON cmis.platform_connections; '
                      'CREATE POLICY %1$I ON cmis.platform_connections AS %2$s FOR %3$s TO %4$s%5$s%6$s',
                      p.policyname, p.permissive, p.cmd,
                      (SELECT string_agg(CASE WHEN r = 'public' THEN 'PUBLIC' ELSE quote_ident(r) END, ', ')
                         FROM unnest(p.roles) AS r),
                      CASE WHEN p.qual IS NOT NULL THEN ' USING (' || p.qual || ')' ELSE '' END,
                      CASE WHEN p.with_check IS NOT NULL THEN ' WITH CHECK (' || p.with_check || ')' ELSE '' END)
                   AS undo_sql
          FROM pg_policies p
         WHERE p.schemaname = 'cmis' AND p.tablename = 'platform_connections'
           AND p.permissive = 'PERMISSIVE' AND p.cmd = 'ALL'
           AND p.qual IN (c_known_form, c_unsafe_form)
         ORDER BY p.policyname
    LOOP
        v_has_org_policy := true;
        IF v_pol.qual = c_unsafe_form AND (v_pol.with_check IS NULL OR v_pol.with_check = c_unsafe_form) THEN
            EXECUTE format('ALTER POLICY %I ON cmis.platform_connections USING %s WITH CHECK %s',
                           v_pol.policyname, c_org_check, c_org_check);
        ELSIF v_pol.with_check IS NULL THEN
            -- For FOR ALL, PostgreSQL already checks new rows with USING when
            -- WITH CHECK is absent; saying it makes the rule visible in \d.
            EXECUTE format('ALTER POLICY %I ON cmis.platform_connections WITH CHECK (%s)',
                           v_pol.policyname, v_pol.qual);
        ELSE
            CONTINUE;
        END IF;
        INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, v_pol.undo_sql);
    END LOOP;

    IF NOT v_has_org_policy THEN
        IF EXISTS (SELECT FROM pg_policy WHERE polrelid = c_table
                                           AND polname = 'platform_connections_org_isolation') THEN
            RAISE EXCEPTION 'policy platform_connections_org_isolation on cmis.platform_connections exists '
                            'but is not a FOR ALL permissive policy on app.current_org_id'
                USING ERRCODE = 'duplicate_object',
                      HINT = 'Rename or drop that policy, then migrate again: this migration creates it.';
        END IF;
        EXECUTE format('CREATE POLICY platform_connections_org_isolation ON cmis.platform_connections '
                       'AS PERMISSIVE FOR ALL TO PUBLIC USING %s WITH CHECK %s', c_org_check, c_org_check);
        INSERT INTO cmis.cmis_repo_undo (migration, undo_sql)
        VALUES (c_migration, 'DROP POLICY platform_connections_org_isolation ON cmis.platform_connections');
    END IF;

    -- Any other permissive policy open to the application is OR'ed with the
    -- org policy and may widen it (USING (true), an admin bypass added to an
    -- org check): it is left as it is, and named.
    FOR v_pol IN
        SELECT p.policyname, p.cmd FROM pg_policies p
         WHERE p.schemaname = 'cmis' AND p.tablename = 'platform_connections'
           AND p.permissive = 'PERMISSIVE' AND p.roles && ARRAY['public', 'cmis_app']::name[]
           AND NOT (p.cmd = 'ALL' AND p.qual IN (c_known_form, c_unsafe_form))
    LOOP
        RAISE WARNING 'policy % on cmis.platform_connections (FOR %) is not the org isolation this '
                      'migration knows: permissive policies are OR''ed, so it may widen what every '
                      'organisation sees', v_pol.policyname, v_pol.cmd
            USING HINT = 'Check that it confines sessions to app.current_org_id; make it AS RESTRICTIVE, '
                         'or limit it to the roles that need it.';
    END LOOP;

    ------------------------------------------------------------------------
    -- 2. The application's role.
    ------------------------------------------------------------------------
    SELECT oid INTO v_role_oid FROM pg_roles WHERE rolname = 'cmis_app';
    IF v_role_oid IS NULL THEN
        BEGIN
            CREATE ROLE cmis_app NOLOGIN;
            INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, 'DROP ROLE cmis_app');
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another database of this cluster made it just now
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'cannot create role cmis_app: % lacks CREATEROLE', current_user
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'Ask a superuser to run CREATE ROLE cmis_app NOLOGIN; then migrate again.';
        END;
        SELECT oid INTO STRICT v_role_oid FROM pg_roles WHERE rolname = 'cmis_app';
    END IF;

    -- Grant only what cmis_app does not hold yet, so that the rollback revokes
    -- exactly what this migration gave.
    FOR v_grant IN
        SELECT format('GRANT %s%s ON %s TO cmis_app', p.privilege, p.columns, p.object) AS grant_sql,
               format('REVOKE %s%s ON %s FROM cmis_app', p.privilege, p.columns, p.object) AS revoke_sql,
               EXISTS (SELECT FROM aclexplode(p.acl) AS a
                        WHERE a.grantee = v_role_oid AND a.privilege_type = p.privilege) AS held
          FROM (
                SELECT 'SCHEMA cmis', '', 'USAGE', nspacl FROM pg_namespace WHERE nspname = 'cmis'
                UNION ALL
                SELECT 'cmis.platform_connections', '', privilege, relacl
                  FROM pg_class, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS privilege
                 WHERE oid = c_table
                UNION ALL
                SELECT 'cmis.orgs', ' (org_id)', 'SELECT', attacl
                  FROM pg_attribute WHERE attrelid = 'cmis.orgs'::regclass AND attname = 'org_id'
               ) AS p (object, columns, privilege, acl)
    LOOP
        IF NOT v_grant.held THEN
            EXECUTE v_grant.grant_sql;
            INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, v_grant.revoke_sql);
        END IF;
    END LOOP;
END
$migration$;
