-- watch: a request waits up to `ms` for a job of this queue to finish, so
-- terminal transitions announce themselves on the group's wake channel until
-- then (`announce_finished` in lib.lua). Never shortens an earlier watch.
-- ARGV: qid, ms.
-- Returns 1.
local until_ms = clock() + tonumber(ARGV[2])
if until_ms > conf().watched_until then
  redis.call('HSET', K_META, 'watched_until', until_ms)
end
return 1
