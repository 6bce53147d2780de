"""Stage 2 of the pipeline: settings -> the files the containers read. Pure: no I/O.

``render(cfg, secrets, image)`` returns ``{relative path: text}``; ``lab.stack`` writes them
into the lab's state directory (mode 0600) and points ``compose/compose.yaml`` at them through
``compose.env``. Only the PgBouncer files hold plain-text passwords (PgBouncer needs them to log
in to Postgres); Postgres itself only ever receives SCRAM verifiers.

Files:
    compose.env                     variables interpolated into compose/compose.yaml
    db/postgresql.conf, db/pg_hba.conf, db/init.sql
    dedicated/pgbouncer-dedicated.ini, dedicated/userlist.txt
    pooler/pgbouncer-session.ini, pooler/pgbouncer-transaction.ini, pooler/userlist.txt
    pooler/pgbouncer-shared.ini     only with pool_sharing = "shared"
    */server.crt, */server.key, */ca.crt   the lab's TLS (lab.tls): Postgres and every PgBouncer
                                    serve TLS to clients; the poolers verify Postgres (verify-full)
    net-db/relay.json, net-pooler/relay.json   the client's distance to each host (lab-relay),
                                    only when clients reach the hosts through relays
    pooler/relay.json               the pooler host's distance to the db host, when set
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from lab.config import LabConfig
from lab.rlimit import container_nofile
from lab.state import Secrets
from lab.tls import TlsMaterial

ADMIN_USER = "lab_admin"  # PgBouncer admin/stats console user (exists only in auth files)
AUTH_USER = "pgbouncer"  # the dedicated pooler's auth_user, as Supabase sets it up
DB_CONTAINER_PORT = 5432
DEDICATED_CONTAINER_PORT = 6543
SESSION_CONTAINER_PORT = 5432
TRANSACTION_CONTAINER_PORT = 6543
# With pool_sharing = "shared", both modes go through one inner session-mode PgBouncer whose
# pool is the shared pool_size: combined backends <= pool_size, as Supabase's docs describe.
SHARED_INNER_PORT = 6432
# application_name of the poolers' own server connections, until a client that set its own
# is linked to one (PgBouncer then sets the client's): pg_stat_activity tells them apart.
SHARED_APP = "Supavisor"  # what Supavisor's backends show
DEDICATED_APP = "PgBouncer"
TENANT_DB = "lab_tenants"  # where the shared pooler's auth_query "finds" unknown tenants
SCRAM_ITERATIONS = 4096
# With a pooler -> db round trip, the shared pooler's PgBouncers reach Postgres through a relay
# on their own host (lab-relay), listening here; Postgres still sees the pooler host's address.
POOLER_RELAY_PORT = 15432
# Inside the pooler and dedicated containers, where the lab's TLS files are installed.
TLS_CERT = "/etc/lab/server.crt"
TLS_KEY = "/etc/lab/server.key"
TLS_CA = "/etc/lab/ca.crt"


def scram_keys(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS
               ) -> tuple[bytes, bytes]:
    """SCRAM-SHA-256's ClientKey and ServerKey: the costly part of every login (PBKDF2)."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return (hmac.new(salted, b"Client Key", "sha256").digest(),
            hmac.new(salted, b"Server Key", "sha256").digest())


def scram_verifier(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> str:
    """A SCRAM-SHA-256 secret in the form Postgres stores in pg_authid.rolpassword."""
    client_key, server_key = scram_keys(password, salt, iterations)
    stored_key = hashlib.sha256(client_key).digest()
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
            f"${b64(stored_key).decode()}:{b64(server_key).decode()}")


def _salt(secrets: Secrets, user: str) -> bytes:
    # One stored random salt per lab, specialised per user so no two verifiers share a salt.
    return hashlib.sha256(bytes.fromhex(secrets.salt) + user.encode()).digest()[:16]


def _verifier(secrets: Secrets, user: str, password: str) -> str:
    return scram_verifier(password, _salt(secrets, user))


def client_scram_keys(secrets: Secrets) -> dict[str, str]:
    """libpq's ``scram_client_key`` / ``scram_server_key`` (libpq 18+, made for postgres_fdw's
    SCRAM pass-through) for the postgres password: every endpoint's verifier for it (Postgres's
    pg_authid, the shared pooler's userlist for postgres.<tenant>, the dedicated pooler's
    auth_query) uses this salt. A client given them skips PBKDF2's 4096 rounds, about 3 ms of
    CPU a login, and still logs in with SCRAM over the wire: 12,000 logins cost half a minute
    less of the one process that opens them."""
    keys = scram_keys(secrets.postgres_password, _salt(secrets, "postgres"))
    return {"scram_client_key": base64.b64encode(keys[0]).decode(),
            "scram_server_key": base64.b64encode(keys[1]).decode()}


