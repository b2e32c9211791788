-- The two ends of a job that nothing runs beside: its merge, after the last
-- task, and (below) its admission, before the first.

-- == Merge in one ordered pass ==============================================
-- As in 009, a finished job's output is cut into pieces of at most
-- merge_piece_chars() characters and stored as pages, a page starting at the
-- piece that starts at or after its page boundary (page = characters before
-- the piece / merge_piece_chars()). 009 numbered the pieces with a window
-- over all of them and then sorted them twice more to group them into pages:
-- for a 20,000-task job 60 of its 110 ms, while the owner waits. Reading the
-- entries once in order and closing a page when the next piece starts on the
-- next one writes the same pages (compared page by page in merge_test) at
-- the same memory bound: one page (under two pieces) is held at a time.
CREATE OR REPLACE FUNCTION shoal.merge_job(p_job_id text) RETURNS text
LANGUAGE plpgsql
SET jit = off -- as 023: the planner would compile the merge of a large job
AS $$
DECLARE
    j        shoal.jobs%ROWTYPE;
    v_status text;
    v_piece  integer := shoal.merge_piece_chars();
    v_pages  integer := 0;
    v_chars  bigint := 0;
    v_page   integer := 0;
    v_buf    text[] := '{}';
    v_len    integer;
    v_part   text;
    e        record;
BEGIN
    SELECT * INTO j FROM shoal.jobs WHERE job_id = p_job_id FOR UPDATE;
    IF NOT FOUND OR j.status <> 'running' OR j.tasks_done + j.tasks_failed < j.tasks_total THEN
        RETURN NULL;
    END IF;

    DELETE FROM shoal.job_output WHERE job_id = p_job_id;
    FOR e IN
        SELECT m.ord, m.txt
        FROM shoal.merge_entries(p_job_id, j.merge, j.output_format = 'json',
                                 EXISTS (SELECT 1 FROM shoal.item_results ir
                                         WHERE ir.job_id = p_job_id)) m
        WHERE m.txt IS NOT NULL
        ORDER BY m.ord
    LOOP
        v_len := length(e.txt);
        FOR k IN 0 .. greatest(v_len - 1, 0) / v_piece LOOP
            v_part := CASE WHEN v_len <= v_piece THEN e.txt
                           ELSE substr(e.txt, k * v_piece + 1, v_piece) END;
            IF v_chars / v_piece <> v_page THEN
                INSERT INTO shoal.job_output (job_id, page, body)
                VALUES (p_job_id, v_page, array_to_string(v_buf, ''));
                v_pages := v_pages + 1;
                v_page := v_chars / v_piece;
                v_buf := '{}';
            END IF;
            v_buf := v_buf || v_part;
            v_chars := v_chars + length(v_part);
        END LOOP;
    END LOOP;
    IF cardinality(v_buf) > 0 THEN
        INSERT INTO shoal.job_output (job_id, page, body)
        VALUES (p_job_id, v_page, array_to_string(v_buf, ''));
        v_pages := v_pages + 1;
    END IF;

    v_status := CASE WHEN j.tasks_failed = 0 THEN 'completed'
                     WHEN j.tasks_done = 0 THEN 'failed'
                     ELSE 'partial' END;
    UPDATE shoal.jobs
    SET status = v_status, finished_at = now(), output_pages = v_pages, output_chars = v_chars,
        output = CASE WHEN v_pages = 0 THEN ''
                      WHEN v_pages = 1 THEN (SELECT body FROM shoal.job_output
                                             WHERE job_id = p_job_id AND page = 0) END,
        error = CASE WHEN j.tasks_failed > 0
                     THEN j.tasks_failed || ' of ' || j.tasks_total || ' tasks failed' END
    WHERE job_id = p_job_id;

    -- cost_usd: the job's spend counter, as in 009
    INSERT INTO shoal.event_outbox (job_id, payload)
    VALUES (p_job_id, jsonb_build_object('type', v_status, 'job_id', p_job_id,
                                         'tasks', j.tasks_total, 'tasks_done', j.tasks_done,
                                         'tasks_failed', j.tasks_failed,
                                         'cost_usd', j.spent_usd, 'ts', now()));
    RETURN v_status;
END $$;

-- == Room in a dispatch window is announced =================================
-- The dispatcher keeps a window of each tenant's tasks published and
-- unfinished and tops it up every --dispatch-every-ms (100): a task that
-- ended right after a pass left its room unused until the next one, and at
-- a fast model's pace those waits, not the model, set the rate (a 20,000-task
-- job: 10,800 tasks/s with passes every 100 ms, 11,800 every 20). Now a
-- statement that takes tasks out of the queue says so on channel shoal_room
-- at commit (one notification per transaction, whatever it ended), and the
-- scheduler runs a pass when it hears one; the timer stays for what nobody
-- announces.
CREATE OR REPLACE FUNCTION shoal.tasks_track(p_delta bigint, p_job_id text, p_first_pending integer)
RETURNS void
LANGUAGE sql AS $$
    UPDATE shoal.jobs
    SET tasks_queued = tasks_queued + p_delta,
        dispatch_from = least(dispatch_from, coalesce(p_first_pending, dispatch_from))
    WHERE job_id = p_job_id;
    SELECT pg_notify('shoal_room', '') WHERE p_delta < 0;
$$;
