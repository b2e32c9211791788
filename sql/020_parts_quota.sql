-- Jobs sent in parts (018) under their tenant's plan (015).
--
-- A job sent in parts is counted against its tenant's jobs per minute, jobs
-- per day and daily budget once, when its header is recorded: the header
-- goes through shoal.record_job_admitted, which counts and answers exactly
-- as for a job sent as one message ('quota:<kind>:<count>:<limit>:<reset>',
-- read by common/tenants.c into the same reason). Its parts are not counted
-- again: the job has one shoal.jobs row. The per-job limits (max items,
-- max prompt tokens) are checked by the scheduler as each part comes
-- (scheduler/plan.h).

-- As shoal.record_job_header (018), counted against p_quota (the tenant's
-- plan as for shoal.record_job_admitted; NULL: no limits). Over a limit it
-- records nothing and returns the 'quota:...' answer. A job_id held by a
-- rejected job from another message is free, as for a job sent whole (015):
-- a parted job fixed and sent again replaces its rejection.
CREATE FUNCTION shoal.record_job_header_admitted(p_job jsonb, p_inputs text, p_parts integer,
                                                 p_quota jsonb)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_status text := shoal.record_job_admitted(p_job, '[]'::jsonb, p_inputs, p_quota);
BEGIN
    -- tasks_total 1 until the last part is in (018)
    UPDATE shoal.jobs SET parts_total = p_parts, tasks_total = 1
    WHERE v_status = 'new' AND job_id = p_job->>'job_id';
    RETURN v_status;
END $$;