def shared_pooler_user(cfg: LabConfig) -> str:
    """The Supavisor-style user name: postgres.<tenant>."""
    return f"postgres.{cfg.tenant}"


def endpoint_user(cfg: LabConfig, endpoint: str) -> str:
    return shared_pooler_user(cfg) if endpoint in ("session", "transaction") else "postgres"


def render(cfg: LabConfig, secrets: Secrets, image: str, config_dir: str,
           tls: TlsMaterial | None = None) -> dict[str, str]:
    """Every file the lab's containers read; without ``tls`` every endpoint is plaintext."""
    tls_on = tls is not None
    files = {
        "db/postgresql.conf": _postgresql_conf(cfg, tls_on),
        "db/pg_hba.conf": _pg_hba(cfg.ssl_enforce and tls_on),
        "db/init.sql": _init_sql(cfg, secrets),
        "dedicated/pgbouncer-dedicated.ini": _dedicated_ini(cfg, tls_on),
        "dedicated/userlist.txt": _userlist({
            AUTH_USER: secrets.pgbouncer_password,  # plain text: used to log in to Postgres
            ADMIN_USER: _verifier(secrets, ADMIN_USER, secrets.admin_password),
        }),
        "pooler/pgbouncer-session.ini": _shared_ini(cfg, secrets, "session", tls_on),
        "pooler/pgbouncer-transaction.ini": _shared_ini(cfg, secrets, "transaction", tls_on),
        "pooler/userlist.txt": _userlist({
            # The very verifier Postgres holds for role postgres: after a client's SCRAM login
            # PgBouncer reuses the client's proof ("SCRAM pass-through") to log in upstream.
            shared_pooler_user(cfg): _verifier(secrets, "postgres", secrets.postgres_password),
            ADMIN_USER: _verifier(secrets, ADMIN_USER, secrets.admin_password),
            # Only for the tenant lookup's upstream login; refused as a client by the hba file.
            AUTH_USER: secrets.pgbouncer_password,
        }),
        "pooler/pgbouncer_hba.conf": _shared_hba(),
    }
    if cfg.pool_sharing == "shared":
        files["pooler/pgbouncer-shared.ini"] = _shared_inner_ini(cfg, secrets, tls_on)
        # Only the outer PgBouncers log in here (as postgres); clients never see this port.
        files["pooler/userlist-shared.txt"] = _userlist({
            "postgres": _verifier(secrets, "postgres", secrets.postgres_password),
            ADMIN_USER: _verifier(secrets, ADMIN_USER, secrets.admin_password),
        })
    if tls is not None:
        # The dedicated pooler lives on the db host: it serves the db host's certificate.
        for directory, host in (("db", "db"), ("dedicated", "db"), ("pooler", "pooler")):
            cert, key = tls.certs[host]
            files[f"{directory}/server.crt"] = cert
            files[f"{directory}/server.key"] = key
            files[f"{directory}/ca.crt"] = tls.ca_cert
    files.update(relay_files(cfg))
    files["compose.env"] = _compose_env(cfg, image, config_dir, config_hash(files))
    return files


def relay_files(cfg: LabConfig) -> dict[str, str]:
    """lab-relay's routes: the client's hop to each host, the pooler host's hop to Postgres."""
    files = {}
    if cfg.client_relays:
        for host, rtt in (("db", cfg.client_db_rtt_ms), ("pooler", cfg.client_pooler_rtt_ms)):
            ports = ((DB_CONTAINER_PORT, "direct"), (DEDICATED_CONTAINER_PORT, "dedicated")) \
                if host == "db" else ((SESSION_CONTAINER_PORT, "session"),
                                      (TRANSACTION_CONTAINER_PORT, "transaction"))
            files[f"net-{host}/relay.json"] = _relay_json([
                {"name": name, "listen": f"0.0.0.0:{port}", "target": f"{host}:{port}",
                 "rtt_ms": rtt} for port, name in ports])
    if cfg.pooler_relay:
        files["pooler/relay.json"] = _relay_json([
            {"name": "pooler-db", "listen": f"127.0.0.1:{POOLER_RELAY_PORT}",
             "target": f"db:{DB_CONTAINER_PORT}", "rtt_ms": cfg.pooler_db_rtt_ms}])
    return files


