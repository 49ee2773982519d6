"""The local multi-worker launcher: TF_CONFIG per worker on free ports, exit status, no process left."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from semisup.training import cluster

# Each worker records its TF_CONFIG and pid, then behaves as its index's entry in argv[2] says.
WORKER = """
import json, os, sys, time
config = json.loads(os.environ["TF_CONFIG"])
index = config["task"]["index"]
out = sys.argv[1]
with open(f"{out}/worker-{index}.json", "w") as f:
    json.dump({"config": config, "pid": os.getpid()}, f)
action = json.loads(sys.argv[2])[index]
if action == "hang":
    time.sleep(600)
    open(f"{out}/worker-{index}.slept-through", "w").close()
    sys.exit(0)
sys.exit(action)
"""


def _launch(tmp_path: Path, actions: list) -> tuple[int, list[dict]]:
    argv = [sys.executable, "-c", WORKER, str(tmp_path), json.dumps(actions)]
    code = cluster.launch_local(argv, len(actions))
    return code, [json.loads((tmp_path / f"worker-{i}.json").read_text()) for i in range(len(actions))]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_every_worker_gets_its_tf_config_on_distinct_free_ports(tmp_path):
    code, workers = _launch(tmp_path, [0, 0, 0])
    assert code == 0
    clusters = {json.dumps(w["config"]["cluster"]) for w in workers}
    assert len(clusters) == 1  # one cluster, seen alike by all
    addresses = workers[0]["config"]["cluster"]["worker"]
    assert len(set(addresses)) == 3 and all(a.startswith("127.0.0.1:") for a in addresses)
    assert [w["config"]["task"] for w in workers] == [{"type": "worker", "index": i} for i in range(3)]


def test_a_reported_failure_wins_and_nothing_is_left_running(tmp_path, monkeypatch):
    # Worker 1 dies at once (status 9), worker 0 reports it (status 2): the run's status is 2.
    code, workers = _launch(tmp_path, [2, 9])
    assert code == 2
    # A worker that never stops (it sleeps 10 minutes) is killed once the grace period after a failure is
    # over: it never reaches the end of its sleep. (Seconds to that kill: python bench/liveness.py.)
    monkeypatch.setattr(cluster, "GRACE_S", 1.0)
    code, workers = _launch(tmp_path, ["hang", 3])
    assert code == 3
    assert all(_gone(w["pid"]) for w in workers)
    assert not (tmp_path / "worker-0.slept-through").exists()


def test_free_ports_are_distinct():
    ports = cluster.free_ports(8)
    assert len(set(ports)) == 8 and all(0 < p < 65536 for p in ports)
