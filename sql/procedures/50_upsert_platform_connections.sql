CREATE OR REPLACE FUNCTION cmis.upsert_platform_connections(
    p_org_id uuid,
    p_rows jsonb
)
RETURNS TABLE (
    ord integer,
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
    c_fields constant text[] := ARRAY['platform', 'account_id', 'account_name', 'status', 'access_token',
        'refresh_token', 'token_expires_at', 'scopes', 'account_metadata', 'auto_sync',
        'sync_frequency_minutes'];
    -- As in upsert_platform_connection: only SQL that does not take our locks
    -- (the app's own) can make a pass end with keys still to do, and the last
    -- cannot. A pass counts only when it moved no key forward.
    c_max_attempts constant int := 5;
    v_count int;
    v_first_bad bigint;
    v_bad record;
    -- The elements as rows of the table's type (only the fields given are
    -- set), in p_rows order: one array, sorted once, read by every statement.
    v_input cmis.platform_connections[];
    v_now timestamptz;
    -- Per element: 0 still to do, 1 updated, 2 restored, 3 created. An int
    -- array with no NULLs, so that v_state[n] is found without a scan.
    v_state int[];
    v_row cmis.platform_connections[];
    v_restored_n bigint[];
    v_restored_row cmis.platform_connections[];
    v_done record;
    v_attempt int := 1;
    v_progress int;
    v_org_lock_modes text[];
    -- Each element's position by its key, and the connection_id a create of
    -- it takes: rows the INSERT returns are matched to their elements through
    -- these, never by a join the planner could make quadratic.
    v_position jsonb;
    v_new_ids uuid[];
    v_key record;
BEGIN
    ------------------------------------------------------------------------
    -- Check every element before anything is written.
    ------------------------------------------------------------------------
    IF p_org_id IS NULL OR p_rows IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN p_org_id IS NULL THEN 'p_org_id' ELSE 'p_rows' END
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF jsonb_typeof(p_rows) <> 'array' THEN
        RAISE EXCEPTION 'p_rows must be a JSON array of objects, got a JSON %', jsonb_typeof(p_rows)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass [{"platform": "meta", "account_id": "act_1", ...}, ...].';
    END IF;
    v_count := jsonb_array_length(p_rows);

    -- Find the first bad element cheaply (these are the checks listed one by
    -- one below, OR'ed), then say what is wrong with it. Unknown fields are
    -- looked for apart: key by key is cheaper than building "o - c_fields".
    SELECT min(e.ord) INTO v_first_bad
      FROM jsonb_array_elements(p_rows) WITH ORDINALITY AS e (o, ord)
     WHERE jsonb_typeof(e.o) <> 'object'
        OR jsonb_typeof(e.o -> 'platform') IS DISTINCT FROM 'string'
        OR jsonb_typeof(e.o -> 'account_id') IS DISTINCT FROM 'string'
        OR jsonb_typeof(e.o -> 'account_name') NOT IN ('string', 'null')
        OR jsonb_typeof(e.o -> 'status') NOT IN ('string', 'null')
        OR jsonb_typeof(e.o -> 'access_token') NOT IN ('string', 'null')
        OR jsonb_typeof(e.o -> 'refresh_token') NOT IN ('string', 'null')
        OR jsonb_typeof(e.o -> 'token_expires_at') NOT IN ('string', 'null')
        OR jsonb_typeof(e.o -> 'auto_sync') NOT IN ('boolean', 'null')
        OR CASE coalesce(jsonb_typeof(e.o -> 'sync_frequency_minutes'), 'null')
               WHEN 'null' THEN false
               -- An integer of the single call's p_sync_frequency_minutes: 1 .. 2^31 - 1,
               -- compared as JSON (no cast the planner could fold too early).
               WHEN 'number' THEN NOT (e.o ->> 'sync_frequency_minutes' ~ '^-?[0-9]+$'
                                       AND e.o -> 'sync_frequency_minutes' BETWEEN '1'::jsonb AND '2147483647'::jsonb)
               ELSE true END
        OR jsonb_path_exists(e.o -> 'scopes', 'strict $.**{101}')
        OR jsonb_path_exists(e.o -> 'account_metadata', 'strict $.**{101}')
        -- A slug is never blank; an id that starts and ends with a non-space is not either.
        OR e.o ->> 'platform' !~ '^[a-z0-9]+([_-][a-z0-9]+)*$'
        OR char_length(e.o ->> 'platform') > 50
        OR e.o ->> 'account_id' !~ '^[^[:space:]](.*[^[:space:]])?$'
        OR char_length(e.o ->> 'account_id') > 255
        OR char_length(e.o ->> 'account_name') > 255
        OR e.o ->> 'status' <> ALL (c_statuses);
    SELECT least(v_first_bad, min(e.ord)) INTO v_first_bad
      FROM jsonb_array_elements(p_rows) WITH ORDINALITY AS e (o, ord)
     WHERE jsonb_typeof(e.o) = 'object'
       AND EXISTS (SELECT FROM jsonb_object_keys(e.o) AS k WHERE k <> ALL (c_fields));

    -- What is wrong with it: its first problem, in the order the single call
    -- checks its arguments.
    IF v_first_bad IS NOT NULL THEN
        SELECT e.ord, problem.code, problem.message, problem.hint INTO v_bad
          FROM (SELECT p_rows -> (v_first_bad - 1)::int AS element, v_first_bad AS ord) AS e
         CROSS JOIN LATERAL (
                SELECT CASE WHEN jsonb_typeof(e.element) = 'object' THEN e.element ELSE '{}' END AS o,
                       jsonb_typeof(e.element) AS kind
               ) AS x
         CROSS JOIN LATERAL (
                SELECT x.o ->> 'platform' AS platform, x.o ->> 'account_id' AS account_id,
                       x.o ->> 'account_name' AS account_name, x.o ->> 'status' AS status,
                       (SELECT min(k) FROM jsonb_object_keys(x.o) AS k WHERE k <> ALL (c_fields)) AS unknown,
                       (SELECT min(k) FROM jsonb_each(x.o) AS f (k, v)
                         WHERE (k IN ('platform', 'account_id', 'account_name', 'status', 'access_token',
                                      'refresh_token', 'token_expires_at')
                                AND jsonb_typeof(v) NOT IN ('string', 'null'))
                            OR (k = 'auto_sync' AND jsonb_typeof(v) NOT IN ('boolean', 'null'))
                            OR (k = 'sync_frequency_minutes'
                                AND NOT (jsonb_typeof(v) = 'null'
                                         OR (jsonb_typeof(v) = 'number' AND v::text ~ '^-?[0-9]+$')))
                       ) AS mistyped
               ) AS f
         CROSS JOIN LATERAL (
                SELECT c.code, c.message, c.hint
                  FROM (VALUES
                    (1, x.kind <> 'object', '22023', format('is a JSON %s, not an object', x.kind), NULL),
                    (2, f.unknown IS NOT NULL, '22023', format('has an unknown field %s', quote_ident(f.unknown)),
                        'The fields are ' || array_to_string(c_fields, ', ') || '.'),
                    (3, f.mistyped IS NOT NULL, '22023', format('field %s has the wrong JSON type', f.mistyped),
                        'Text fields and token_expires_at take strings, auto_sync true/false, '
                        'sync_frequency_minutes an integer; null keeps the stored value.'),
                    (4, f.platform IS NULL, '22004', 'platform must not be NULL', 'Pass a lower-case slug such as ''meta''.'),
                    (5, f.platform !~ '[^[:space:]]', '22023', 'platform must not be blank', NULL),
                    (6, f.platform !~ '^[a-z0-9]+([_-][a-z0-9]+)*$', '22023',
                        format('platform must be a lower-case slug, got %s', quote_literal(left(f.platform, 60))),
                        'Use lower-case letters and digits, words joined by - or _, such as ''meta'' or ''google_ads''.'),
                    (7, char_length(f.platform) > 50, '22001',
                        format('platform is %s characters long; at most 50 fit', char_length(f.platform)), NULL),
                    (8, f.account_id IS NULL, '22004', 'account_id must not be NULL', 'Pass the account''s id on the ad platform.'),
                    (9, f.account_id !~ '[^[:space:]]', '22023', 'account_id must not be blank', NULL),
                    (10, f.account_id ~ '^[[:space:]]|[[:space:]]$', '22023',
                        format('account_id must not start or end with white space, got %s', quote_literal(left(f.account_id, 60))),
                        'Trim the account id before passing it.'),
                    (11, char_length(f.account_id) > 255, '22001',
                        format('account_id is %s characters long; at most 255 fit', char_length(f.account_id)), NULL),
                    (12, char_length(f.account_name) > 255, '22001',
                        format('account_name is %s characters long; at most 255 fit', char_length(f.account_name)), NULL),
                    (13, f.status <> ALL (c_statuses), '22023',
                        format('status must be one of %s, got %s', array_to_string(c_statuses, ', '),
                               quote_literal(left(f.status, 60))),
                        'Leave it out to re-activate (''active''), or pass null to keep the stored status.'),
                    -- Compared as JSON, not cast: with p_rows a constant the
                    -- planner folds a cast even where CASE would skip it.
                    (14, jsonb_typeof(x.o -> 'sync_frequency_minutes') = 'number'
                         AND x.o -> 'sync_frequency_minutes' > '2147483647'::jsonb, '22003',
                        format('sync_frequency_minutes is out of range for an integer, got %s',
                               left(x.o ->> 'sync_frequency_minutes', 60)), NULL),
                    (15, jsonb_typeof(x.o -> 'sync_frequency_minutes') = 'number'
                         AND x.o -> 'sync_frequency_minutes' < '-2147483648'::jsonb, '22003',
                        format('sync_frequency_minutes is out of range for an integer, got %s',
                               left(x.o ->> 'sync_frequency_minutes', 60)), NULL),
                    (16, jsonb_typeof(x.o -> 'sync_frequency_minutes') = 'number'
                         AND x.o -> 'sync_frequency_minutes' <= '0'::jsonb, '22023',
                        format('sync_frequency_minutes must be a positive number of minutes, got %s',
                               x.o ->> 'sync_frequency_minutes'), NULL),
                    (17, jsonb_path_exists(x.o -> 'scopes', 'strict $.**{101}'), '22023',
                        'scopes is nested deeper than 100 levels',
                        'Store at most 100 levels of nested arrays and objects.'),
                    (18, jsonb_path_exists(x.o -> 'account_metadata', 'strict $.**{101}'), '22023',
                        'account_metadata is nested deeper than 100 levels',
                        'Store at most 100 levels of nested arrays and objects.')
                  ) AS c (priority, failed, code, message, hint)
                 WHERE c.failed
                 ORDER BY c.priority
                 LIMIT 1
               ) AS problem;
        RAISE EXCEPTION 'p_rows element % %', v_first_bad, coalesce(v_bad.message, 'is not valid')
            USING ERRCODE = coalesce(v_bad.code, '22023'),
                  HINT = coalesce(v_bad.hint, 'Fix that element; nothing was written.');
    END IF;

    -- The fields, one array each, indexed by position in p_rows. A timestamp
    -- that does not read as one is found element by element, only then.
    BEGIN
        -- By name, whatever the table's column order; an absent status is 'active'.
        SELECT array_agg(jsonb_populate_record(
                   NULL::cmis.platform_connections,
                   CASE WHEN e ? 'status' THEN e ELSE e || '{"status": "active"}' END) ORDER BY n)
          INTO v_input
          FROM jsonb_array_elements(p_rows) WITH ORDINALITY AS a (e, n);
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_time_zone_displacement_value
                   OR invalid_parameter_value THEN  -- an unknown time zone name
        FOR v_bad IN SELECT a.e, a.n FROM jsonb_array_elements(p_rows) WITH ORDINALITY AS a (e, n) LOOP
            BEGIN
                PERFORM (v_bad.e ->> 'token_expires_at')::timestamptz;
            EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow
                           OR invalid_time_zone_displacement_value OR invalid_parameter_value THEN
                RAISE EXCEPTION 'p_rows element % token_expires_at is not a timestamp, got %',
                        v_bad.n, quote_literal(left(v_bad.e ->> 'token_expires_at', 60))
                    USING ERRCODE = 'invalid_datetime_format',
                          HINT = 'Pass an ISO 8601 timestamp with a time zone, such as ''2026-01-31T12:00:00Z''.';
            END;
        END LOOP;
        RAISE;  -- not reached: one of the elements failed above
    END;

    -- The same key twice would be two answers for one row.
    SELECT min(k.ordinality) AS first, max(k.ordinality) AS second, k.platform, k.account_id INTO v_bad
      FROM unnest(v_input) WITH ORDINALITY AS k
     GROUP BY k.platform, k.account_id
    HAVING count(*) > 1
     ORDER BY 1
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'p_rows elements % and % both name platform % account_id %',
                v_bad.first, v_bad.second, quote_literal(v_bad.platform), quote_literal(left(v_bad.account_id, 60))
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass each key once per call.';
    END IF;

    PERFORM cmis.assert_platform_connection_org_scope(p_org_id);
    IF v_count = 0 THEN
        RETURN;
    END IF;
    -- No row can name an org missing from cmis.orgs (the foreign key): every
    -- element would be a create, which needs the org.
    IF NOT EXISTS (SELECT FROM cmis.orgs AS o WHERE o.org_id = p_org_id) THEN
        RAISE EXCEPTION 'unknown organisation: p_org_id % is not in cmis.orgs', p_org_id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Create the organisation first, or pass the org_id of an existing one.';
    END IF;

    -- The organisation's lock, exclusive: every single-key write of ours holds
    -- it shared (cmis.lock_platform_connection_key), so this call waits for
    -- the ones under way and the next ones wait for it, and two bulk calls for
    -- one org take turns. One lock, however many rows: a lock per key would
    -- exhaust the server's shared lock table (max_locks_per_transaction).
    -- But a transaction that already holds it shared (it wrote a key of the
    -- org through a single-key function: a disconnect before a bulk
    -- reconnect) must not ask for it exclusively: it would wait for every
    -- other holder, while such a holder waits for the key this transaction
    -- holds (a deadlock). It takes the keys' locks instead, one by one in a
    -- fixed order (byte order of platform, then account_id), as single calls
    -- would: they exclude single calls of those keys, and plain bulk calls
    -- wait for the shared org lock this transaction keeps. Like any
    -- transaction that writes several keys, it can still deadlock with
    -- another one holding a key of this batch and waiting for a key this
    -- transaction locked before the call (README, "Several keys in one
    -- transaction").
    SELECT array_agg(l.mode) INTO v_org_lock_modes
      FROM pg_locks AS l
     WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
       AND l.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
       AND l.classid = hashtext('cmis.platform_connections/org')::oid
       AND l.objid = hashtext(p_org_id::text)::oid
       AND l.objsubid = 2;
    IF 'ShareLock' = ANY (v_org_lock_modes) AND NOT 'ExclusiveLock' = ANY (v_org_lock_modes) THEN
        -- One lock per key, in the lock table every database of the server
        -- shares: thousands would leave other sessions, in any database, with
        -- "out of shared memory" (53200). At most max_locks_per_transaction,
        -- the number the server sizes its table for per session; above it,
        -- refuse before taking any.
        IF v_count > current_setting('max_locks_per_transaction')::int THEN
            RAISE EXCEPTION 'p_rows has % elements, but this transaction already wrote a connection of organisation % through a single-key function, so the bulk call must lock each key: at most % here',
                    v_count, p_org_id, current_setting('max_locks_per_transaction')
                USING ERRCODE = 'program_limit_exceeded',
                      HINT = 'Commit the single-key writes first, or make the bulk call before them (it then takes one lock for the organisation), or pass at most max_locks_per_transaction elements. Nothing was written.';
        END IF;
        FOR v_key IN
            SELECT DISTINCT k.platform COLLATE "C" AS platform, k.account_id COLLATE "C" AS account_id
              FROM unnest(v_input) AS k
             ORDER BY 1, 2
        LOOP
            PERFORM pg_advisory_xact_lock(
                hashtext('cmis.platform_connections'),
                hashtext(p_org_id::text || E'\x1f' || v_key.platform || E'\x1f' || v_key.account_id));
        END LOOP;
    ELSE
        PERFORM pg_advisory_xact_lock(hashtext('cmis.platform_connections/org'), hashtext(p_org_id::text));
    END IF;
    v_now := clock_timestamp();
    v_state := array_fill(0, ARRAY[v_count]);
    SELECT jsonb_object_agg(k.platform || E'\x1f' || k.account_id, k.ordinality), array_agg(gen_random_uuid())
      INTO v_position, v_new_ids
      FROM unnest(v_input) WITH ORDINALITY AS k;
    v_row := array_fill(NULL::cmis.platform_connections, ARRAY[v_count]);

    -- A round counts against c_max_attempts only when it moved nothing
    -- forward: the app's writes to some keys must not use up the others'.
    LOOP
        v_progress := 0;
        -- Fast path: live rows are updated in place. Each element finds its
        -- row by the key (LATERAL ... LIMIT 1: an index lookup per element,
        -- a plan the planner cannot turn round), and the UPDATE takes the
        -- rows by ctid and nothing else (a TID lookup each). Joined on the key,
        -- a table not yet analyzed looked one row small to the planner, which
        -- then rescanned the whole input for every row of the organisation
        -- (seconds for 5,000 elements; tests/test_query_plans.py). A row
        -- changed by SQL of the app's since the lookup has a new ctid, so it
        -- is left for the next pass, as a row soft-deleted meanwhile must be.
        FOR v_done IN
            WITH i AS (
                SELECT k.*, live.ctid AS live_ctid
                  FROM unnest(v_input) WITH ORDINALITY AS k
                 CROSS JOIN LATERAL (
                        SELECT l.ctid FROM cmis.platform_connections AS l
                         WHERE l.org_id = p_org_id AND l.platform = k.platform
                           AND l.account_id = k.account_id AND l.deleted_at IS NULL
                         LIMIT 1) AS live
                 WHERE v_state[k.ordinality] = 0
            )
            UPDATE cmis.platform_connections AS c
               SET account_name = COALESCE(i.account_name, c.account_name),
                   status = COALESCE(i.status, c.status),
                   access_token = COALESCE(i.access_token, c.access_token),
                   refresh_token = COALESCE(i.refresh_token, c.refresh_token),
                   token_expires_at = COALESCE(i.token_expires_at, c.token_expires_at),
                   scopes = COALESCE(i.scopes, c.scopes),
                   account_metadata = COALESCE(i.account_metadata, c.account_metadata),
                   auto_sync = COALESCE(i.auto_sync, c.auto_sync),
                   sync_frequency_minutes = COALESCE(i.sync_frequency_minutes, c.sync_frequency_minutes),
                   updated_at = v_now
              FROM i
             WHERE c.ctid = i.live_ctid
            RETURNING i.ordinality AS n, c
        LOOP
            v_row[v_done.n] := v_done.c;
            v_state[v_done.n] := 1;
            v_progress := v_progress + 1;
        END LOOP;

        -- Undelete the newest deleted row of each key still to do, preferring
        -- one nobody else is changing (see upsert_platform_connection), and
        -- fill it in by the same statement. (The single call undeletes, then
        -- updates by INSERT ... ON CONFLICT: here that would write each row twice.)
        IF v_attempt < c_max_attempts THEN
            BEGIN
                WITH i AS (
                    SELECT k.*
                      FROM unnest(v_input) WITH ORDINALITY AS k
                     WHERE v_state[k.ordinality] = 0
                ), chosen AS (
                    -- The newest deleted row nobody else is changing, else the
                    -- newest (COALESCE looks that up only when needed).
                    SELECT i.*, COALESCE(
                               (SELECT d.connection_id FROM cmis.platform_connections AS d
                                 WHERE d.org_id = p_org_id AND d.platform = i.platform
                                   AND d.account_id = i.account_id AND d.deleted_at IS NOT NULL
                                 ORDER BY d.deleted_at DESC
                                 LIMIT 1
                                   FOR UPDATE SKIP LOCKED),
                               (SELECT d.connection_id FROM cmis.platform_connections AS d
                                 WHERE d.org_id = p_org_id AND d.platform = i.platform
                                   AND d.account_id = i.account_id AND d.deleted_at IS NOT NULL
                                 ORDER BY d.deleted_at DESC
                                 LIMIT 1)) AS chosen_id
                      FROM i
                ), restored AS (
                    UPDATE cmis.platform_connections AS c
                       SET deleted_at = NULL,
                           account_name = COALESCE(ch.account_name, c.account_name),
                           status = COALESCE(ch.status, c.status),
                           access_token = COALESCE(ch.access_token, c.access_token),
                           refresh_token = COALESCE(ch.refresh_token, c.refresh_token),
                           token_expires_at = COALESCE(ch.token_expires_at, c.token_expires_at),
                           scopes = COALESCE(ch.scopes, c.scopes),
                           account_metadata = COALESCE(ch.account_metadata, c.account_metadata),
                           auto_sync = COALESCE(ch.auto_sync, c.auto_sync),
                           sync_frequency_minutes = COALESCE(ch.sync_frequency_minutes, c.sync_frequency_minutes),
                           updated_at = v_now
                      FROM chosen AS ch
                     WHERE c.connection_id = ch.chosen_id AND c.deleted_at IS NOT NULL
                    RETURNING ch.ordinality AS n, c
                )
                -- Into arrays first: an exception below undoes the rows, not
                -- what a loop would have put in the variables.
                SELECT array_agg(r.n), array_agg(r.c) INTO v_restored_n, v_restored_row FROM restored AS r;
            EXCEPTION WHEN unique_violation THEN
                -- SQL that does not take our locks made a live row for one
                -- of the keys: go round, the fast path updates it.
                IF v_progress = 0 THEN
                    v_attempt := v_attempt + 1;
                END IF;
                CONTINUE;
            END;
            FOR v_i IN 1 .. coalesce(cardinality(v_restored_n), 0) LOOP
                v_row[v_restored_n[v_i]] := v_restored_row[v_i];
                v_state[v_restored_n[v_i]] := 2;
                v_progress := v_progress + 1;
            END LOOP;
        END IF;

        -- Create the rest (or fill in a row that SQL of the app's made live
        -- meanwhile). As in upsert_platform_connection, a key is created only
        -- when the INSERT's snapshot holds no row of it at all (else the app
        -- changed it since the steps above looked: go round), except in the
        -- last pass.
        FOR v_done IN
            WITH written AS (
                INSERT INTO cmis.platform_connections AS c (
                    connection_id, org_id, platform, account_id, account_name, status,
                    access_token, refresh_token, token_expires_at, scopes, account_metadata,
                    auto_sync, sync_frequency_minutes, created_at, updated_at)
                SELECT v_new_ids[i.ordinality], p_org_id, i.platform, i.account_id, i.account_name,
                       COALESCE(i.status, 'active'), i.access_token, i.refresh_token,
                       i.token_expires_at, i.scopes, i.account_metadata,
                       COALESCE(i.auto_sync, true), COALESCE(i.sync_frequency_minutes, 15), v_now, v_now
                  FROM unnest(v_input) WITH ORDINALITY AS i
                 WHERE v_state[i.ordinality] = 0
                   AND (v_attempt >= c_max_attempts
                        OR NOT EXISTS (SELECT FROM cmis.platform_connections AS e
                                        WHERE e.org_id = p_org_id AND e.platform = i.platform
                                          AND e.account_id = i.account_id))
                 ORDER BY i.ordinality
                ON CONFLICT (org_id, platform, account_id) WHERE deleted_at IS NULL
                DO UPDATE
                   SET (account_name, status, access_token, refresh_token, token_expires_at, scopes,
                        account_metadata, auto_sync, sync_frequency_minutes, updated_at) = (
                       SELECT COALESCE(i2.account_name, c.account_name), COALESCE(i2.status, c.status),
                              COALESCE(i2.access_token, c.access_token),
                              COALESCE(i2.refresh_token, c.refresh_token),
                              COALESCE(i2.token_expires_at, c.token_expires_at),
                              COALESCE(i2.scopes, c.scopes), COALESCE(i2.account_metadata, c.account_metadata),
                              COALESCE(i2.auto_sync, c.auto_sync),
                              COALESCE(i2.sync_frequency_minutes, c.sync_frequency_minutes), v_now
                         FROM (SELECT (v_input[(v_position ->> (EXCLUDED.platform || E'\x1f' || EXCLUDED.account_id))::int]).*)
                              AS i2)
                RETURNING c
            ), found AS (
                SELECT (v_position ->> ((w.c).platform || E'\x1f' || (w.c).account_id))::int AS n, w.c
                  FROM written AS w
            )
            SELECT f.n, f.c, (f.c).connection_id = v_new_ids[f.n] AS created FROM found AS f
        LOOP
            v_row[v_done.n] := v_done.c;
            v_state[v_done.n] := CASE WHEN v_done.created THEN 3 ELSE 1 END;
            v_progress := v_progress + 1;
        END LOOP;
        EXIT WHEN array_position(v_state, 0) IS NULL;
        IF v_progress = 0 THEN
            v_attempt := v_attempt + 1;
        END IF;
    END LOOP;

    -- unnest spreads each row over its columns, after the state.
    RETURN QUERY
        SELECT r.ordinality::int, (ARRAY['updated', 'restored', 'created'])[r.state], r.connection_id, r.org_id, r.platform, r.account_id,
               r.account_name, r.status, r.access_token, r.refresh_token, r.token_expires_at, r.scopes,
               r.account_metadata, r.last_sync_at, r.last_error_at, r.last_error_message, r.auto_sync,
               r.sync_frequency_minutes, r.created_at, r.updated_at, r.deleted_at
          FROM unnest(v_state, v_row) WITH ORDINALITY AS r (state)
         ORDER BY r.ordinality;
END
$function$;

COMMENT ON FUNCTION cmis.upsert_platform_connections(uuid, jsonb) IS
'Restore-or-create many connections of organisation p_org_id in one call, for sync jobs.
p_rows is a JSON array of objects with the arguments of upsert_platform_connection without p_:
platform and account_id required; account_name, status, access_token, refresh_token,
token_expires_at (an ISO 8601 string), scopes, account_metadata, auto_sync, sync_frequency_minutes
optional. Returns one row per element, in order: ord (its 1-based position), outcome
(updated / restored / created) and every column of the table, with the semantics of the single
call for each element: a live row is updated, else the most recently deleted row is restored, else
one is created; an absent field or null keeps the stored value, status defaults to ''active''.
Errors, nothing written: 22004 NULL arguments or a NULL platform/account_id; 22023 p_rows not an
array, an element not an object, an unknown field or a field of the wrong JSON type, a blank or
malformed value, a status outside the list, sync_frequency_minutes <= 0, scopes or account_metadata
nested deeper than 100 levels, the same key twice; 22003 sync_frequency_minutes beyond an integer;
22001 values too long; 22007 a token_expires_at that is not a timestamp - each naming the element
("p_rows element 3 ..."); 23503 an org not in cmis.orgs; 42501 as upsert_platform_connection.
Holds the organisation''s lock exclusively (the single-key functions hold it shared), so bulk and
single calls of one organisation, each in a transaction of its own, take turns and never deadlock
one another. In a transaction that already holds it shared (a single-key write came first) it takes
each key''s lock instead, in byte order of (platform, account_id), and refuses more than
max_locks_per_transaction elements (54000; one lock per key would fill the lock table every database
of the server shares); such a transaction can deadlock with another that holds one of its keys, as
any transaction writing several keys can. Tokens are stored as passed (ciphertext).
Example: SELECT ord, outcome, connection_id FROM cmis.upsert_platform_connections(''…'',
  ''[{"platform": "meta", "account_id": "act_1"}, {"platform": "google", "account_id": "g_2"}]'');';
