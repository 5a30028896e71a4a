"""Chunk cutting for continuous profiling outside Sentry's transport: local
chunk files. Imports core and formats only."""
