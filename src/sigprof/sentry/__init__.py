"""The Sentry wing: sigprof.init, the integration, sessions, schedulers,
transaction profiles (2.x), profiling spans. The only part of sigprof that
imports sentry_sdk. Never imported by local/."""
