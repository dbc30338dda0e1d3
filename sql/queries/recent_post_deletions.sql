-- The posts deleted since {since} (epoch milliseconds), with when each delete arrived: what the read
-- path leaves out of the feeds it holds (see nova_assets/serving/deletions.py). post_deletions is
-- ordered by arrival, so a poll reads only the rows it has not seen (and a short overlap).
SELECT toString(post_id) AS post_id, toUnixTimestamp64Milli(deleted_at) AS at
FROM post_deletions
WHERE deleted_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
