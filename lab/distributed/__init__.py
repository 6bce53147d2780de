"""Distributed load: Locust's own master and workers, on several machines.

`lab run ... --master-bind ADDR[:PORT] --expect-workers N` runs each segment's Locust as a
master (it runs no users); `lab worker --master HOST[:PORT]` on any machine with the lab
installed joins it. One module per part:

* ``wrapper``: the locustfile the master hands its workers (Locust's ``-f -``): the scenario's
  source and the segment's LAB_* settings, so a worker needs no file of the run;
* ``locust_side``: inside Locust (gevent): a worker sends every file it writes (sample chunks,
  its schedule, its live counters) to the master over Locust's own messages; the master
  writes them into the run directory, each once, and records who joined, who finished and
  who went missing (``workers/<segment>.json``);
* ``worker``: `lab worker`: one Locust worker process per segment, until the run is over;
* ``tunnel``: TLS and a token in front of the master's port when it is bound beyond loopback
  (ZeroMQ, Locust's transport, has neither).

Nothing here imports gevent except ``locust_side``, which only Locust processes load.
"""

from __future__ import annotations

DEFAULT_PORT = 5557  # Locust's own default --master-bind-port
