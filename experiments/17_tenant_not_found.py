"""'Tenant or user not found': the shared pooler's user name, and PgBouncer's cached refusal."""

import time

from lab import pg
from lab.config import LabConfig
from lab.experiments import (
    Context,
    Experiment,
    Lane,
    Observation,
    describe_error,
    server_message,
)

NOT_FOUND = "Tenant or user not found"
# PgBouncer's text (objects.c, check_fast_fail) once a login to the tenant lookup has failed.
CACHED = f"server login has been failing, cached error: {NOT_FOUND} (server_login_retry)"
CONNECTED = "connected"
NO_SUCH_USER = "no such user"  # PgBouncer's text when its auth_query finds no such role
WRONG_TENANT = "postgres.nosuchtenant"
LOGIN_RETRY_S = 1  # server_login_retry while the experiment runs (PgBouncer's default: 15)


def expected(cfg: LabConfig) -> dict[str, str]:
    pooler_user = f"postgres.{cfg.tenant}"
    return {"session-no-suffix": CACHED, "session-wrong-tenant": CACHED,
            "session-after-retry": CACHED, "session-right-tenant": CONNECTED,
            "transaction-wrong-tenant": CACHED,
            "direct-pooler-user": f'password authentication failed for user "{pooler_user}"',
            "dedicated-pooler-user": NO_SUCH_USER}


def attempt(ctx: Context, endpoint: str, user: str | None = None) -> Observation:
    started = time.monotonic()
    kwargs = {"user": user} if user else {}
    try:
        conn = ctx.connect(endpoint, **kwargs)
        conn.execute("select 1")
    except pg.Error as exc:
        return Observation(server_message(exc), f"as {user or ctx.eps[endpoint].user}, "
                           f"after {time.monotonic() - started:.2f} s: {describe_error(exc)}")
    finally:
        ctx.close_all()
    return Observation(CONNECTED, f"as {user or ctx.eps[endpoint].user}")


def run(ctx: Context) -> dict[str, Observation]:
    pooler_user = ctx.eps["session"].user
    # The first refusal a pooler process ever gives carries the lookup's own text; every later
    # one the cached text. Prime both shared poolers so the lanes see the steady state.
    primed = {ep: attempt(ctx, ep, WRONG_TENANT) for ep in ("session", "transaction")}
    first = "; ".join(f"{ep}: {o.outcome!r}" for ep, o in primed.items())
    result = {
        "session-no-suffix": attempt(ctx, "session", "postgres"),
        "session-wrong-tenant": attempt(ctx, "session", WRONG_TENANT),
        "session-right-tenant": attempt(ctx, "session"),
    }
    time.sleep(LOGIN_RETRY_S + 0.5)
    after = attempt(ctx, "session", WRONG_TENANT)
    result["session-after-retry"] = Observation(
        after.outcome, f"{LOGIN_RETRY_S + 0.5:.1f} s after the last refusal, with "
                       f"server_login_retry = {LOGIN_RETRY_S}: {after.detail}")
    result["transaction-wrong-tenant"] = attempt(ctx, "transaction", WRONG_TENANT)
    result["direct-pooler-user"] = attempt(ctx, "direct", pooler_user)
    result["dedicated-pooler-user"] = attempt(ctx, "dedicated", pooler_user)
    no_suffix = result["session-no-suffix"]
    result["session-no-suffix"] = Observation(
        no_suffix.outcome, f"{no_suffix.detail} (priming logins as {WRONG_TENANT} got {first})")
    return result


EXPERIMENT = Experiment(
    name="tenant-not-found",
    title="Tenant or user not found",
    question="A user name without the .tenant suffix, or with a wrong tenant, on the shared "
             "pooler: what does the client read, the first time and every time after, and "
             "how long does the pooler keep answering that way?",
    why="The shared pooler picks the tenant from the part of the user name after the last "
        "dot, so plain postgres (the direct string's user) or a wrong tenant is refused at "
        "login with Tenant or user not found. In the lab PgBouncer looks unknown users up in "
        "a tenant database whose every login fails; only the first refusal of a pooler "
        "process carries that text. From then on PgBouncer answers every unknown user at "
        "once with its cached error, and keeps doing so for as long as the lookup keeps "
        "failing (until a lookup login succeeds or the pooler restarts): server_login_retry "
        "(15 s by default, 1 s here) only spaces its fresh lookup attempts, it is not a "
        "window after which the original text returns. The right tenant is not affected "
        "(Supavisor instead blocks a client address after repeated failed logins for up "
        "to 2 minutes, ECIRCUITBREAKER). The pooler's user on the direct string "
        "(postgres.<tenant> is no Postgres role) is a plain password failure; the "
        "dedicated pooler, whose auth_query finds no such role, says no such user.",
    fix="Copy the string for the endpoint you use: postgres.<project-ref> on the shared "
        "pooler (ports 5432 and 6543 of the pooler host), plain postgres on the direct "
        "connection and the dedicated pooler. Treat the cached text as the same error, "
        "not as a pooler outage.",
    lanes=(
        Lane("session-no-suffix", "session", "Shared pooler, session mode: user postgres"),
        Lane("session-wrong-tenant", "session",
             "Shared pooler, session mode: a wrong tenant, right after"),
        Lane("session-right-tenant", "session",
             "Shared pooler, session mode: the right tenant, right after"),
        Lane("session-after-retry", "session",
             "Shared pooler, session mode: a wrong tenant after server_login_retry"),
        Lane("transaction-wrong-tenant", "transaction",
             "Shared pooler, transaction mode: a wrong tenant"),
        Lane("direct-pooler-user", "direct", "Direct connection: user postgres.<tenant>"),
        Lane("dedicated-pooler-user", "dedicated",
             "Dedicated pooler: user postgres.<tenant>"),
    ),
    expect=expected,
    run=run,
    settings={"session": {"server_login_retry": LOGIN_RETRY_S},
              "transaction": {"server_login_retry": LOGIN_RETRY_S}},
)
