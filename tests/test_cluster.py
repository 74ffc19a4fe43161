"""A real two-node Ray cluster on this machine: `twoworlds sweep --address` and `ray job submit` against it.

The cluster is two `ray start` calls (a head with 1 CPU, a second node with 2 CPUs) with their own temp
dirs and free ports, so it never meets another Ray instance on the machine. It is torn down by signalling
exactly the processes it started (`ray stop` would stop every Ray instance on the machine).

Token authentication: Ray >= 2.5x turns it on for `ray start --head` when a token file exists
(~/.ray/auth_token, written by any earlier local `ray.init()`), and a client given an explicit address
never turns it on by itself. To be independent of that file, every process here gets
RAY_AUTH_MODE=token and a fresh RAY_AUTH_TOKEN: both nodes, the drivers and `ray job submit`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import free_port

REPO = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray")) if Path(sys.executable).with_name("ray").exists() else "ray"
SMOKE_TRIALS = 6  # sweeps/quickstart.yaml --smoke: 2 models x 3 worlds x 1 seed
HEAD_CPUS, WORKER_CPUS = 0, 2  # no CPUs on the head: every trial must be placed on the joined node

pytestmark = pytest.mark.slow


def _dashboard_missing() -> str | None:
    """Why the Ray dashboard (needed by `ray job submit`) cannot start here, or None."""
    try:
        from ray._private.utils import get_dashboard_dependency_error
    except ImportError:
        return None
    err = get_dashboard_dependency_error()
    return None if err is None else f"{err} (the dashboard needs ray[default])"


def _procs() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, session id, state) of every process, from /proc."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[int(d.name)] = (int(fields[1]), int(fields[3]), fields[0])
    return out


def _ours(sessions: set[int]) -> list[int]:
    """Live processes in our sessions (both `ray start` calls ran with a new session) and their descendants."""
    procs = _procs()
    mine = {pid for pid, (_, sid, state) in procs.items() if sid in sessions and state != "Z"}
    while True:
        more = {pid for pid, (ppid, _, state) in procs.items() if ppid in mine and state != "Z"} - mine
        if not more:
            return sorted(mine - {os.getpid()})
        mine |= more


def _stop(sessions: set[int]) -> list[int]:
    """SIGTERM our processes, SIGKILL what is left after a grace period; returns the survivors."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        for pid in _ours(sessions):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while _ours(sessions) and time.monotonic() < deadline:
            time.sleep(0.3)
        if not _ours(sessions):
            return []
    return _ours(sessions)


