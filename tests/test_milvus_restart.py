"""A Milvus server restart mid-sync: the interrupted run fails within seconds with one line that says what to do,
and the next run repairs everything.

Its own Milvus standalone server (the `milvus` PyPI package) on its own data dir and ports, so the session's
`milvus_server` fixture (in this test worker or another) is not disturbed: the indexer runs in a subprocess with a
slowed fake encoder, the server is stopped under it, started again on the same data dir, and the same command runs
again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PALETTE, REPO
from needs import absent
from stores import MILVUS_GROUP, configure_server
from shoplens.store import point_id

# On the worker that runs the tests on the session's Milvus server (see conftest.py), so that the two servers'
# start-ups and loads never compete with each other for the machine.
pytestmark = pytest.mark.xdist_group(MILVUS_GROUP)

N = 40
# Seconds the interrupted indexer may take to fail once the server is gone: MilvusStore gives a write 20 s of
# retries (pymilvus's own default, 75 retries, took ~210 s), plus its last back-off (3 s) and a busy machine.
FAIL_WITHIN = 40
BATCH = 4

# An encoder plugin for the subprocess: the conftest colour encoder, and a slowed copy of it with the same
# name, so the re-run (unslowed) continues the same index.
PLUGIN = '''
import time
from conftest import ColourEncoder
from shoplens.encoders import register


class SlowColour(ColourEncoder):
    def embed_batch(self, images):
        time.sleep(0.4)
        return super().embed_batch(images)


register("restart-slow-colour", "fake colour, 0.4 s per batch")(lambda **_: SlowColour())
register("restart-colour", "fake colour")(lambda **_: ColourEncoder())
'''


# etcd forgets a killed server's component sessions after this many seconds (30 by default); the server started
# again on the same data waits for the old ones to go before it serves (a short TTL took this test from 73 to
# 51 s in an earlier measurement). Not shorter: on a loaded machine a running server could then miss its own
# session's keep-alive.
SESSION_TTL_S = 10


def _start(server, env: dict[str, str]) -> None:
    try:
        with pytest.MonkeyPatch.context() as patch:  # the server process copies os.environ when it starts
            for key, value in env.items():
                patch.setenv(key, value)
            server.start()
    except Exception as exc:  # noqa: BLE001  (a missing library, no free port, ...: say which)
        if os.environ.get("SHOPLENS_REQUIRE_MILVUS"):  # CI: a server that does not start is a failure
            raise
        pytest.skip(f"the Milvus standalone server did not start: {exc}")


@pytest.fixture
def own_server(tmp_path):
    """A fresh Milvus standalone server on its own base dir and free ports (its etcd's too, so it never meets the
    session's server or another worker's): (server, uri, the environment it must start with)."""
    try:
        from milvus import MilvusServer
    except ImportError as exc:
        absent(f"the milvus server package is not installed (pip install -r requirements-dev.txt): {exc}",
               "SHOPLENS_REQUIRE_MILVUS")
    server = MilvusServer()
    env = configure_server(server, tmp_path / "milvus-data", session_ttl_s=SESSION_TTL_S)
    _start(server, env)
    yield server, f"http://127.0.0.1:{server.listen_port}", env
    server.stop()


def _photo(path: Path, colour, size) -> Path:
    """A flat colour PNG (lossless, so its mean colour is known exactly) with one half-bright pixel at (1, 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    img.putpixel((1, 1), tuple(c // 2 for c in colour))
    img.save(path, "PNG")
    return path


def _expected_vector(colour, size) -> np.ndarray:
    """The fake colour encoder's vector worked out from the pixels: mean colour + 1, unit length."""
    w, h = size
    mean = np.array([(c * (w * h - 1) + c // 2) / (w * h) for c in colour], np.float64) + 1.0
    return mean / np.linalg.norm(mean)


def test_server_restart_mid_sync_then_rerun_repairs(tmp_path, own_server):
    server, uri, server_env = own_server
    colours = list(PALETTE.values())
    catalog = tmp_path / "catalog"
    products = {}  # product id -> (category, relative path, colour, size)
    for i in range(N):
        size = (16 + i % 7, 16)
        rel = f"group{i % 4}/item{i:04d}.png"
        _photo(catalog / rel, colours[i % len(colours)], size)
        products[f"item{i:04d}"] = (f"group{i % 4}", rel, colours[i % len(colours)], size)
    (tmp_path / "restart_colour.py").write_text(PLUGIN)
    env = {**os.environ, "SHOPLENS_PLUGINS": "restart_colour",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), str(tmp_path)])}
    cmd = [sys.executable, str(REPO / "indexer.py"), str(catalog), "--milvus-uri", uri, "--collection", "restart",
           "--batch-size", str(BATCH)]

    proc = subprocess.Popen(cmd + ["--encoder", "restart-slow-colour"], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL)
    seen = {"n": 0, "err": b""}

    def watch():
        while chunk := proc.stderr.read(64):
            seen["err"] += chunk
            counts = re.findall(rb"(\d+)/%d" % N, seen["err"][-4096:])
            if counts:
                seen["n"] = int(counts[-1])

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    deadline = time.time() + 60
    while seen["n"] < 12 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, (f"the indexer ended before the server stopped: {proc.returncode}\n"
                                 f"{seen['err'].decode(errors='replace')[-2000:]}")
    server.stop()  # SIGTERM, then SIGKILL after 1 s: the server goes away under a running sync
    stopped = time.time()
    try:
        first_rc = proc.wait(timeout=FAIL_WITHIN)
    except subprocess.TimeoutExpired:
        # Still blocked on the gone server (pymilvus alone retried ~210 s): kill it; the test fails below.
        first_rc = None
        proc.kill()
        proc.wait()
    waited = time.time() - stopped
    reader.join(5)
    err = seen["err"].decode(errors="replace")
    print(f"first run failed {waited:.1f} s after the server stopped")

    # The interrupted run: a failure within seconds, told in one line of its own (the progress bar closed
    # first) that names the server and what to do, no traceback.
    assert first_rc is not None, f"the indexer did not fail within {FAIL_WITHIN} s of the server stopping:\n{err}"
    assert first_rc == 2, err  # a StoreError, printed by the CLI in one line
    assert "Traceback" not in err, err
    errors = [line for line in err.split("\n") if "error: " in line]
    assert len(errors) == 1 and errors[0].startswith("error: "), err  # not after the bar, on the bar's line
    error = errors[0]
    found = re.fullmatch(rf"error: lost the Milvus server at {re.escape(uri)} \(upsert: connection refused for 20 s\); "
                         r"the (\d+) products written before are kept: start the server and run the same command "
                         r"again, it resumes where it stopped", error)
    assert found, error
    kept = int(found[1])
    # The bar had counted 12 products, so two batches of 4 had been written before the third one started.
    assert 8 <= kept < N, error

    t0 = time.time()
    _start(server, server_env)  # same base dir, same ports
    t1 = time.time()
    assert server.listen_port == int(uri.rsplit(":", 1)[1]), "the restarted server took another port"
    # Right after the restart the server holds queries until it has reloaded the collections (~25 s): the
    # re-run copes with that too.
    done = subprocess.run(cmd + ["--encoder", "restart-colour", "--json", "--quiet"], env=env, capture_output=True,
                          text=True, timeout=180)
    print(f"restart {t1 - t0:.1f} s, re-run {time.time() - t1:.1f} s")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    summary = json.loads(done.stdout)
    # What the message promised: the products it counted as written were kept (an upsert the server took but
    # never acknowledged may have been kept too); the re-run wrote the rest.
    assert kept <= summary["unchanged"] and summary["unchanged"] + summary["added"] == N, (error, summary)
    assert summary["updated"] == 0 and summary["failed"] == 0, summary
    print(f"{error}\nre-run: {summary['unchanged']} unchanged, {summary['added']} added")

    from shoplens.store.milvus import MilvusStore

    store = MilvusStore(uri, "restart", strong=True)  # everything the indexer wrote, not a bounded view
    try:
        hits = list(store.iterate(with_vector=True))
        ids = [h.id for h in hits]
        assert len(ids) == N and len(set(ids)) == N, sorted(ids)
        assert set(ids) == {point_id(pid) for pid in products}
        assert store.count() == N
        by_id = {h.id: h for h in hits}
        for pid, (category, rel, colour, size) in products.items():
            hit = by_id[point_id(pid)]
            assert hit.payload["product_id"] == pid and hit.payload["title"] == pid
            assert hit.payload["category"] == category and hit.payload["image_path"] == rel
            assert hit.payload["content_hash"] == hashlib.sha256((catalog / rel).read_bytes()).hexdigest()
            np.testing.assert_allclose(hit.vector, _expected_vector(colour, size), atol=1e-6)
    finally:
        store.close()
