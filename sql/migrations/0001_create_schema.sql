-- Create schema cmis, cmis.orgs and cmis.platform_connections where they are
-- absent.
--
-- On a database the Laravel app already owns, all three exist and this
-- migration changes nothing; 0002 then brings the existing table to the
-- target shape. What it does create is recorded in cmis.cmis_repo_undo, made
-- only when there is something to record, so that its rollback drops exactly
-- that and no more.

DO $migration$
DECLARE
    c_migration constant text := '0001_create_schema';
    v_created text[] := '{}';
    v_undo_sql text;
BEGIN
    IF to_regnamespace('cmis') IS NULL THEN
        CREATE SCHEMA cmis;
        v_created := v_created || 'DROP SCHEMA cmis'::text;
    END IF;

    IF to_regclass('cmis.orgs') IS NULL THEN
        CREATE TABLE cmis.orgs (
            org_id uuid PRIMARY KEY,
            name text
        );
        v_created := v_created || 'DROP TABLE cmis.orgs'::text;
    END IF;

    IF to_regclass('cmis.platform_connections') IS NULL THEN
        CREATE TABLE cmis.platform_connections (
            connection_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            org_id uuid NOT NULL REFERENCES cmis.orgs (org_id) ON DELETE CASCADE,
            platform varchar(50) NOT NULL,
            account_id varchar(255) NOT NULL,
            account_name varchar(255),
            status varchar(30) NOT NULL DEFAULT 'active',
            access_token text,
            refresh_token text,
            token_expires_at timestamptz,
            scopes jsonb,
            account_metadata jsonb,
            last_sync_at timestamptz,
            last_error_at timestamptz,
            last_error_message text,
            auto_sync boolean NOT NULL DEFAULT true,
            sync_frequency_minutes integer NOT NULL DEFAULT 15,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz
        );
        v_created := v_created || 'DROP TABLE cmis.platform_connections'::text;
    END IF;

    IF cardinality(v_created) > 0 THEN
        -- One row per change a migration made, with the statement that undoes
        -- it; rollbacks replay their migration's rows newest first. 0002
        -- makes the same table when this migration had nothing to record.
        CREATE TABLE IF NOT EXISTS cmis.cmis_repo_undo (
            undo_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            migration text NOT NULL,
            undo_sql text NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT now()
        );
        FOREACH v_undo_sql IN ARRAY v_created LOOP
            INSERT INTO cmis.cmis_repo_undo (migration, undo_sql) VALUES (c_migration, v_undo_sql);
        END LOOP;
    END IF;
END
$migration$;