class Cluster:
    def __init__(self, base: Path):
        self.base = base
        self.head_dir, self.worker_dir = base / "h", base / "w"  # short: Unix socket paths < 108 chars
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = _dashboard_missing() is None
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        self.env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "PYTHONUNBUFFERED": "1"}
        self.sessions: set[int] = set()
        self.logs: list[str] = []

    def ray(self, *args, timeout=120) -> subprocess.CompletedProcess:
        proc = subprocess.Popen([RAY, *map(str, args)], env=self.env, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.sessions.add(proc.pid)  # everything `ray start` leaves running stays in this session
        out, _ = proc.communicate(timeout=timeout)
        self.logs.append(f"$ ray {' '.join(map(str, args))}\n{out}")
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")

    def start(self) -> None:
        common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", "--object-store-memory=200000000"]
        head = self.ray("start", "--head", f"--port={self.port}", f"--num-cpus={HEAD_CPUS}",
                        f"--temp-dir={self.head_dir}", "--dashboard-host=127.0.0.1",
                        f"--dashboard-port={self.dashboard_port}", f"--include-dashboard={self.dashboard}",
                        f"--dashboard-agent-listen-port={free_port()}",
                        f"--ray-client-server-port={free_port()}", *common)
        assert head.returncode == 0, head.stdout
        worker = self.ray("start", f"--address={self.address}", f"--num-cpus={WORKER_CPUS}",
                          f"--temp-dir={self.worker_dir}", f"--dashboard-agent-listen-port={free_port()}",
                          *common)
        assert worker.returncode == 0, worker.stdout

    def alive_nodes(self, want: int, timeout: float = 60) -> list[dict]:
        """The alive nodes once `want` of them are up (a driver joins the cluster to ask)."""
        code = (f"import json, time, ray\nray.init(address={self.address!r}, log_to_driver=False)\n"
                f"end = time.time() + {timeout}\n"
                "while True:\n"
                "    nodes = [n for n in ray.nodes() if n['Alive']]\n"
                f"    if len(nodes) >= {want} or time.time() > end: break\n"
                "    time.sleep(0.5)\n"
                "print('NODES=' + json.dumps(nodes))\n")
        out = subprocess.run([sys.executable, "-c", code], env=self.env, cwd=REPO, capture_output=True,
                             text=True, timeout=timeout + 60)
        assert out.returncode == 0, out.stdout + out.stderr
        line = next(x for x in out.stdout.splitlines() if x.startswith("NODES="))
        return json.loads(line[len("NODES="):])

    def actor_logs(self) -> dict[str, list[tuple[str, int, Path]]]:
        """node -> (job id, pid, .out log) of each worker process its raylet started (from the log file names)."""
        found = {}
        for node, d in (("head", self.head_dir), ("worker", self.worker_dir)):
            found[node] = []
            for log in (d / "session_latest" / "logs").glob("worker-*.out"):  # worker-<id>-<job id>-<pid>.out
                *_, job, pid = log.stem.split("-")
                found[node].append((job, int(pid), log))
        return found


@pytest.fixture(scope="module")
def cluster():
    base = Path(tempfile.mkdtemp(prefix="rtw-", dir="/tmp"))
    c = Cluster(base)
    try:
        c.start()
        nodes = c.alive_nodes(2)
        assert len(nodes) == 2, nodes
        assert sorted(n["Resources"].get("CPU", 0) for n in nodes) == [HEAD_CPUS, WORKER_CPUS]
        sockets = sorted(n["RayletSocketName"] for n in nodes)
        assert sockets[0].startswith(str(c.head_dir)) and sockets[1].startswith(str(c.worker_dir)), sockets
        yield c
    except BaseException:
        print("\n\n".join(c.logs))
        raise
    finally:
        left = _stop(c.sessions)
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"Ray processes still running after teardown: {left}"


def _cli_env(c: Cluster) -> dict:
    return dict(c.env)  # auth token, no RAY_ADDRESS: the address is passed explicitly


def _summaries(study_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in study_dir.glob("*/summary.json")}


def _assert_smoke_study_completed(out_dir: Path) -> Path:
    study = out_dir / "quickstart-smoke"
    found = _summaries(study)
    assert len(found) == SMOKE_TRIALS, sorted(found)
    assert {s["status"] for s in found.values()} == {"completed"}, found
    for name in found:
        assert (study / name / "metrics.csv").exists() and (study / name / "config.yaml").exists()
    return study


def _trial_tracebacks(err: str) -> list[str]:
    """The tracebacks in a worker's stderr, except Ray's own SIGTERM of an idle actor at the end of the
    job: its handler raises SystemExit wherever the actor happens to be, and when that is a weakref
    callback Python prints it as 'Exception ignored' (seen once in CI, after every trial had completed)."""
    blocks = err.split("Traceback (most recent call last):")[1:]
    return [b for b in blocks if not ("in sigterm_handler" in b and "SystemExit: 1" in b)]


def test_sweep_runs_on_a_two_node_cluster(cluster, tmp_path):
    out_dir = tmp_path / "runs"
    cmd = [sys.executable, "-m", "twoworlds.launch.cli", "sweep", "sweeps/quickstart.yaml", "--smoke",
           "--address", cluster.address, f"out_dir={out_dir}"]
    res = subprocess.run(cmd, env=_cli_env(cluster), cwd=REPO, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert f"study quickstart-smoke: {SMOKE_TRIALS} completed" in res.stdout
    study = _assert_smoke_study_completed(out_dir)

    # Where each trial ran: Tune records the pid of the trial's actor, and each raylet names its workers'
    # log files worker-<id>-<job id>-<pid>.out under its own temp dir.
    pids = {p.parent.name: json.loads(p.read_text().splitlines()[-1])["pid"]
            for p in (study / "_tune").glob("*/result.json")}
    assert len(pids) == SMOKE_TRIALS, pids
    logs = cluster.actor_logs()
    where = {pid: (node, job) for node, entries in logs.items() for job, pid, _ in entries}
    assert set(pids.values()) <= set(where), (pids, logs)
    ran_on = {trial: where[pid][0] for trial, pid in pids.items()}
    (job,) = {where[pid][1] for pid in pids.values()}
    # The head offers no CPUs, so every trial actor must have been placed on the node that joined.
    assert set(ran_on.values()) == {"worker"}, ran_on
    actors = {node: [log for j, _, log in entries if j == job and ":actor_name:trial_fn" in log.read_text()]
              for node, entries in logs.items()}
    assert actors["worker"] and not actors.get("head"), (actors, ran_on)
    for log in actors["worker"]:
        err = log.with_suffix(".err").read_text()
        assert not _trial_tracebacks(err), (log, err[-2000:])
    print(f"trials ran on: {ran_on}")


def test_ray_job_submit_runs_a_sweep_with_the_working_dir(cluster, tmp_path):
    if not cluster.dashboard:
        pytest.skip(f"no Ray dashboard, so no job API: {_dashboard_missing()}")
    out_dir = tmp_path / "runs"
    job_id = f"twoworlds-{secrets.token_hex(4)}"
    # .gitignore already keeps .venv and runs/ out of the upload; excludes make that independent of it
    runtime_env = {"excludes": [".venv", "runs", ".git", ".pytest_cache", ".ruff_cache", "*.egg-info"]}
    dash = f"http://127.0.0.1:{cluster.dashboard_port}"
    res = subprocess.run(
        [RAY, "job", "submit", "--address", dash, "--submission-id", job_id, "--working-dir", ".",
         "--runtime-env-json", json.dumps(runtime_env), "--",
         sys.executable, "-m", "twoworlds.launch.cli", "sweep", "sweeps/quickstart.yaml", "--smoke", "--address", "auto",
         f"out_dir={out_dir}"],
        env=_cli_env(cluster), cwd=REPO, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert f"study quickstart-smoke: {SMOKE_TRIALS} completed" in res.stdout
    status = subprocess.run([RAY, "job", "status", "--address", dash, job_id], env=_cli_env(cluster), cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and f"Job '{job_id}' succeeded" in status.stdout, status.stdout + status.stderr
    _assert_smoke_study_completed(out_dir)
