"""The core: the native Sampler, naming, the housekeeping thread and the one
sample source every consumer reads. Imports nothing else of sigprof."""