def _relay_json(routes: list[dict[str, object]]) -> str:
    return json.dumps({"routes": routes}, indent=2) + "\n"


def _pooler_db_target(cfg: LabConfig) -> str:
    """How the shared pooler's PgBouncers reach Postgres: directly, or through the relay."""
    if cfg.pooler_relay:
        return f"host=127.0.0.1 port={POOLER_RELAY_PORT}"
    return f"host=db port={DB_CONTAINER_PORT}"


def config_hash(files: dict[str, str]) -> str:
    """Changes whenever a rendered file changes, so compose recreates the containers."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        if rel != "compose.env":
            digest.update(rel.encode() + b"\0" + files[rel].encode() + b"\0")
    return digest.hexdigest()[:16]


def _compose_env(cfg: LabConfig, image: str, config_dir: str, chash: str) -> str:
    values = {
        "LAB_IMAGE": image,
        "LAB_NAME": cfg.name,
        "LAB_CONFIG_DIR": config_dir,
        "LAB_CONFIG_HASH": chash,
        "LAB_DB_ADDRESS": cfg.db_address,
        "LAB_POOLER_ADDRESS": cfg.pooler_address,
        "LAB_DIRECT_PORT": cfg.ports["direct"],
        "LAB_DEDICATED_PORT": cfg.ports["dedicated"],
        "LAB_SESSION_PORT": cfg.ports["session"],
        "LAB_TRANSACTION_PORT": cfg.ports["transaction"],
        # Every service's RLIMIT_NOFILE (ulimits: nofile): PgBouncer holds one per client.
        "LAB_NOFILE": container_nofile(cfg),
    }
    return "".join(f"{k}={v}\n" for k, v in values.items())


def _postgresql_conf(cfg: LabConfig, tls: bool = False) -> str:
    settings = {
        "listen_addresses": "'*'",
        "port": DB_CONTAINER_PORT,
        "max_connections": cfg.max_connections,
        "superuser_reserved_connections": 3,
        "shared_preload_libraries": "'pg_stat_statements'",
        "password_encryption": "'scram-sha-256'",
        "hba_file": "'/etc/lab/pg_hba.conf'",
        "unix_socket_directories": "'/var/run/postgresql'",
        "shared_buffers": "'128MB'",
        "dynamic_shared_memory_type": "posix",
        "lc_messages": "'C'",  # error texts exactly as documented, whatever the host locale
        "timezone": "'UTC'",
        "log_destination": "'stderr'",
        "logging_collector": "off",
        "log_line_prefix": "'%m [%p] %q%u@%d/%a '",
        "track_activity_query_size": 2048,
        "pg_stat_statements.track": "all",
    }
    if tls:
        settings.update({"ssl": "on", "ssl_cert_file": f"'{TLS_CERT}'",
                         "ssl_key_file": f"'{TLS_KEY}'", "ssl_ca_file": f"'{TLS_CA}'"})
    return "# Rendered by pooler-lab; edit lab.toml or flags, not this file.\n" + "".join(
        f"{k} = {v}\n" for k, v in settings.items()
    )


def _pg_hba(ssl_enforce: bool = False) -> str:
    # Enforcing SSL as Supabase does: only hostssl lines, so a plaintext client finds no entry
    # ("no pg_hba.conf entry for host ..., no encryption").
    kind = "hostssl" if ssl_enforce else "host   "
    return (
        "# Rendered by pooler-lab. Trust only on the container-local socket;\n"
        "# every network connection authenticates with SCRAM-SHA-256"
        + (" over TLS (ssl_enforce).\n" if ssl_enforce else ".\n")
        + "local all all trust\n"
        f"{kind} all all 0.0.0.0/0 scram-sha-256\n"
        f"{kind} all all ::/0      scram-sha-256\n"
    )


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _init_sql(cfg: LabConfig, secrets: Secrets) -> str:
    postgres_secret = _verifier(secrets, "postgres", secrets.postgres_password)
    pgbouncer_secret = _verifier(secrets, AUTH_USER, secrets.pgbouncer_password)
    return f"""\
-- Rendered by pooler-lab; runs over the local socket at every start (idempotent).
\\set ON_ERROR_STOP on
SET client_min_messages = warning;
ALTER ROLE postgres PASSWORD {_sql_literal(postgres_secret)};
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{AUTH_USER}') THEN
    CREATE ROLE {AUTH_USER} LOGIN;
  END IF;
