-- view: one job as the engine returns it (see `view` in lib.lua).
-- ARGV: qid, id. Returns the job, or an empty array if there is none.
return get_view(ARGV[2])
