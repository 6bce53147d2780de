"""File-descriptor budgets: how many a lab's containers may open, and this process.

Every client connection is one file descriptor at each end. A 16xl lab lets each pooler hold
12,000 clients, and `lab experiment run max-client-conn --real-limits` opens them all from one
process, so the lab sets both ends itself instead of asking for ``ulimit -n``:

* the containers: ``container_nofile(cfg)`` becomes ``LAB_NOFILE`` in ``compose.env`` and the
  db, dedicated and pooler services' ``ulimits: nofile`` (compose/compose.yaml). Docker hands
  containers its daemon's limit otherwise, which depends on how the daemon was started (20,000
  here, 1,024 soft on some hosts): PgBouncer then fails to accept clients ("Too many open
  files") before max_client_conn. PgBouncer logs the budget it expects at start ("kernel file
  descriptor limit: ..., max expected fd use: ...");
* this process: ``raise_nofile(needed)`` raises the soft RLIMIT_NOFILE up to the hard one
  (an unprivileged process may), and says in one line what to do when the hard limit itself is
  too low. Every `lab` command starts with ``raise_nofile_for_children()`` (best effort):
  the Locust processes a run starts inherit it, where Locust alone would stop at 10,000
  (its own minimum), below a 16xl's 12,000 pooler clients.
"""

from __future__ import annotations

import resource

from lab.config import LabConfig
from lab.errors import ConfigError

# The floor for every container: plenty for the small tiers, and below any Docker daemon's own
# limit (a container may not be given more than the daemon holds unless the daemon may raise
# limits: runc's "error setting rlimits" otherwise, turned into a one-line error by lab.stack).
MIN_CONTAINER_NOFILE = 4096
# Linux's default fs.nr_open: no process may be given more.
MAX_NOFILE = 1048576
# Where the hard limit is unlimited: what a lab process and its Locust children may open (more
# than the largest tier's 12,000 pooler clients at once, with room).
LOAD_NOFILE = 65536
# Descriptors a lab process needs besides its client connections: Python, libraries, logs,
# the admin consoles, a sampler.
PROCESS_RESERVE = 256


def container_nofile(cfg: LabConfig) -> int:
    """RLIMIT_NOFILE (soft = hard) for the db and pooler containers.

    The largest user is a PgBouncer: one descriptor per client (max_client_conn) and one per
    server connection (at most max_connections), as PgBouncer counts at start ("max expected
    fd use"); each PgBouncer is its own process with its own limit. 13,524 on 16xl. (With
    pool_sharing = "shared" the inner PgBouncer is configured for 4 x max_client_conn, but its
    clients are the outer PgBouncers' server connections: at most max_connections.) The
    distance relays (compose.distance.yaml) keep the daemon's limit: two descriptors per
    client through them."""
    needed = cfg.max_client_conn + cfg.max_connections + 4 * PROCESS_RESERVE
    return min(MAX_NOFILE, max(MIN_CONTAINER_NOFILE, needed))


def process_fds_needed(cfg: LabConfig, real_limits: bool) -> int:
    """Descriptors an experiment run may hold at once: every direct slot (max-connections), or
    with real limits a whole pooler's max_client_conn (max-client-conn), plus the reserve."""
    clients = max(cfg.max_connections, cfg.max_client_conn if real_limits else 0)
    return clients + PROCESS_RESERVE


def nofile() -> tuple[int, int]:
    """This process's (soft, hard) RLIMIT_NOFILE; RLIM_INFINITY reads as MAX_NOFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    return (MAX_NOFILE if soft == inf else soft), (MAX_NOFILE if hard == inf else hard)


def raise_nofile(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to at least ``needed`` (up to the hard limit,
    never lowering it); returns the soft limit now in force. A hard limit below ``needed`` is
    a ConfigError naming the fix."""
    soft, hard = nofile()
    if soft >= needed:
        return soft
    if hard < needed:
        raise ConfigError(
            f"this process may open at most {hard} files (hard RLIMIT_NOFILE), "
            f"and this needs {needed}",
            fix=f"raise the hard limit for the shell that runs lab (as root: ulimit -Hn "
                f"{needed}; for a service: LimitNOFILE={needed}), or use a smaller tier",
        )
    raw_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # Soft up to hard (as Locust does for itself); an unlimited hard limit: only what is needed
    # (a soft limit above fs.nr_open is refused).
    target = needed if raw_hard == resource.RLIM_INFINITY else hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, raw_hard))
    return nofile()[0]


def raise_nofile_for_children() -> int:
    """Best effort, at the start of every `lab` command: the soft limit up to the hard one (at
    most LOAD_NOFILE where the hard limit is unlimited), for this process and the Locust
    processes it starts, which inherit it. Never an error: a command that needs a number
    asks ``raise_nofile`` for it and gets the one-line error there."""
    soft, hard = nofile()
    try:
        return raise_nofile(min(hard, LOAD_NOFILE))
    except (ConfigError, OSError, ValueError):
        return soft
