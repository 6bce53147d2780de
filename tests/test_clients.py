"""`lab clients`: the driver files, the cell child (crash, hang, wrong answer, missing package),
the renderings, and the matrix on the real stack for psycopg 3, asyncpg and node-postgres on all
four endpoints, with the outcomes their documentation promises."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from lab.clients import discovery, install, matrix, render
from lab.clients.matrix import Matrix, run_cell
from lab.clients.model import Cell, Driver
from lab.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = ["direct", "session", "transaction", "dedicated"]

# A driver file with no database behind it: what the cell child does with each kind of end.
FAKE = '''
import os, time
from lab.clients import Driver, Variant, WrongResult


class Boom(Exception):
    pass


def fails(w, options):
    w.at.where = "repeat 3, client b"
    raise Boom("prepared statement \\"x\\" already exists")


def wrong(w, options):
    raise WrongResult("repeat 1, client a: SELECT 1 + 1 returned 3")


def hangs(w, options):
    import subprocess
    w.at.where = "transaction, client a begins"
    child = subprocess.Popen(["sleep", "60"])  # as node is, for a node driver
    os.makedirs(w.node_dir, exist_ok=True)
    with open(os.path.join(w.node_dir, "grandchild.pid"), "w") as fh:
        fh.write(str(child.pid))
    time.sleep(60)


def crashes(w, options):
    os._exit(3)


def missing(w, options):
    import not_a_driver_module_here  # noqa: F401


async def works(w, options):
    return None


DRIVER = Driver(name="fake", title="fake", packages=(), variants=tuple(
    Variant(f.__name__, f.__name__, f) for f in (fails, wrong, hangs, crashes, missing, works)))
'''


def _config(tmp_path: Path) -> dict:
    return {"endpoint": "direct", "dsn": "postgresql://u:secret@127.0.0.1:1/x",
            "params": {"host": "127.0.0.1", "port": 1, "user": "u", "password": "secret",
                       "dbname": "x", "sslmode": "disable", "application_name": "t"},
            "timeout": 2, "node_dir": str(tmp_path / "node")}


@pytest.fixture()
def fake(tmp_path):
    path = tmp_path / "fake.py"
    path.write_text(FAKE)
    return path


# -- the driver files -------------------------------------------------------------------------


def test_every_built_in_driver_file_loads_and_pins_its_packages():
    found = discovery.catalogue()
    names = {d.name for _, d in found}
    assert {"psycopg", "asyncpg", "node-postgres"} <= names
    for path, driver in found:
        assert driver.name == discovery.file_name_of(path)
        assert driver.variants or driver.untestable, driver.name
        assert (path.read_text().lstrip().startswith('"""')), f"{path.name} has no docstring"


def test_the_clients_extra_pins_exactly_the_python_drivers_packages():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["clients"]
    pins = {p for _, d in discovery.catalogue() if d.ecosystem == "pip" for p in d.packages}
    assert sorted(extra, key=str.lower) == sorted(pins, key=str.lower)


def test_a_driver_file_with_a_wrong_name_or_no_pin_is_a_one_line_error(tmp_path, monkeypatch):
    bad = tmp_path / "mine.py"
    bad.write_text("from lab.clients import Driver, Variant\n"
                   "DRIVER = Driver(name='other', title='x', variants=(Variant('default', 'd', "
                   "print),))\n")
    with pytest.raises(ConfigError, match="its file name says 'mine'"):
        discovery.load(bad)
    unpinned = tmp_path / "loose.py"
    unpinned.write_text("from lab.clients import Driver, Variant\n"
                        "DRIVER = Driver(name='loose', title='x', packages=('asyncpg',), "
                        "variants=(Variant('default', 'd', print),))\n")
    with pytest.raises(ConfigError, match="not pinned"):
        discovery.load(unpinned)
    monkeypatch.setenv(discovery.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="POOLER_LAB_CLIENTS names"):
        discovery.select([])


def test_a_missing_program_is_not_installed_with_its_reason_not_a_failure():
    driver = Driver(name="ghost", title="ghost", ecosystem="system",
                    packages=("no-such-program-here",), variants=())
    assert install.ensure([driver]) == {"ghost": "no-such-program-here not on PATH"}


# -- the cell child ---------------------------------------------------------------------------


