"""`lab status`'s who-is-connected views, from sampled rows alone (no stack needed)."""

from lab.status import backends_by_role, pooler_connections, who, who_tables

GROUPS = [
    {"role": "postgres", "app": "Supavisor", "state": "idle", "origin": "shared", "n": 2},
    {"role": "postgres", "app": "Supavisor", "state": "active", "origin": "shared", "n": 1},
    {"role": "postgres", "app": "PgBouncer", "state": "idle", "origin": "dedicated", "n": 1},
    {"role": "pgbouncer", "app": "PgBouncer", "state": "idle", "origin": "dedicated", "n": 1},
    {"role": "postgres", "app": "", "state": "active", "origin": "direct", "n": 4},
]


def test_backends_are_summed_over_state_per_role_application_and_origin():
    rows = backends_by_role(GROUPS)
    assert rows[0] == {"role": "postgres", "application_name": "", "origin": "direct",
                       "backends": 4}
    assert {"role": "postgres", "application_name": "Supavisor", "origin": "shared",
            "backends": 3} in rows
    assert sum(r["backends"] for r in rows) == 9 and len(rows) == 4


def test_pooler_connections_leave_the_admin_console_out_and_count_states():
    rows = [
        {"user": "postgres.lab", "database": "postgres", "application_name": "app",
         "state": "active"},
        {"user": "postgres.lab", "database": "postgres", "application_name": "app",
         "state": "waiting"},
        {"user": "postgres.lab", "database": "postgres", "application_name": "",
         "state": "active"},
        {"user": "lab_admin", "database": "pgbouncer", "application_name": "",
         "state": "active"},
    ]
    out = pooler_connections(rows)
    assert out == [
        {"user": "postgres.lab", "database": "postgres", "application_name": "app", "total": 2,
         "states": {"active": 1, "waiting": 1}},
        {"user": "postgres.lab", "database": "postgres", "application_name": "", "total": 1,
         "states": {"active": 1}},
    ]


def test_the_three_views_and_their_tables():
    client = {"user": "postgres", "database": "postgres", "application_name": "psql",
              "state": "active"}
    server = {"user": "postgres", "database": "postgres", "application_name": "psql",
              "state": "active"}
    view = who({"ok": True, "groups": GROUPS},
               {"dedicated": {"clients": [client], "servers": [server]},
                "session": {"clients": [], "servers": []},
                "transaction": {"error": "connection refused"}})
    assert view["dedicated_pooler"]["clients"] == 1
    assert view["dedicated_pooler"]["server_connections"] == 1
    assert view["shared_pooler"]["session"] == {"ok": True, "clients": 0, "by_client": [],
                                                "server_connections": 0, "by_server": []}
    assert view["shared_pooler"]["transaction"] == {"ok": False,
                                                    "error": "connection refused"}
    tables = who_tables(view)
    assert [t[0] for t in tables] == ["Postgres backends by role", "Dedicated pooler clients",
                                      "Shared pooler clients"]
    roles = tables[0][2]
    assert ("postgres", "''", "direct", 4) in roles  # an empty application_name, visible
    dedicated = tables[1][2]
    assert dedicated[0][:4] == ("postgres", "postgres", "psql", 1)
    assert dedicated[-1][-1] == "server connections 1"
    shared = tables[2][2]
    assert [r[0] for r in shared] == ["session", "transaction"]
    assert shared[1][-1] == "connection refused"
    for _, headers, rows in tables:
        assert all(len(r) == len(headers) for r in rows)


def test_postgres_down_leaves_the_role_view_empty():
    view = who({"ok": False, "error": "refused"}, {})
    assert view["postgres_by_role"] is None
    assert view["dedicated_pooler"] == {"ok": False, "error": "not sampled"}
    assert who_tables(view)[0][2] == []
