-- The {n} most active users of the last {days} days (all interactions), busiest first: whose
-- feeds the cache warms.
SELECT user_id
FROM user_author_daily
WHERE day >= today() - {days:UInt16}
GROUP BY user_id
ORDER BY sum(views + clicks + likes + comments + shares) DESC, user_id
LIMIT {n:UInt32}
