"""Safe cutover: shadow testing, a staged rollout with automatic rollback, and retraining.

    workloads.<name>.policy: [{kind: rollout, primary: frontier, candidate: small, canary: [10, 50], gates: {...}}]
    manager = tiergate.rollout.manager.attach(app)     # the gateway observer that judges and moves rollouts

Modules: `router` (the `rollout` router kind), `state` (the store tables, compare-and-set transitions, audit
log, and the migration), `gates` (Wilson-bound gates over a sliding window), `compare` (per-task agreement of
a shadow pair), `scoring` (records -> observations, window rebuild after a restart), `manager` (the observer),
`admin` (admin API routes), `inspect` (status from the store, for the CLI), `retrain`, `serve` (a gateway
process with all of it attached), `demo`. Importing this package imports none of them.
"""