def test_each_way_a_cell_can_end_is_recorded_and_the_next_cell_still_runs(fake, tmp_path):
    cells = {v: run_cell(fake, v, _config(tmp_path), timeout=3)
             for v in ("fails", "wrong", "hangs", "crashes", "missing", "works")}
    assert cells["fails"].outcome == "fails"
    assert cells["fails"].error_class.endswith("fake.Boom")
    assert cells["fails"].message == 'prepared statement "x" already exists'
    assert cells["fails"].where == "repeat 3, client b"
    assert cells["wrong"].outcome == "wrong" and "returned 3" in cells["wrong"].message
    assert cells["hangs"].outcome == "hangs"
    assert cells["hangs"].where == "transaction, client a begins"
    assert cells["crashes"].outcome == "crashed" and "exit code 3" in cells["crashes"].message
    assert cells["missing"].outcome == "not installed"
    assert "not_a_driver_module_here" in cells["missing"].message
    assert cells["works"].outcome == "works"


def test_a_hanging_cell_leaves_no_process_behind(fake, tmp_path):
    cell = run_cell(fake, "hangs", _config(tmp_path), timeout=1.5)
    assert cell.outcome == "hangs"
    grandchild = int((tmp_path / "node" / "grandchild.pid").read_text())
    stat = Path(f"/proc/{grandchild}/stat")

    def gone() -> bool:  # killed with its process group (a zombie until init reaps it at most)
        try:
            return stat.read_text().split(") ")[1].startswith("Z")
        except (OSError, IndexError):
            return True

    deadline = time.monotonic() + 2  # SIGKILL is delivered asynchronously
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone()


# -- rendering --------------------------------------------------------------------------------


def _sample() -> Matrix:
    clash = Cell("fails", "psycopg.errors.DuplicatePreparedStatement",
                 'prepared statement "_pg3_0" already exists', "repeat 6, client b", 0.2,
                 rescued_by="max_prepared_statements=100")
    ok = Cell("works", seconds=0.1)
    m = Matrix({"name": "t", "tier": "micro", "pool_size": 15, "pool_sharing": "per-mode",
                "dedicated_max_prepared_statements": 0, "shared_max_prepared_statements": 0,
                "ssl_enforce": False, "network": "local"}, ENDPOINTS, [], "2026-12-01T00:00:00Z",
               seconds=5.0, prepared=100)
    m.drivers = [
        matrix.DriverResult("psycopg", "psycopg 3", "", "pip", {"psycopg": "3.3.9"}, rows=[
            matrix.Row("default", "defaults (prepare_threshold=5)", "", {
                "direct": ok, "session": ok, "transaction": clash, "dedicated": clash}),
            matrix.Row("none", "prepare_threshold=None", "prepare_threshold=None",
                       dict.fromkeys(ENDPOINTS, ok))]),
        matrix.DriverResult("prisma", "Prisma", "", "npm", {}, "engines are downloaded",
                            "not testable"),
    ]
    return m


def test_the_text_matrix_cites_the_drivers_error_the_fix_and_the_rescue():
    text = render.text(_sample())
    row = next(ln for ln in text.splitlines() if ln.startswith("psycopg 3"))
    assert row.split()[-8:] == ["works", "works", "FAILS", "[1]", "*", "FAILS", "[1]", "*"]
    assert ('[1] psycopg.errors.DuplicatePreparedStatement: prepared statement "_pg3_0" already '
            "exists (at repeat 6, client b)") in text
    assert "psycopg 3 on transaction, dedicated: prepare_threshold=None" in text
    assert ("psycopg 3, defaults (prepare_threshold=5), on transaction, dedicated: works with "
            "max_prepared_statements=100") in text
    assert "Prisma: not testable: engines are downloaded" in text
    assert "12 cells in 5 s: 6 works, 4 not testable, 2 fails" in text


