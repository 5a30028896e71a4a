"""Local mode: the sigprof command, recording, the runner and the summary.
Never imports the Sentry wing."""
