"""What pool size does this workload need through a transaction pooler?

A serverless burst of 40 invocations/s whose every invocation holds a backend for 50 ms of
server-side work (`sleep_ms`), through the shared transaction pooler and the dedicated one, at
pool sizes 1, 3 and 15. Below what the burst needs (about rate x time in the database: 2 here),
clients queue for a server connection (peak waiting clients) and p99 grows by the queue; from
there on, a larger pool buys nothing but backends. The capacity answer names the smallest pool
size that meets the objective. About 2 minutes here.

    lab sweep --preset pool-size
    lab sweep --preset pool-size --vary pool_size=1,2,4,8 --objective "p99<300ms,errors<0.1%"
"""

SCENARIO = "serverless-burst"
ENDPOINTS = ["transaction", "dedicated"]
VARY = {"pool_size": [1, 3, 15]}
USERS = 60
PARAMS = {"spike_rate": 40, "spike_offset": 1, "spike_length": 8, "spike_every": 20,
          "sleep_ms": 50, "hold_ms": 0}
DURATION = "10s"
COOLDOWN = "1s"
OBJECTIVE = "p99<500ms,errors<0.1%"
BASELINE = "transaction"
