"""Feed recommendations: the taste model, scoring SQL, atomic publication, offline evaluation, schedules."""

import dagster as dg

from nova_assets.defs.recommendations.assets import feed_recommendations, recommendations_schedule
from nova_assets.defs.recommendations.tastes import (
    taste_coverage,
    taste_loss,
    taste_model,
    taste_training_time,
    tastes_schedule,
)

defs = dg.Definitions(
    assets=[taste_model, feed_recommendations],
    asset_checks=[taste_training_time, taste_loss, taste_coverage],
    schedules=[tastes_schedule, recommendations_schedule],
)
