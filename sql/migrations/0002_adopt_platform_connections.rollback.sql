-- Undo what 0002 changed, newest change first, from the statements it
-- recorded. A change whose undo would lose data (dropping a column that now
-- holds values, re-creating the full unique constraint over history rows)
-- raises instead, and the whole rollback is undone with it.

DO $rollback$
DECLARE
    v_undo record;
BEGIN
    IF to_regclass('cmis.cmis_repo_undo') IS NULL THEN
        RETURN;
    END IF;
    SET LOCAL row_security = off;
    FOR v_undo IN
        SELECT undo_id, undo_sql FROM cmis.cmis_repo_undo
         WHERE migration = '0002_adopt_platform_connections'
         ORDER BY undo_id DESC
    LOOP
        EXECUTE v_undo.undo_sql;
        DELETE FROM cmis.cmis_repo_undo WHERE undo_id = v_undo.undo_id;
    END LOOP;
END
$rollback$;
