"""The Spark ML stages: they orchestrate (net planning, data caching, rounds), they don't
compute."""
