"""The demo worlds: seeded generative models of a social feed (the generators draw from them, the
evaluation's oracle ranks by them). Pure numpy, no I/O."""
