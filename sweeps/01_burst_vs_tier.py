"""At what burst does direct start refusing connections, per tier, and how far does the
transaction pooler carry the same burst?

A serverless burst (a new connection per invocation, each holding it for 2 s of the function's
own work) at 20, 30 and 45 invocations/s, so about 40, 60 and 90 invocations run at once, on
micro and small, through direct and the shared transaction pooler. Direct needs one Postgres
backend per running invocation, so it refuses (`too_many_clients`) once the burst needs more
than the tier's max_connections (60 on micro, 90 on small, 3 of them reserved); the
transaction pooler needs a backend only while a query runs and carries the same burst on
both. About 4 minutes here.

    lab sweep --preset burst-vs-tier
    lab sweep --preset burst-vs-tier --vary tier=micro,small,medium --vary spike_rate=20,30,45,60
"""

SCENARIO = "serverless-burst"
ENDPOINTS = ["direct", "transaction"]
VARY = {"tier": ["micro", "small"], "spike_rate": [20, 30, 45]}
USERS = 200
PARAMS = {"hold_ms": 2000, "spike_offset": 1, "spike_length": 8, "spike_every": 20}
DURATION = "10s"
COOLDOWN = "1s"
OBJECTIVE = "p99<5s,errors<0.1%"
BASELINE = "transaction"
