-- Offline-evaluation baseline "pure recency": the k newest posts seen before {split}, same for everyone.
SELECT toUInt16(row_number() OVER (ORDER BY first_seen DESC, post_id)) AS rank, post_id, author_id
FROM
(
    SELECT post_id, any(author_id) AS author_id, min(window_start) AS first_seen
    FROM post_metrics_1h
    WHERE window_start < {split:DateTime('UTC')}
      AND window_start >= {split:DateTime('UTC')} - toIntervalHour({w:UInt32})
    GROUP BY post_id
    ORDER BY first_seen DESC, post_id
    LIMIT {k:UInt32}
)
