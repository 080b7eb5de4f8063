-- Drop only what 0001 created (its tables, then schema cmis), and never a
-- table that holds rows: a rollback must not be the way data gets lost.

DO $rollback$
DECLARE
    v_undo record;
    v_table text;
    v_has_rows boolean;
    v_drop_schema boolean := false;
BEGIN
    IF to_regclass('cmis.cmis_repo_undo') IS NULL THEN
        RETURN;
    END IF;
    -- Count every row, whatever the table's row-level security policies say.
    SET LOCAL row_security = off;
    FOR v_undo IN
        SELECT undo_id, undo_sql FROM cmis.cmis_repo_undo
         WHERE migration = '0001_create_schema'
         ORDER BY undo_id DESC
    LOOP
        IF v_undo.undo_sql = 'DROP SCHEMA cmis' THEN
            -- Last, once the bookkeeping table inside it is gone too.
            v_drop_schema := true;
        ELSE
            v_table := substring(v_undo.undo_sql FROM '^DROP TABLE (\S+)$');
            IF v_table IS NOT NULL AND to_regclass(v_table) IS NOT NULL THEN
                EXECUTE format('SELECT EXISTS (SELECT FROM %s)', v_table) INTO v_has_rows;
                IF v_has_rows THEN
                    RAISE EXCEPTION 'refusing to roll back 0001_create_schema: % holds rows', v_table
                        USING ERRCODE = 'dependent_objects_still_exist',
                              HINT = 'Back up and delete its rows first if you really mean to drop it.';
                END IF;
                EXECUTE v_undo.undo_sql;
            END IF;
        END IF;
        DELETE FROM cmis.cmis_repo_undo WHERE undo_id = v_undo.undo_id;
    END LOOP;
    IF NOT EXISTS (SELECT FROM cmis.cmis_repo_undo) THEN
        DROP TABLE cmis.cmis_repo_undo;
    END IF;
    IF v_drop_schema THEN
        BEGIN
            DROP SCHEMA cmis;
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'keeping schema cmis: it holds objects 0001_create_schema did not create';
        END;
    END IF;
END
$rollback$;