def test_markdown_html_and_json_carry_the_same_matrix(tmp_path):
    m = _sample()
    md = render.markdown(m)
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert all(ln.count(" | ") == 5 for ln in table if not ln.startswith("|---"))
    page = render.html(m)
    assert "&quot;_pg3_0&quot;" in page and "<table>" in page
    again = Matrix.from_json(json.loads(json.dumps(m.to_json())))
    assert render.text(again) == render.text(m)
    folder = render.write(m, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["clients.html", "clients.json",
                                                        "clients.md"]


# -- on the real stack ------------------------------------------------------------------------

DOCUMENTED = {
    # driver, variant: outcome on direct, session, transaction, dedicated (max_prepared 0)
    ("psycopg", "default"): ("works", "works", "fails", "fails"),
    ("psycopg", "prepare-threshold-none"): ("works",) * 4,
    ("psycopg", "pool"): ("works", "works", "fails", "fails"),
    ("psycopg", "pool-prepare-threshold-none"): ("works",) * 4,
    ("asyncpg", "default"): ("works", "works", "fails", "fails"),
    ("asyncpg", "statement-cache-size-0"): ("works",) * 4,
    ("node-postgres", "default"): ("works",) * 4,
    ("node-postgres", "named"): ("works", "works", "fails", "fails"),
}
ERRORS = {  # (class, message pattern, the step it fails at)
    "psycopg": ("psycopg.errors.DuplicatePreparedStatement",
                r'prepared statement "_pg3_0" already exists', "repeat 6, client b"),
    # one statement counter per process: a and b never share a name, so b meets the backend
    # that lacks its statement (26000) once a holds its own in a transaction
    "asyncpg": ("asyncpg.exceptions.InvalidSQLStatementNameError",
                r'prepared statement "__asyncpg_stmt_\d+__" does not exist',
                "transaction, client b query 1 (a holds its backend)"),
    "node-postgres": ("pg.DatabaseError", r'prepared statement "lab-query" already exists',
                      "repeat 1, client b"),
}


@pytest.fixture(scope="module")
def clients_lab(lab_factory):
    return lab_factory("--max-connections", "30", "--pool-size", "3")


@pytest.mark.stack
@pytest.mark.timeout(400)
def test_the_matrix_shows_each_drivers_documented_outcome_on_every_endpoint(clients_lab,
                                                                            tmp_path):
    crash = tmp_path / "crashing.py"
    crash.write_text("import os\nfrom lab.clients import Driver, Variant\n"
                     "def boom(w, options):\n    os._exit(9)\n"
                     "DRIVER = Driver(name='crashing', title='crashing', "
                     "variants=(Variant('default', 'd', boom),))\n")
    proc = clients_lab.cli("clients", "--driver", "psycopg", "--driver", str(crash),
                           "--driver", "asyncpg", "--driver", "node-postgres",
                           "--prepared", "100", "--reports-dir", str(tmp_path), "--json",
                           timeout=380)
    data = json.loads(proc.stdout)
    assert data["lab"]["dedicated_max_prepared_statements"] == 0
    assert data["endpoints"] == ENDPOINTS
    seen = {}
    for d in data["drivers"]:
        for v in d["variants"]:
            seen[(d["name"], v["key"])] = v["cells"]
    # one driver's crash cost its own cells only
    assert [c["outcome"] for c in seen[("crashing", "default")].values()] == ["crashed"] * 4
    for key, expected in DOCUMENTED.items():
        got = tuple(seen[key][ep]["outcome"] for ep in ENDPOINTS)
        assert got == expected, f"{key}: {got}"
        for ep, outcome in zip(ENDPOINTS, expected, strict=True):
            cell = seen[key][ep]
            if outcome == "fails":  # every failure here is rescued by the pooler's tracking
                assert cell["rescued_by"] == "max_prepared_statements=100", (key, ep)
                error_class, message, where = ERRORS[key[0]]
                assert cell["error_class"] == error_class, cell
                assert re.fullmatch(message, cell["message"]), cell
                assert cell["where"] == where, cell
            assert "rescued_by" not in cell or outcome == "fails"
    # the password never reaches the matrix or its files
    password = clients_lab.password
    folder = next(tmp_path.glob("clients-*"))
    for path in folder.iterdir():
        assert password not in path.read_text()
    assert password not in proc.stdout + proc.stderr
    # the lab's own settings are back: a stock transaction pooler refuses the clash again
    status = subprocess.run([sys.executable, "-m", "lab", "clients", "--name", clients_lab.name,
                             "--driver", "psycopg", "--endpoint", "dedicated", "--json",
                             "--reports-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env=dict(os.environ, POOLER_LAB_HOME=str(clients_lab.home)))
    again = json.loads(status.stdout)
    cells = again["drivers"][0]["variants"][0]["cells"]
    assert list(cells) == ["dedicated"] and cells["dedicated"]["outcome"] == "fails"
