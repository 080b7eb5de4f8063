-- depends: 0001_create_schema
--
-- Bring cmis.platform_connections, whatever historical shape the Laravel app
-- left it in, to the target shape:
--   * every row is checked first; a row that cannot fit (a status outside the
--     list, a NULL where the target says NOT NULL, an account id too long, an
--     org missing from cmis.orgs, two live rows for one key - every row is
--     live when there is no deleted_at yet) stops the migration with a
--     message naming it, and nothing is changed;
--   * missing columns are added, column types, defaults and NOT NULLs set
--     (`timestamp` values are read as UTC);
--   * the status and sync-frequency CHECKs and the ON DELETE CASCADE foreign
--     key are (re)made;
--   * the full unique constraint or index on (org_id, platform, account_id)
--     becomes the partial unique index idx_platform_connections_unique
--     WHERE deleted_at IS NULL (a hand-made one under another name is
--     renamed to it, a second copy dropped), and
--     idx_platform_connections_lookup, over every row, makes look-ups of
--     deleted rows and of one org index scans;
--   * row-level security, FORCE and every policy stay as they were (policies
--     are dropped and re-created around column type changes, which
--     PostgreSQL requires).
-- Each change records the statement that undoes it in cmis.cmis_repo_undo
-- (made here when 0001 had nothing to record); the rollback replays them
-- newest first.

DO $migration$
DECLARE
    c_migration constant text := '0002_adopt_platform_connections';
    c_table constant regclass := 'cmis.platform_connections'::regclass;
    c_statuses constant text[] := ARRAY['pending', 'active', 'warning', 'expired', 'revoked', 'error'];
    v_col record;
    v_con record;
    v_idx record;
    v_pol record;
    v_check record;
    v_ids text;
    v_count bigint;
    v_problems text[] := '{}';
    v_policies text[] := '{}';
    v_policy_names text[] := '{}';
    v_has_deleted_at boolean;
    v_key_attnums int2[];
