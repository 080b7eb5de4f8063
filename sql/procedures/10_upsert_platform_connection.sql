CREATE OR REPLACE FUNCTION cmis.upsert_platform_connection(
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
    c_statuses constant text[] := ARRAY['pending', 'active', 'warning', 'expired', 'revoked', 'error'];
    -- Passes through the loop below. Only SQL that does not take our key lock
    -- (the app's own) can make a pass end without a row, each time by
    -- committing a change to this key at the wrong moment; the last pass
    -- cannot fail (it skips the undelete and creates when no live row is left).
    c_max_attempts constant int := 5;
    v_now timestamptz;
    v_row cmis.platform_connections;
    v_candidate_id uuid;
    v_unlocked_id uuid;
    v_new_id uuid;
    v_outcome text;
    v_setting text;
BEGIN
    -- Check every argument before anything is written.
    IF p_org_id IS NULL THEN
        RAISE EXCEPTION 'p_org_id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the org_id of a row in cmis.orgs.';
    END IF;
    IF p_platform IS NULL THEN
        RAISE EXCEPTION 'p_platform must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass a lower-case slug such as ''meta'' or ''google''.';
    END IF;
    -- Blank: empty or white space only (btrim alone strips only spaces).
    IF p_platform !~ '[^[:space:]]' THEN
        RAISE EXCEPTION 'p_platform must not be blank'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass a lower-case slug such as ''meta'' or ''google''.';
    END IF;
    IF p_platform !~ '^[a-z0-9]+([_-][a-z0-9]+)*$' THEN
        RAISE EXCEPTION 'p_platform must be a lower-case slug, got %', quote_literal(left(p_platform, 60))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use lower-case letters and digits, words joined by - or _, such as ''meta'' or ''google_ads''.';
    END IF;
    IF char_length(p_platform) > 50 THEN
        RAISE EXCEPTION 'p_platform is % characters long; at most 50 fit', char_length(p_platform)
            USING ERRCODE = 'string_data_right_truncation';
    END IF;
    IF p_account_id IS NULL THEN
        RAISE EXCEPTION 'p_account_id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the account''s id on the ad platform.';
    END IF;
    IF p_account_id !~ '[^[:space:]]' THEN
        RAISE EXCEPTION 'p_account_id must not be blank'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the account''s id on the ad platform.';
    END IF;
    -- ' act_1' and 'act_1' would be two keys for one account.
    IF p_account_id ~ '^[[:space:]]|[[:space:]]$' THEN
        RAISE EXCEPTION 'p_account_id must not start or end with white space, got %', quote_literal(left(p_account_id, 60))
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Trim the account id before passing it.';
    END IF;
    IF char_length(p_account_id) > 255 THEN
        RAISE EXCEPTION 'p_account_id is % characters long; at most 255 fit', char_length(p_account_id)
            USING ERRCODE = 'string_data_right_truncation';
    END IF;
    IF char_length(p_account_name) > 255 THEN
        RAISE EXCEPTION 'p_account_name is % characters long; at most 255 fit', char_length(p_account_name)
            USING ERRCODE = 'string_data_right_truncation';
    END IF;
    IF p_status <> ALL (c_statuses) THEN
        RAISE EXCEPTION 'p_status must be one of %, got %',
                array_to_string(c_statuses, ', '), quote_literal(left(p_status, 60))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Leave it out to re-activate (''active''), or pass NULL to keep the stored status.';
    END IF;
    IF p_sync_frequency_minutes <= 0 THEN
        RAISE EXCEPTION 'p_sync_frequency_minutes must be a positive number of minutes, got %',
                p_sync_frequency_minutes
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL to keep the stored value (15 for a new connection).';
    END IF;
    -- As deep as Python's json module (and most others) can read back: an item
    -- at level 101 is too deep (cmis_repo.values.MAX_JSON_DEPTH).
    IF jsonb_path_exists(p_scopes, 'strict $.**{101}') OR jsonb_path_exists(p_account_metadata, 'strict $.**{101}') THEN
        RAISE EXCEPTION '% is nested deeper than 100 levels',
                CASE WHEN jsonb_path_exists(p_scopes, 'strict $.**{101}') THEN 'p_scopes' ELSE 'p_account_metadata' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Store at most 100 levels of nested arrays and objects.';
    END IF;

    -- Only the organisation the session acts for (app.current_org_id).
    -- The check function is called only when it could refuse: not when the
    -- setting is this org's uuid as text (as the repository sets it), nor when
    -- it is unset for a role row-level security does not apply to.
    v_setting := NULLIF(current_setting('app.current_org_id', true), '');
    IF v_setting IS DISTINCT FROM p_org_id::text
       AND (v_setting IS NOT NULL OR row_security_active('cmis.platform_connections'::regclass)) THEN
        PERFORM cmis.assert_platform_connection_org_scope(p_org_id);
    END IF;

    -- Every cmis-repo write to this key waits here until the others commit,
    -- so the steps below see a key nobody else of ours is changing.
    -- The locks of cmis.lock_platform_connection_key, taken here rather than
    -- by calling it (a function call per upsert): the same keys, in the same
    -- order (tests/test_concurrency.py checks that they are the same locks).
    PERFORM pg_advisory_xact_lock_shared(
        hashtext('cmis.platform_connections/org'), hashtext(p_org_id::text));
    PERFORM pg_advisory_xact_lock(
        hashtext('cmis.platform_connections'),
        hashtext(p_org_id::text || E'\x1f' || p_platform || E'\x1f' || p_account_id));
    -- Stamped after the lock, so that time follows the order of our writes to the key.
    v_now := clock_timestamp();

    FOR v_attempt IN 1 .. c_max_attempts LOOP
        -- Fast path: a live row is updated in place.
        UPDATE cmis.platform_connections AS c
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
         WHERE c.org_id = p_org_id AND c.platform = p_platform AND c.account_id = p_account_id
           AND c.deleted_at IS NULL
        RETURNING c.* INTO v_row;
        IF FOUND THEN
            v_outcome := 'updated';
            EXIT;
        END IF;

        -- Undelete the most recently deleted row of the key, if any.
        IF v_attempt < c_max_attempts THEN
            SELECT d.connection_id INTO v_candidate_id
              FROM cmis.platform_connections AS d
             WHERE d.org_id = p_org_id AND d.platform = p_platform
               AND d.account_id = p_account_id AND d.deleted_at IS NOT NULL
             ORDER BY d.deleted_at DESC
             LIMIT 1;
            IF FOUND THEN
                -- Prefer the newest deleted row nobody else is changing right
                -- now. If this transaction already holds a row of the key (it
                -- soft-deleted one earlier), waiting for the app's restore of
                -- another row, which itself waits for us, would deadlock. Rows
                -- this transaction locked itself are never skipped; if every
                -- row is being changed by others, wait below for the newest
                -- (holding nothing of the key then, we are in no cycle).
                SELECT d.connection_id INTO v_unlocked_id
                  FROM cmis.platform_connections AS d
                 WHERE d.org_id = p_org_id AND d.platform = p_platform
                   AND d.account_id = p_account_id AND d.deleted_at IS NOT NULL
                 ORDER BY d.deleted_at DESC
                 LIMIT 1
                   FOR UPDATE SKIP LOCKED;
                v_candidate_id := COALESCE(v_unlocked_id, v_candidate_id);
            END IF;
            IF v_candidate_id IS NOT NULL THEN
                -- Undelete it and set its values in one UPDATE: one new row
                -- version, not two (undelete, then INSERT ... ON CONFLICT DO UPDATE).
                BEGIN
                    UPDATE cmis.platform_connections AS c
                       SET deleted_at = NULL,
                           account_name = COALESCE(p_account_name, c.account_name),
                           status = COALESCE(p_status, c.status),
                           access_token = COALESCE(p_access_token, c.access_token),
                           refresh_token = COALESCE(p_refresh_token, c.refresh_token),
                           token_expires_at = COALESCE(p_token_expires_at, c.token_expires_at),
                           scopes = COALESCE(p_scopes, c.scopes),
                           account_metadata = COALESCE(p_account_metadata, c.account_metadata),
                           auto_sync = COALESCE(p_auto_sync, c.auto_sync),
                           sync_frequency_minutes = COALESCE(p_sync_frequency_minutes, c.sync_frequency_minutes),
                           updated_at = v_now
                     WHERE c.connection_id = v_candidate_id AND c.deleted_at IS NOT NULL
                    RETURNING c.* INTO v_row;
                EXCEPTION WHEN unique_violation THEN
                    -- SQL that does not take our lock made a live row for the
                    -- key since the fast path looked: go round and update it.
                    CONTINUE;
                END;
                IF v_row.connection_id IS NOT NULL THEN
                    v_outcome := 'restored';
                    EXIT;
                END IF;
            END IF;
        END IF;

        -- Create, or update a live row that appeared meanwhile. Create only
        -- when the INSERT's own snapshot holds no row of the key at all:
        -- otherwise the app's SQL changed the key since the steps above looked
        -- (it restored the deleted row, say, and may be soft-deleting it again,
        -- which the INSERT would wait for and then not conflict with), so go
        -- round: the row is there to update or restore, not to duplicate. The
        -- last pass creates regardless, so that it cannot fail. Only a row about
        -- to be created can name an unknown org (the foreign key vouches for
        -- the others): the INSERT checks that too (one statement, not two), and
        -- the error below says so plainly, not as the foreign key's message.
        v_new_id := gen_random_uuid();
        INSERT INTO cmis.platform_connections AS c (
            connection_id, org_id, platform, account_id, account_name, status,
            access_token, refresh_token, token_expires_at, scopes, account_metadata,
            auto_sync, sync_frequency_minutes, created_at, updated_at)
        SELECT
            v_new_id, p_org_id, p_platform, p_account_id, p_account_name, COALESCE(p_status, 'active'),
            p_access_token, p_refresh_token, p_token_expires_at, p_scopes, p_account_metadata,
            COALESCE(p_auto_sync, true), COALESCE(p_sync_frequency_minutes, 15), v_now, v_now
         WHERE EXISTS (SELECT FROM cmis.orgs AS o WHERE o.org_id = p_org_id)
           AND (v_attempt = c_max_attempts
                OR NOT EXISTS (SELECT FROM cmis.platform_connections AS e
                                WHERE e.org_id = p_org_id AND e.platform = p_platform
                                  AND e.account_id = p_account_id))
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
        IF NOT FOUND THEN
            -- On the last pass only the org check can have stopped the INSERT.
            IF v_attempt = c_max_attempts
               OR NOT EXISTS (SELECT FROM cmis.orgs AS o WHERE o.org_id = p_org_id) THEN
                RAISE EXCEPTION 'unknown organisation: p_org_id % is not in cmis.orgs', p_org_id
                    USING ERRCODE = 'foreign_key_violation',
                          HINT = 'Create the organisation first, or pass the org_id of an existing one.';
            END IF;
            CONTINUE;  -- a row of the key appeared: go round
        END IF;
        v_outcome := CASE v_row.connection_id WHEN v_new_id THEN 'created' ELSE 'updated' END;
        EXIT;
    END LOOP;

    RETURN QUERY SELECT
        v_outcome, v_row.connection_id, v_row.org_id, v_row.platform, v_row.account_id,
        v_row.account_name, v_row.status, v_row.access_token, v_row.refresh_token,
        v_row.token_expires_at, v_row.scopes, v_row.account_metadata, v_row.last_sync_at,
        v_row.last_error_at, v_row.last_error_message, v_row.auto_sync,
        v_row.sync_frequency_minutes, v_row.created_at, v_row.updated_at, v_row.deleted_at;
END
$function$;

COMMENT ON FUNCTION cmis.upsert_platform_connection(
    uuid, text, text, text, text, text, text, timestamptz, jsonb, jsonb, boolean, integer) IS
'Restore-or-create a platform connection in one call; returns one row: outcome and the row as stored.
- A live row for (p_org_id, p_platform, p_account_id) is updated: outcome ''updated''.
- Else the most recently soft-deleted row of that key is undeleted and updated, keeping its
  connection_id and created_at: outcome ''restored''. (A row another transaction is changing at
  that moment is passed over for the next newest, if there is one.)
- Else a row is created: outcome ''created''.
A NULL argument keeps the stored value; p_status defaults to ''active'' so a reconnect re-activates;
updated_at moves on every call. Safe under concurrency: calls for one key are serialised by
cmis.lock_platform_connection_key (held to the end of the transaction); writes by SQL that does not
take that lock never make this function fail.
Errors, nothing written: 22004 NULL org/platform/account; 22023 blank values, an account id with
leading or trailing white space, a platform that is not a lower-case slug, a status outside pending/active/warning/expired/revoked/error, a sync frequency <= 0;
22023 p_scopes or p_account_metadata nested deeper than 100 levels;
22001 a platform over 50, an account id or name over 255 characters; 23503 an org not in cmis.orgs;
42501 app.current_org_id is set to another org, or is unset for a role under row-level security.
Tokens are stored exactly as passed: the Laravel app (and cmis_repo with a cipher) stores
Crypt::encryptString ciphertext, so a psql user must pass ciphertext, never a plain token.
Example: SELECT outcome, connection_id FROM cmis.upsert_platform_connection(
  p_org_id => ''…'', p_platform => ''meta'', p_account_id => ''act_42'', p_access_token => ''…'');';
