"""The live view in a real browser during a real run: `lab watch` in one process, `lab run
--watch` in another, Debian's headless chromium on the page (through chromedriver), and what a
person in the room would see: the four endpoint panels, numbers that move, the max_connections
line, the spike, an injected outage; then the replay of the finished run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import LAB, ROOT

pytestmark = [pytest.mark.stack, pytest.mark.browser, pytest.mark.timeout(420)]
# LAB_UPDATE_DOCS=1 also writes the screenshot the README shows
DOCS_SHOT = ROOT / "docs" / "watch.png"


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory()


@pytest.fixture
def browser(tmp_path):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if os.environ.get("CI"):
            pytest.fail("CI must provide chromium and chromedriver (.ci/run installs them)")
        pytest.skip("no chromium/chromedriver: apt install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    # the machine's network is closed: no background requests, no first-run chatter
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1600,1900",
                f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def start(lab, *args: str) -> subprocess.Popen:
    env = dict(os.environ, POOLER_LAB_HOME=str(lab.home), NO_COLOR="1")
    return subprocess.Popen([*LAB, *args, "--name", lab.name], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def frame_of(url: str) -> dict | None:
    base = url.split("?")[0]
    with urllib.request.urlopen(base + "frame.json", timeout=5) as resp:
        return json.loads(resp.read())


PAGE_STATE = """
const text = (sel) => { const e = document.querySelector(sel); return e ? e.textContent : null; };
const panels = {};
for (const el of document.querySelectorAll('[data-endpoint]')) {
  const v = (m) => {
    const e = el.querySelector(`[data-measure="${m}"] .value`);
    return e ? e.textContent : null;
  };
  const legend = el.querySelector('.u-legend');
  panels[el.dataset.endpoint] = {
    title: el.querySelector('h2').textContent, clients: v('clients'),
    limits: el.querySelector('.limits').textContent, down: el.classList.contains('down'),
    active: el.classList.contains('active'), legend: legend ? legend.textContent : ''};
}
const phase = document.querySelector('#phase');
return {panels, backends: text('#pg-backends'), pgLimit: text('#pg-limit'),
        source: text('#source'), run: text('#run-title'),
        phase: phase.className.includes('hidden') ? null : phase.textContent,
        alerts: [...document.querySelectorAll('.alert')].map(
          e => e.className + ': ' + e.textContent),
        pgLegend: text('#postgres .u-legend')};
