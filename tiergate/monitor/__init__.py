"""Drift and hallucination monitoring of live traffic.

    monitor = tiergate.monitor.monitor.attach_monitor(app, MonitorConfig(...))    # a gateway observer

Modules: `config` (the `monitor:` config section), `hallucination` (pure answer checks), `drift` (MMD, label
and confidence tests), `detector` (sliding windows of one workload), `reference` (the training data
reference), `alerts` (log, webhook, Prometheus), `monitor` (the observer and its worker), `status` (stored
results, for `tiergate monitor status`). Importing this package imports none of them.
"""
