"""Collaborative-filtering baselines for the offline evaluation: what an off-the-shelf recommender
(implicit's ALS and cosine item-kNN over user x post interactions before the split) would rank.

They are baselines, not candidates for the product: posts live two days, so a post-level model
cannot rank a post nobody has engaged with yet, which is most of what users engage with next.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from clickhouse_connect.driver.client import Client
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from nova_assets.core.recommendations.scoring import Lists

INTERACTIONS = """
SELECT user_id, post_id, any(author_id) AS author_id,
       sum(multiIf(action = 'view', 0.25, action = 'click', 1, action = 'like', 3, action = 'comment', 5, 8)) AS weight
FROM events
WHERE event_time >= {split:DateTime64(3, 'UTC')} - toIntervalHour({hours:UInt32})
  AND event_time < {split:DateTime64(3, 'UTC')}
GROUP BY user_id, post_id
"""
CF_BASELINES = ("cf_als", "cf_item_knn")


def cf_lists(client: Client, users: list[str], split: float, k: int, hours: int = 72) -> dict[str, Lists]:
    """Top-k lists of `users` from ALS (64 factors, BM25-weighted) and cosine item-kNN."""
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import CosineRecommender, bm25_weight

    frame = client.query_df(INTERACTIONS, parameters={"split": split, "hours": hours})
    if frame.empty:
        return {name: [] for name in CF_BASELINES}
    user_index = pd.Index(frame["user_id"].astype(str).unique())
    post_index = pd.Index(frame["post_id"].unique())
    authors = frame.groupby("post_id")["author_id"].first().reindex(post_index).astype(str).to_numpy()
    matrix = csr_matrix(
        (frame["weight"].to_numpy(np.float32), (user_index.get_indexer(frame["user_id"].astype(str)),
                                                post_index.get_indexer(frame["post_id"]))),
        shape=(len(user_index), len(post_index)),
    )  # fmt: skip
    judged = [u for u in users if u in user_index]
    rows = user_index.get_indexer(judged)
    posts = np.asarray(post_index.astype(str))
    out: dict[str, Lists] = {}
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(factors=64, regularization=0.05, iterations=15, random_state=42, num_threads=2)
        knn = CosineRecommender(K=100, num_threads=2)
        als.fit(bm25_weight(matrix).tocsr(), show_progress=False)
        knn.fit(matrix, show_progress=False)
    for name, model in (("cf_als", als), ("cf_item_knn", knn)):
        ids, _ = model.recommend(rows, matrix[rows], N=k, filter_already_liked_items=False)
        out[name] = [
            (user, rank, posts[j], authors[j])
            for user, top in zip(judged, ids, strict=True)
            for rank, j in enumerate(top.tolist(), 1)
            if j >= 0
        ]
    return out