"""


def page_state(driver) -> dict:
    """What a person sees on the page now: panels, their numbers and limits, banners."""
    return driver.execute_script(PAGE_STATE)


def non_blank(png: Path) -> tuple[float, int]:
    """(share of pixels that are not white, number of distinct colours) of a screenshot."""
    import numpy as np
    from PIL import Image

    img = Image.open(png).convert("RGB")
    pixels = np.asarray(img.resize((img.width // 4, img.height // 4))).reshape(-1, 3)
    inked = float((pixels.astype(int).sum(axis=1) < 720).mean())
    return inked, len(np.unique(pixels, axis=0))


def test_the_page_shows_pools_filling_and_an_outage_while_a_run_drives_the_lab(
        lab, browser, tmp_path):
    watch = start(lab, "watch", "--port", "0")
    run = None
    try:
        url = watch.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), (url, watch.stderr.read())
        browser.get(url)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(page_state(browser)["panels"]) < 4:
            time.sleep(0.3)
        idle = page_state(browser)
        assert set(idle["panels"]) == {"direct", "session", "transaction", "dedicated"}
        assert "no run" in idle["source"]
        assert idle["panels"]["transaction"]["title"].startswith("Shared pooler · transaction")
        assert idle["pgLimit"] == "of max_connections 60"
        assert idle["panels"]["direct"]["limits"] == "max_connections 60"
        assert "pool_size 15 · max_client_conn 200" in idle["panels"]["session"]["limits"]
        assert "max_connections" in idle["pgLegend"]

        run = start(lab, "run", "serverless-burst", "-e", "direct", "-e", "transaction",
                    "--duration", "10s", "--cooldown", "0s", "--fault", "5s:pooler:pause:3s",
                    "--reports-dir", str(tmp_path / "reports"), "--watch")
        seen: list[dict] = []
        samplers: list[int] = []
        run_view: dict | None = None
        shot = tmp_path / "watch.png"
        while run.poll() is None and len(seen) < 400:
            state = page_state(browser)
            seen.append(state)
            if (state["run"] or "").startswith("serverless-burst → transaction") and \
                    "segment done" not in state["run"]:
                browser.save_screenshot(str(shot))  # the last one: both segments in view
            if len(seen) % 5 == 0:
                samplers += sampler_backends(lab)
            if run_view is None and len(seen) > 10:
                run_view = own_view(run)
            time.sleep(0.4)
        out, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        run_dir = Path(out.strip().splitlines()[-1])
    finally:
        if run is not None:
            stop(run)
        stop(watch)

    # the run, as the room saw it
    assert any("LIVE · run" in s["source"] for s in seen)
    assert any((s["run"] or "").startswith("serverless-burst → direct") for s in seen)
    assert any(s["panels"]["transaction"]["active"] for s in seen)
    backends = {s["backends"] for s in seen}
    assert len(backends) >= 3, backends  # numbers that move
    assert max(int(b) for b in backends if b not in (None, "-")) >= 20  # the burst on direct
    assert any(s["phase"] == "SPIKE" for s in seen)
    faults = [a for s in seen for a in s["alerts"] if a.startswith("alert fault")]
    assert any("FAULT: pooler frozen (docker pause) for 3 s" in a for a in faults), faults
    assert any(s["panels"]["transaction"]["down"] or s["panels"]["session"]["down"]
               for s in seen)  # the paused pooler host, shown unreachable
    # one sampler only while the run samples (lab watch stopped its own)
    assert samplers and max(samplers) == 1, samplers
    # lab run --watch served its own view of the same frames
    assert run_view is not None and run_view["source"] == "run", run_view
    assert run_view["run"]["scenario"] == "serverless-burst"

    assert shot.exists()
    inked, colours = non_blank(shot)
    assert inked > 0.03 and colours > 50, (inked, colours)
    if os.environ.get("LAB_UPDATE_DOCS"):
        shrink(shot, DOCS_SHOT)

    # the finished run, replayed from its directory
    replay = start(lab, "watch", str(run_dir), "--port", "0", "--speed", "20")
    try:
        url = replay.stdout.readline().strip()
        deadline = time.monotonic() + 20
        last = None
        while time.monotonic() < deadline:
            last = frame_of(url)
            if last and last["run"] and last["run"]["endpoint"] == "transaction":
                break
            time.sleep(0.3)
        assert last and last["source"] == "replay" and last["run"]["endpoint"] == "transaction"
    finally:
        stop(replay)


def own_view(run: subprocess.Popen) -> dict | None:
    """The frame `lab run --watch` serves (its URL is on its stderr, the first lines)."""
    import select

    if not select.select([run.stderr], [], [], 0)[0]:
        return None
    for _ in range(5):
        line = run.stderr.readline()
        if line.startswith("live view: "):
            return frame_of(line.removeprefix("live view: ").strip())
    return None


def sampler_backends(lab) -> list[int]:
    """[samplers connected to Postgres now], or [] while the burst holds every slot."""
    import psycopg

    info = lab.connect()["direct"]
    try:
        with psycopg.connect(info["uri"], autocommit=True, connect_timeout=5) as conn:
            return [conn.execute("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE application_name = 'pooler-lab-sampler'").fetchone()[0]]
    except psycopg.OperationalError:  # sorry, too many clients already
        return []


def shrink(src: Path, dest: Path) -> None:
    """A small PNG for the README: three quarters of the size, 256 colours."""
    from PIL import Image

    img = Image.open(src).convert("RGB")
    img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.LANCZOS)
    img.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(dest, optimize=True)


def test_status_watch_prints_the_same_numbers_until_ctrl_c(lab):
    proc = start(lab, "status", "--watch")
    time.sleep(3)
    stop(proc)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    block = out.strip().split("\n\n")[0].splitlines()
    assert block[0].startswith(f"lab {lab.name} (micro): Postgres backends ")
    assert block[0].split("Postgres backends ")[1].split()[0].endswith("/60")
    rows = {line.split()[0]: line for line in block[2:]}
    assert set(rows) == {"direct", "session", "transaction", "dedicated"}
    assert "pool_size 15, max_client_conn 200" in rows["transaction"]
    assert "UNREACHABLE" not in out and "Traceback" not in err
