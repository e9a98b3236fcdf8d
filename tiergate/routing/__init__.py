"""Who answers: routers score a request and the policy turns scores into a route decision.

`base.Router` is the one interface (`decide(request) -> RouteDecision | None`, None meaning "not decisive");
`policy.Routing` composes, per workload, the routers named in the config, first decisive one winning, after
an explicit model name and before the default tier. Router kinds register in `registry`.
"""
