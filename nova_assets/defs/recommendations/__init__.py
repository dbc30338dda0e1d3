"""Feed recommendations: scoring SQL, atomic publication, offline evaluation, the schedule."""

import dagster as dg

from nova_assets.defs.recommendations.assets import feed_recommendations, recommendations_schedule

defs = dg.Definitions(assets=[feed_recommendations], schedules=[recommendations_schedule])