BEGIN
    -- Every row must be checked, whatever the policies would let this role see.
    SET LOCAL row_security = off;

    ------------------------------------------------------------------------
    -- 1. Check every row before changing anything.
    ------------------------------------------------------------------------
    -- Without a deleted_at column yet, every row is live.
    v_has_deleted_at := EXISTS (
        SELECT FROM pg_attribute WHERE attrelid = c_table AND attname = 'deleted_at' AND NOT attisdropped);
    FOR v_check IN
        SELECT * FROM (VALUES
            ('org_id', 'org_id IS NULL', 'org_id is NULL'),
            ('org_id', 'org_id IS NOT NULL AND NOT EXISTS (SELECT FROM cmis.orgs o WHERE o.org_id = c.org_id)',
                'org_id is not in cmis.orgs'),
            ('platform', 'platform IS NULL OR char_length(platform) > 50',
                'platform is NULL or longer than 50 characters'),
            ('account_id', 'account_id IS NULL OR char_length(account_id) > 255',
                'account_id is NULL or longer than 255 characters'),
            ('account_name', 'char_length(account_name) > 255', 'account_name is longer than 255 characters'),
            ('status', format('status IS NULL OR status::text <> ALL (%L::text[])', c_statuses),
                'status is not one of ' || array_to_string(c_statuses, ', ')),
            ('auto_sync', 'auto_sync IS NULL', 'auto_sync is NULL'),
            ('sync_frequency_minutes', 'sync_frequency_minutes IS NULL OR sync_frequency_minutes <= 0',
                'sync_frequency_minutes is NULL or not positive'),
            ('created_at', 'created_at IS NULL', 'created_at is NULL'),
            ('updated_at', 'updated_at IS NULL', 'updated_at is NULL'),
            ('account_id',
                CASE WHEN v_has_deleted_at THEN 'deleted_at IS NULL AND ' ELSE '' END
                || 'EXISTS (SELECT FROM cmis.platform_connections o'
                || ' WHERE o.org_id = c.org_id AND o.platform = c.platform AND o.account_id = c.account_id'
                || CASE WHEN v_has_deleted_at THEN ' AND o.deleted_at IS NULL' ELSE '' END
                || ' AND o.connection_id <> c.connection_id)',
                'another live row has the same (org_id, platform, account_id)')
        ) AS checks (column_name, condition, problem)
    LOOP
        CONTINUE WHEN NOT EXISTS (
            SELECT FROM pg_attribute
             WHERE attrelid = c_table AND attname = v_check.column_name AND NOT attisdropped);
        EXECUTE format(
            'SELECT count(*), string_agg(connection_id::text, '', '') FILTER (WHERE n <= 5)'
            ' FROM (SELECT connection_id, row_number() OVER (ORDER BY connection_id) AS n'
            '         FROM cmis.platform_connections c WHERE %s) AS bad',
            v_check.condition)
        INTO v_count, v_ids;
        IF v_count > 0 THEN
            v_problems := v_problems || format('%s row(s) where %s (connection_id %s%s)',
                v_count, v_check.problem, v_ids, CASE WHEN v_count > 5 THEN ', ...' ELSE '' END);
        END IF;
    END LOOP;
    IF cardinality(v_problems) > 0 THEN
        RAISE EXCEPTION 'cannot adopt cmis.platform_connections: % kind(s) of row do not fit the target schema: %',
            cardinality(v_problems), array_to_string(v_problems, '; ')
            USING ERRCODE = 'check_violation',
                  HINT = 'Fix or delete those rows, then run the migration again; nothing was changed.';
    END IF;

    ------------------------------------------------------------------------
    -- 2. Columns: add the missing ones, then set types, defaults, NOT NULLs.
    ------------------------------------------------------------------------
    -- The same bookkeeping table as 0001's.
    CREATE TABLE IF NOT EXISTS cmis.cmis_repo_undo (
        undo_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        migration text NOT NULL,
        undo_sql text NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TEMP TABLE cmis_repo_target_columns (
        position int, column_name name, column_type text, column_default text, not_null boolean
    ) ON COMMIT DROP;
    INSERT INTO cmis_repo_target_columns VALUES
        (1, 'connection_id', 'uuid', 'gen_random_uuid()', true),
        (2, 'org_id', 'uuid', NULL, true),
        (3, 'platform', 'character varying(50)', NULL, true),
        (4, 'account_id', 'character varying(255)', NULL, true),
        (5, 'account_name', 'character varying(255)', NULL, false),
        (6, 'status', 'character varying(30)', '''active''::character varying', true),
        (7, 'access_token', 'text', NULL, false),
        (8, 'refresh_token', 'text', NULL, false),
        (9, 'token_expires_at', 'timestamp with time zone', NULL, false),
        (10, 'scopes', 'jsonb', NULL, false),
        (11, 'account_metadata', 'jsonb', NULL, false),
        (12, 'last_sync_at', 'timestamp with time zone', NULL, false),
        (13, 'last_error_at', 'timestamp with time zone', NULL, false),
        (14, 'last_error_message', 'text', NULL, false),
        (15, 'auto_sync', 'boolean', 'true', true),
        (16, 'sync_frequency_minutes', 'integer', '15', true),
        (17, 'created_at', 'timestamp with time zone', 'now()', true),
        (18, 'updated_at', 'timestamp with time zone', 'now()', true),
        (19, 'deleted_at', 'timestamp with time zone', NULL, false);

    FOR v_col IN SELECT * FROM cmis_repo_target_columns ORDER BY position LOOP
        IF NOT EXISTS (SELECT FROM pg_attribute
                        WHERE attrelid = c_table AND attname = v_col.column_name AND NOT attisdropped) THEN
            EXECUTE format('ALTER TABLE cmis.platform_connections ADD COLUMN %I %s%s%s',
                v_col.column_name, v_col.column_type,
                CASE WHEN v_col.column_default IS NOT NULL THEN ' DEFAULT ' || v_col.column_default ELSE '' END,
                CASE WHEN v_col.not_null THEN ' NOT NULL' ELSE '' END);
            -- Dropping the column again must not lose what was written since.
            INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, format(
                'ALTER TABLE cmis.platform_connections DROP COLUMN %I', v_col.column_name));
            INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, format(
                $guard$DO $g$ BEGIN IF EXISTS (SELECT FROM cmis.platform_connections WHERE %1$I IS DISTINCT FROM %2$s) THEN RAISE EXCEPTION 'refusing to drop cmis.platform_connections.%1$s: rows hold values in it' USING ERRCODE = 'dependent_objects_still_exist', HINT = 'The original shape had no such column; clear it (for deleted_at: purge or restore those rows) first.'; END IF; END $g$$guard$,
                v_col.column_name, coalesce(v_col.column_default, 'NULL')));
        END IF;
    END LOOP;

    -- Policies may not survive a column type change: keep their definitions.
    IF EXISTS (
        SELECT FROM cmis_repo_target_columns t
          JOIN pg_attribute a ON a.attrelid = c_table AND a.attname = t.column_name AND NOT a.attisdropped
         WHERE format_type(a.atttypid, a.atttypmod) <> t.column_type
    ) THEN
        FOR v_pol IN
            SELECT p.policyname,
                   format('CREATE POLICY %I ON cmis.platform_connections AS %s FOR %s TO %s%s%s',
                          p.policyname, p.permissive, p.cmd,
                          (SELECT string_agg(CASE WHEN r = 'public' THEN 'PUBLIC' ELSE quote_ident(r) END, ', ')
                             FROM unnest(p.roles) AS r),
                          CASE WHEN p.qual IS NOT NULL THEN ' USING (' || p.qual || ')' ELSE '' END,
                          CASE WHEN p.with_check IS NOT NULL THEN ' WITH CHECK (' || p.with_check || ')' ELSE '' END)
                       AS create_sql
              FROM pg_policies p
             WHERE p.schemaname = 'cmis' AND p.tablename = 'platform_connections'
        LOOP
            v_policies := v_policies || v_pol.create_sql;
            v_policy_names := v_policy_names || v_pol.policyname::text;
            EXECUTE format('DROP POLICY %I ON cmis.platform_connections', v_pol.policyname);
            INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, v_pol.create_sql);
        END LOOP;
    END IF;

    FOR v_col IN
        SELECT t.*, format_type(a.atttypid, a.atttypmod) AS current_type,
               pg_get_expr(d.adbin, d.adrelid) AS current_default, a.attnotnull AS current_not_null
          FROM cmis_repo_target_columns t
          JOIN pg_attribute a ON a.attrelid = c_table AND a.attname = t.column_name AND NOT a.attisdropped
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         ORDER BY t.position
    LOOP
        IF v_col.current_type <> v_col.column_type THEN
            IF v_col.current_default IS NOT NULL THEN
                -- A default of the old type may not cast; it is set again below.
                EXECUTE format('ALTER TABLE cmis.platform_connections ALTER COLUMN %I DROP DEFAULT',
                    v_col.column_name);
                INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, format(
                    'ALTER TABLE cmis.platform_connections ALTER COLUMN %I SET DEFAULT %s',
                    v_col.column_name, v_col.current_default));
                v_col.current_default := NULL;
            END IF;
            EXECUTE format('ALTER TABLE cmis.platform_connections ALTER COLUMN %1$I TYPE %2$s USING %1$I%3$s',
                v_col.column_name, v_col.column_type,
                CASE WHEN v_col.current_type LIKE 'timestamp%without time zone'
                      AND v_col.column_type = 'timestamp with time zone'
                     THEN ' AT TIME ZONE ''UTC''' ELSE '::' || v_col.column_type END);
            INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, format(
                'ALTER TABLE cmis.platform_connections ALTER COLUMN %1$I TYPE %2$s USING %1$I%3$s',
                v_col.column_name, v_col.current_type,
                CASE WHEN v_col.current_type LIKE 'timestamp%without time zone'
                      AND v_col.column_type = 'timestamp with time zone'
                     THEN ' AT TIME ZONE ''UTC''' ELSE '::' || v_col.current_type END));
        END IF;
        IF v_col.current_default IS DISTINCT FROM v_col.column_default THEN
            EXECUTE format('ALTER TABLE cmis.platform_connections ALTER COLUMN %I %s', v_col.column_name,
                coalesce('SET DEFAULT ' || v_col.column_default, 'DROP DEFAULT'));
            INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, format(
                'ALTER TABLE cmis.platform_connections ALTER COLUMN %I %s', v_col.column_name,
                coalesce('SET DEFAULT ' || v_col.current_default, 'DROP DEFAULT')));
        END IF;
        IF v_col.current_not_null <> v_col.not_null THEN
            EXECUTE format('ALTER TABLE cmis.platform_connections ALTER COLUMN %I %s NOT NULL',
                v_col.column_name, CASE WHEN v_col.not_null THEN 'SET' ELSE 'DROP' END);
            INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, format(
                'ALTER TABLE cmis.platform_connections ALTER COLUMN %I %s NOT NULL',
                v_col.column_name, CASE WHEN v_col.not_null THEN 'DROP' ELSE 'SET' END));
        END IF;
    END LOOP;

    FOR i IN 1 .. cardinality(v_policies) LOOP
        EXECUTE v_policies[i];
        INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, format(
            'DROP POLICY %I ON cmis.platform_connections', v_policy_names[i]));
    END LOOP;

    ------------------------------------------------------------------------
    -- 3. Constraints: primary key, foreign key, CHECKs.
    ------------------------------------------------------------------------
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = c_table AND contype = 'p') THEN
        ALTER TABLE cmis.platform_connections ADD CONSTRAINT platform_connections_pkey PRIMARY KEY (connection_id);
        INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration,
            'ALTER TABLE cmis.platform_connections DROP CONSTRAINT platform_connections_pkey');
    END IF;

    IF NOT EXISTS (
        SELECT FROM pg_constraint
         WHERE conrelid = c_table AND contype = 'f' AND confrelid = 'cmis.orgs'::regclass
           AND conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = c_table AND attname = 'org_id')]
           AND confdeltype = 'c'
    ) THEN
        FOR v_con IN
            SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
             WHERE conrelid = c_table AND contype = 'f' AND confrelid = 'cmis.orgs'::regclass
        LOOP
            EXECUTE format('ALTER TABLE cmis.platform_connections DROP CONSTRAINT %I', v_con.conname);
            INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, format(
                'ALTER TABLE cmis.platform_connections ADD CONSTRAINT %I %s', v_con.conname, v_con.def));
        END LOOP;
        ALTER TABLE cmis.platform_connections ADD CONSTRAINT platform_connections_org_id_fkey
            FOREIGN KEY (org_id) REFERENCES cmis.orgs (org_id) ON DELETE CASCADE;
        INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration,
            'ALTER TABLE cmis.platform_connections DROP CONSTRAINT platform_connections_org_id_fkey');
    END IF;

    -- Replace every CHECK on status alone, or on sync_frequency_minutes alone,
    -- with ours: an old status list lacks 'warning', which the app writes.
    FOR v_con IN
        SELECT c.conname, pg_get_constraintdef(c.oid) AS def
          FROM pg_constraint c
          JOIN pg_attribute a ON a.attrelid = c.conrelid AND c.conkey = ARRAY[a.attnum]
         WHERE c.conrelid = c_table AND c.contype = 'c'
           AND a.attname IN ('status', 'sync_frequency_minutes')
    LOOP
        EXECUTE format('ALTER TABLE cmis.platform_connections DROP CONSTRAINT %I', v_con.conname);
        INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, format(
            'ALTER TABLE cmis.platform_connections ADD CONSTRAINT %I %s', v_con.conname, v_con.def));
    END LOOP;
    ALTER TABLE cmis.platform_connections
        ADD CONSTRAINT platform_connections_status_check
            CHECK (status IN ('pending', 'active', 'warning', 'expired', 'revoked', 'error')),
        ADD CONSTRAINT platform_connections_sync_frequency_minutes_check
            CHECK (sync_frequency_minutes > 0);
    INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES
        (c_migration, 'ALTER TABLE cmis.platform_connections DROP CONSTRAINT platform_connections_status_check'),
        (c_migration, 'ALTER TABLE cmis.platform_connections DROP CONSTRAINT platform_connections_sync_frequency_minutes_check');

    ------------------------------------------------------------------------
    -- 4. Indexes: full unique on the key -> partial unique on live rows.
    ------------------------------------------------------------------------
    SELECT array_agg(a.attnum ORDER BY k.ord) INTO v_key_attnums
      FROM unnest(ARRAY['org_id', 'platform', 'account_id']) WITH ORDINALITY AS k (name, ord)
      JOIN pg_attribute a ON a.attrelid = c_table AND a.attname = k.name;

    FOR v_idx IN
        SELECT ic.relname AS bare_name,
               pg_get_indexdef(i.indexrelid) AS def,
               pg_get_expr(i.indpred, i.indrelid) AS predicate,
               con.conname
          FROM pg_index i
          JOIN pg_class ic ON ic.oid = i.indexrelid
          LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                                      AND con.contype = 'u'
         WHERE i.indrelid = c_table AND i.indisunique AND NOT i.indisprimary
           AND i.indkey::text = array_to_string(v_key_attnums, ' ') AND i.indexprs IS NULL
         -- Full ones first: one of them may hold our name, which a partial
         -- one takes over once it is gone.
         ORDER BY i.indpred IS NOT NULL, ic.relname = 'idx_platform_connections_unique' DESC, ic.relname
    LOOP
        IF v_idx.predicate IS NULL THEN
            -- The full unique constraint or index that made reconnects fail.
            IF v_idx.conname IS NOT NULL THEN
                EXECUTE format('ALTER TABLE cmis.platform_connections DROP CONSTRAINT %I', v_idx.conname);
                INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, format(
                    'ALTER TABLE cmis.platform_connections ADD CONSTRAINT %I UNIQUE USING INDEX %I',
                    v_idx.conname, v_idx.bare_name));
            ELSE
                EXECUTE format('DROP INDEX cmis.%I', v_idx.bare_name);
            END IF;
            -- Dropping the constraint dropped its index too; either way the
            -- index comes back first on rollback, once the guard below has
            -- made sure no key holds two rows (a live one and its history).
            INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, v_idx.def);
            INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, format(
                $guard$DO $g$ DECLARE v_ids text; BEGIN SELECT string_agg(connection_id::text, ', ' ORDER BY connection_id) INTO v_ids FROM (SELECT c.connection_id FROM cmis.platform_connections c WHERE EXISTS (SELECT FROM cmis.platform_connections o WHERE o.org_id = c.org_id AND o.platform = c.platform AND o.account_id = c.account_id AND o.connection_id <> c.connection_id) ORDER BY c.connection_id LIMIT 10) AS shared; IF v_ids IS NOT NULL THEN RAISE EXCEPTION 'refusing to re-create %1$s: rows share one (org_id, platform, account_id) (connection_id %%)', v_ids USING ERRCODE = 'unique_violation', HINT = 'The original shape allowed one row per key, soft-deleted or not; purge the soft-deleted rows of those keys first.'; END IF; END $g$$guard$,
                -- The name goes into a string literal and a RAISE format.
                replace(replace(coalesce(v_idx.conname, v_idx.bare_name), '''', ''''''), '%', '%%')));
        ELSIF v_idx.predicate = '(deleted_at IS NULL)' THEN
            -- The hand-written fix already ran; keep its index under our name.
            IF v_idx.bare_name = 'idx_platform_connections_unique' THEN
                CONTINUE;
            ELSIF to_regclass('cmis.idx_platform_connections_unique') IS NULL THEN
                EXECUTE format('ALTER INDEX cmis.%I RENAME TO idx_platform_connections_unique', v_idx.bare_name);
                INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, format(
                    'ALTER INDEX cmis.idx_platform_connections_unique RENAME TO %I', v_idx.bare_name));
            ELSE
                -- A second copy of ours: it only slows writes down.
                EXECUTE format('DROP INDEX cmis.%I', v_idx.bare_name);
                INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, v_idx.def);
            END IF;
        END IF;
    END LOOP;

    IF to_regclass('cmis.idx_platform_connections_unique') IS NULL THEN
        CREATE UNIQUE INDEX idx_platform_connections_unique
            ON cmis.platform_connections (org_id, platform, account_id)
            WHERE deleted_at IS NULL;
        INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration,
            'DROP INDEX cmis.idx_platform_connections_unique');
    END IF;
    IF to_regclass('cmis.idx_platform_connections_lookup') IS NULL THEN
        -- Every row, live or deleted: restores find the newest deleted row of a
        -- key, and listings and purges of one org, through it.
        CREATE INDEX idx_platform_connections_lookup
            ON cmis.platform_connections (org_id, platform, account_id, deleted_at);
        INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration,
            'DROP INDEX cmis.idx_platform_connections_lookup');
    END IF;
END
$migration$;
