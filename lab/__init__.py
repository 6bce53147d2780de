"""pooler-lab: a local, Supabase-like laboratory for Postgres connection pooling.

The package follows the data flow, one module per stage:

    config -> render -> stack -> run (locust child + sampler) -> samples -> analysis
    -> plots -> report

``lab.cli`` is a thin click layer over these; no other module imports click or exits.
"""

__version__ = "0.1.0"