END $$;
ALTER ROLE {AUTH_USER} PASSWORD {_sql_literal(pgbouncer_secret)};
-- As Supabase sets it up: PgBouncer's auth_user may only call pgbouncer.get_auth(), a
-- SECURITY DEFINER function that reads login roles' SCRAM secrets from pg_authid.
CREATE SCHEMA IF NOT EXISTS pgbouncer;
GRANT USAGE ON SCHEMA pgbouncer TO {AUTH_USER};
CREATE OR REPLACE FUNCTION pgbouncer.get_auth(p_usename text)
RETURNS TABLE(username text, password text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $fn$
  SELECT rolname::text, rolpassword::text
  FROM pg_catalog.pg_authid
  WHERE rolname = p_usename
    AND rolcanlogin
    AND (rolvaliduntil IS NULL OR rolvaliduntil >= pg_catalog.now());
$fn$;
REVOKE ALL ON FUNCTION pgbouncer.get_auth(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgbouncer.get_auth(text) TO {AUTH_USER};
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
-- Supavisor answers an unknown tenant with "Tenant or user not found". The shared pooler looks
-- unknown users up (auth_query) in this database, whose login event trigger refuses every
-- login with that text; PgBouncer passes it on to the client. Other databases carry no
-- login trigger, so ordinary connections pay nothing for it.
SELECT 'CREATE DATABASE {TENANT_DB}'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{TENANT_DB}')\\gexec
\\connect "dbname={TENANT_DB} options='-c event_triggers=off'"
SET client_min_messages = warning;
CREATE OR REPLACE FUNCTION public.tenant_or_user_not_found() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  RAISE EXCEPTION 'Tenant or user not found' USING ERRCODE = 'invalid_authorization_specification';
END
$fn$;
DROP EVENT TRIGGER IF EXISTS tenant_or_user_not_found;
CREATE EVENT TRIGGER tenant_or_user_not_found ON login
  EXECUTE FUNCTION public.tenant_or_user_not_found();
"""


def _userlist(entries: dict[str, str]) -> str:
    return "".join(f'"{user}" "{secret}"\n' for user, secret in entries.items())


def _pgbouncer_common(cfg: LabConfig, *, port: int, mode: str, pool_size: int,
                      max_client_conn: int, listen_addr: str = "*",
                      auth_file: str = "userlist.txt",
                      auth_type: str = "scram-sha-256", tls: bool = False) -> list[str]:
    return [
        "[pgbouncer]",
        f"listen_addr = {listen_addr}",
        f"listen_port = {port}",
        "unix_socket_dir =",
        f"auth_type = {auth_type}",
        f"auth_file = /etc/lab/{auth_file}",
        f"admin_users = {ADMIN_USER}",
        f"stats_users = {ADMIN_USER}",
        f"pool_mode = {mode}",
        f"default_pool_size = {pool_size}",
        "min_pool_size = 0",
        "reserve_pool_size = 0",
        f"max_client_conn = {max_client_conn}",
        f"query_wait_timeout = {cfg.query_wait_timeout}",
        "ignore_startup_parameters = extra_float_digits",
        *_tls_lines(cfg, tls),
        "application_name_add_host = 0",
        # One log line per connection would dominate a connect-per-request burst.
        "log_connections = 0",
        "log_disconnections = 0",
        "log_pooler_errors = 1",
    ]


def _tls_lines(cfg: LabConfig, tls: bool) -> list[str]:
    if not tls:
        return ["server_tls_sslmode = disable"]
    return [
        # To clients: TLS when they ask (prefer), required with ssl_enforce ("SSL required").
        f"client_tls_sslmode = {'require' if cfg.ssl_enforce else 'prefer'}",
        f"client_tls_cert_file = {TLS_CERT}",
        f"client_tls_key_file = {TLS_KEY}",
        # Only for client certificates (none are asked for), but PgBouncer must load a CA, and
        # the image has no system bundle.
        f"client_tls_ca_file = {TLS_CA}",
        # To Postgres: TLS, the server's certificate checked against the lab's CA and name.
        "server_tls_sslmode = verify-full",
        f"server_tls_ca_file = {TLS_CA}",
    ]


def _dedicated_ini(cfg: LabConfig, tls: bool = False) -> str:
    lines = [
        "; Rendered by pooler-lab: the dedicated pooler, PgBouncer co-located with Postgres",
        "; (it shares the db host's network namespace), configured as Supabase does.",
        "[databases]",
        f"* = host=127.0.0.1 port={DB_CONTAINER_PORT} application_name={DEDICATED_APP}",
        "",
        *_pgbouncer_common(cfg, port=DEDICATED_CONTAINER_PORT, mode="transaction",
                           pool_size=cfg.pool_size, max_client_conn=cfg.max_client_conn,
                           tls=tls),
        f"auth_user = {AUTH_USER}",
        "auth_query = SELECT * FROM pgbouncer.get_auth($1)",
        "auth_dbname = postgres",
        f"max_prepared_statements = {cfg.max_prepared_statements}",
    ]
    return "\n".join(lines) + "\n"


def _shared_hba() -> str:
    return (
        "# Rendered by pooler-lab: SCRAM for every client; the lookup user may not log in.\n"
        f"host all {AUTH_USER} 0.0.0.0/0 reject\n"
        f"host all {AUTH_USER} ::/0 reject\n"
        "host all all 0.0.0.0/0 scram-sha-256\n"
        "host all all ::/0 scram-sha-256\n"
    )


def _shared_ini(cfg: LabConfig, secrets: Secrets, mode: str, tls: bool = False) -> str:
    port = SESSION_CONTAINER_PORT if mode == "session" else TRANSACTION_CONTAINER_PORT
    extra: list[str] = []
    if cfg.pool_sharing == "shared":
        target = f"host=127.0.0.1 port={SHARED_INNER_PORT}"
        # An idle outer server connection still holds a slot of the shared inner pool: give it
        # back within a second so the other mode can use it.
        extra = ["server_idle_timeout = 1"]
    else:
        target = _pooler_db_target(cfg)
    lines = [
        f"; Rendered by pooler-lab: the shared pooler's {mode} mode (PgBouncer standing in for",
        "; Supavisor). Clients log in as postgres.<tenant>; Postgres sees role postgres.",
        "[databases]",
        f"* = {target} user=postgres password={secrets.postgres_password}"
        f" application_name={SHARED_APP}",
        f"{TENANT_DB} = {_pooler_db_target(cfg)} dbname={TENANT_DB}",
        "",
        *_pgbouncer_common(cfg, port=port, mode=mode, pool_size=cfg.pool_size,
                           max_client_conn=cfg.max_client_conn, auth_type="hba", tls=tls),
        "auth_hba_file = /etc/lab/pgbouncer_hba.conf",
        # Users missing from the auth file (a wrong tenant) are looked up in TENANT_DB, whose
        # login trigger answers "Tenant or user not found", as Supavisor does.
        f"auth_user = {AUTH_USER}",
        "auth_query = SELECT NULL::text, NULL::text",
        f"auth_dbname = {TENANT_DB}",
        # Supavisor supports named prepared statements in transaction mode only behind a flag
        # (named_prepared_statements, off by default): shared_max_prepared_statements, 0 = off.
        "max_prepared_statements = "
        f"{cfg.shared_max_prepared_statements if mode == 'transaction' else 0}",
        *extra,
    ]
    if mode == "session":
        # Supavisor 2.8+ refuses session-mode clients beyond pool_size at connect
        # (EMAXCONNSESSION); PgBouncer 1.24's per-user client cap does the same at login,
        # before authentication: "client connections exceeded (max_user_client_connections)".
        # 0 (no cap): the client logs in and its first query queues, as before Supavisor 2.8.
        cap = cfg.pool_size if cfg.session_overflow == "refuse" else 0
        lines.append(f"max_user_client_connections = {cap}")
    return "\n".join(lines) + "\n"


def _shared_inner_ini(cfg: LabConfig, secrets: Secrets, tls: bool = False) -> str:
    lines = [
        "; Rendered by pooler-lab: pool_sharing = shared. Both modes' server connections pass",
        "; through this session-mode pool, so together they hold at most pool_size backends.",
        "[databases]",
        f"* = {_pooler_db_target(cfg)} user=postgres password={secrets.postgres_password}",
        "",
        *_pgbouncer_common(cfg, port=SHARED_INNER_PORT, mode="session",
                           pool_size=cfg.pool_size, max_client_conn=4 * cfg.max_client_conn,
                           listen_addr="127.0.0.1", auth_file="userlist-shared.txt", tls=tls),
        "max_prepared_statements = 0",
    ]
    return "\n".join(lines) + "\n"
