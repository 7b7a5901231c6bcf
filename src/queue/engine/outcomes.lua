-- outcomes: a pull consumer's outcomes for many leased jobs of one queue, in
-- order, in one run (batch ack/nack): `apply_outcomes` (lib.lua).
-- ARGV: qid, n, then n groups of 9 (as `apply_outcomes` reads them).
-- Returns one status per item.
return apply_outcomes(ARGV, 3, tonumber(ARGV[2]), clock())
