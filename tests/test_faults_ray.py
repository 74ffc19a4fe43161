"""Ray faults, for real: the local instance `twoworlds sweep` starts keeps token auth on and listens on loopback
only; an --address where nothing listens and resources no node can hold are refused in one line (exit 2)
before any trial starts. Every test starts its own local instance (never `address=auto`: other Ray
instances may run on this machine)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from test_sweep import REPO, cli, write_sweep

# Starts the local instance exactly as `twoworlds sweep` does (launch.ray_start.connect), then reports what a
# stranger could reach: the auth mode, the dashboard's answer without and with the token, and every TCP
# socket listening in this process tree (/proc/net/tcp{,6}: address hex, port hex, state 0A = LISTEN).
PROBE = r"""
import glob, json, os, sys, urllib.error, urllib.request
if sys.argv[2] == "imported-first":  # a notebook that imported Ray before twoworlds could configure it
    import ray
from twoworlds.launch.ray_start import connect
from twoworlds.launch.sweep_spec import load_sweep

assert connect(load_sweep(sys.argv[1]))
import ray
from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, get_authentication_mode
info = ray._private.worker._global_node.address_info

def status(headers):
    request = urllib.request.Request(f"http://{info['webui_url']}/api/version", headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=30).status
    except urllib.error.HTTPError as e:
        return e.code

def tree(root):
    children = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    pids = [root]
    for pid in pids:
        pids += children.get(pid, [])
    return pids

inodes = set()
for pid in tree(os.getpid()):
    for fd in glob.glob(f"/proc/{pid}/fd/*"):
        try:
            inodes.add(os.readlink(fd).removeprefix("socket:[").rstrip("]"))
        except OSError:
            pass
listening = [line.split()[1] for table in ("/proc/net/tcp", "/proc/net/tcp6") for line in open(table).readlines()[1:]
             if line.split()[3] == "0A" and line.split()[9] in inodes]
print(json.dumps({"token_mode": get_authentication_mode() == AuthenticationMode.TOKEN, "info": info,
                  "anonymous": status({}),
                  "with_token": status(AuthenticationTokenLoader.instance().get_token_for_http_header()),
                  "listening": listening}))
"""
LOOPBACK_HEX = ("0100007F:", "0000000000000000FFFF00000100007F:", "00000000000000000000000001000000:")  # 127.0.0.1, ::ffff:127.0.0.1, ::1


def tiny_sweep(tmp_path, resources: str):
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\nbase: {source: teacher, world: ideal, steps: 20, batch_size: 32, eval.points: 3,"
                    f" data.test_size: 256, model.width: 16, model.depth: 2}}\nresources: {resources}\n")
    return path


@pytest.mark.parametrize("ray_import", ["by-twoworlds", "imported-first"])
def test_the_local_instance_keeps_token_auth_on_and_listens_on_loopback_only(tmp_path, ray_import):
    """`twoworlds sweep` imports Ray after setting its switches; a process that imported Ray first gets them
    refreshed (launch/compat.py), or, on a Ray where that is not known to work, a one-line refusal."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", PYTHONPATH=str(REPO))  # token auth stays on even so
    # a DDP sweep: its instance runs the dashboard too
    result = subprocess.run([sys.executable, "-c", PROBE, str(tiny_sweep(tmp_path, "{cpu: 1, workers: 2}")), ray_import],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    if ray_import == "imported-first" and "ConfigError" in result.stderr:
        assert "RAY_AUTH_MODE=token" in result.stderr.strip().splitlines()[-1], result.stderr[-3000:]
        return
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["token_mode"]
    assert (got["anonymous"], got["with_token"]) == (401, 200)  # the dashboard refuses a request without it
    assert got["info"]["node_ip_address"] == "127.0.0.1"
    assert got["info"]["gcs_address"].startswith("127.0.0.1:") and got["info"]["webui_url"].startswith("127.0.0.1:")
    gcs_port = int(got["info"]["gcs_address"].rpartition(":")[2])
    ports = {int(a.rpartition(":")[2], 16) for a in got["listening"]}
    assert gcs_port in ports and int(got["info"]["webui_url"].rpartition(":")[2]) in ports
    assert [a for a in got["listening"] if not a.startswith(LOOPBACK_HEX)] == []  # nothing on 0.0.0.0/[::]/a NIC


def test_an_address_where_nothing_listens_fails_in_one_line_naming_it(tmp_path):
    with socket.socket() as s:  # a free loopback port: nothing listens there once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = cli(write_sweep(tmp_path), f"out_dir={tmp_path}", "--address", f"127.0.0.1:{port}", timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()]  # one line
    assert f"no Ray cluster at --address/RAY_ADDRESS 127.0.0.1:{port}" in result.stderr
    assert "ray start --head" in result.stderr and "ray up launch/cluster/" in result.stderr
    assert not (tmp_path / "tiny").exists()


@pytest.mark.parametrize("resources,flags,key,has", [
    ("{cpu: 1, gpu: 1}", [], "resources.gpu=1", "GPU 0;"),  # this machine has no GPU
    ("{cpu: 3}", ["--num-cpus", "2"], "resources.cpu=3", "cluster: CPU 2,"),  # an instance of 2 CPUs
])
def test_resources_no_node_can_hold_are_refused_before_any_trial(tmp_path, resources, flags, key, has):
    if "gpu" in key and pytest.importorskip("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    path = tiny_sweep(tmp_path, resources)
    result = cli(path, f"out_dir={tmp_path}", *flags, timeout=300)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: {key} in {path}: ")
    assert has in line and "no trial was started" in line
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.yaml"]  # no study or trial directory
