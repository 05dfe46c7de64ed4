"""Party servers on separate hosts (issue 12, item 5), tested on one machine: three servers
started as separate commands (`python -m secfwt_jax.party --cluster FILE --rank R`) on
different ports, which is the code path of separate hosts. A full tiny tuning run through
run.py with protocol.cluster (TLS on); a party that never comes up; a party killed mid-run."""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings

import pytest
import yaml

from secfwt_jax.party_cluster import InsecureClusterWarning, load_cluster
from secfwt_jax.party_rpc import call, open_channel, pack, unpack

ROOT = pathlib.Path(__file__).resolve().parent.parent
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def free_ports(k: int) -> list[int]:
    socks = [socket.socket() for _ in range(k)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def certs(out: pathlib.Path) -> dict:
    subprocess.run(["bash", str(ROOT / "experiments" / "make_certs.sh"), str(out)], check=True,
                   capture_output=True, timeout=60)
    return {"ca": str(out / "ca.pem"), "cert": str(out / "party.pem"),
            "key": str(out / "party.key")}


def write_cluster(path: pathlib.Path, n=3, tls=None, host="127.0.0.1", timeout=20, **extra):
    ports = free_ports(2 * n)
    doc = {"parties": [{"host": host, "control_port": ports[2 * r],
                        "link_port": ports[2 * r + 1]} for r in range(n)],
           "connect_timeout_s": timeout, **extra}
    if tls:
        doc["tls"] = tls
    path.write_text(yaml.safe_dump(doc))
    return path


class Servers:
    """Party servers as separate OS commands; stop() ends the ones still running."""

    def __init__(self, cluster: pathlib.Path, ranks, log_dir: pathlib.Path):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.cluster = load_cluster(str(cluster))
        self.procs, self.logs = {}, {}
        for r in ranks:
            self.logs[r] = log_dir / f"server{r}.log"
            self.procs[r] = subprocess.Popen(
                [sys.executable, "-m", "secfwt_jax.party", "--cluster", str(cluster),
                 "--rank", str(r)], env=env, stdout=subprocess.DEVNULL,
                stderr=open(self.logs[r], "w"))
        deadline = time.time() + 120
        for r in ranks:
            while "listening on" not in self.logs[r].read_text():
                assert self.procs[r].poll() is None, self.logs[r].read_text()
                assert time.time() < deadline, f"server {r} did not start"
                time.sleep(0.2)

    def status(self, r: int) -> dict:
        p = self.cluster.parties[r]
        with open_channel(p.control, p.tls) as ch:
            reply = call(ch, "Status", {}, 10)
        assert reply["ok"], reply
        return reply["result"]

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def running(pid: int) -> bool:
    """Whether pid is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def run_py(cluster, run_dir, *extra, popen=False):
    cmd = [sys.executable, str(ROOT / "experiments" / "run.py"), "protocol=aby3",
           f"protocol.cluster={cluster}", "protocol.timeout_s=20", "eval_every=0",
           "progress=false", f"hydra.run.dir={run_dir}", *extra]
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)


# -- no spu, no servers ----------------------------------------------------------------------


def test_messages_round_trip_without_pickle():
    msg = {"cmd": "set", "payload": [("v0", b"\x00meta", [b"a" * 10, b""])], "x": [1, 2.5, None]}
    assert unpack(pack(msg)) == {"cmd": "set", "payload": [["v0", b"\x00meta", [b"a" * 10, b""]]],
                                 "x": [1, 2.5, None]}
    with pytest.raises(TypeError, match="cannot send a object"):
        pack({"f": object()})


def test_the_cluster_file_is_checked_and_remote_hosts_need_tls(tmp_path):
    remote = write_cluster(tmp_path / "remote.yaml", host="10.0.0.7")
    with pytest.raises(ValueError, match=r"hosts \['10.0.0.7'.*not loopback, so TLS is required"):
        load_cluster(str(remote))
    insecure = write_cluster(tmp_path / "insecure.yaml", host="10.0.0.7", insecure=True)
    with pytest.warns(InsecureClusterWarning, match="in the clear"):
        assert not load_cluster(str(insecure)).tls
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loopback without TLS: no warning
        assert len(load_cluster(str(write_cluster(tmp_path / "lo.yaml"))).parties) == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("parties: [{host: 127.0.0.1, control_port: 70000, link_port: 1}, "
                   "{host: 127.0.0.1, control_port: 2, link_port: 3}]\n")
    with pytest.raises(ValueError, match=r"parties\[0\]: control_port must be a port number"):
        load_cluster(str(bad))
    bad.write_text("parties: []\nhosts: 3\n")
    with pytest.raises(ValueError, match=r"unknown keys \['hosts'\]"):
        load_cluster(str(bad))
    tls = write_cluster(tmp_path / "tls.yaml", tls={"ca": "x.pem", "cert": "y", "key": "z"})
    with pytest.raises(ValueError, match=r"tls.ca = 'x.pem' is not a file.*make_certs.sh"):
        load_cluster(str(tls))
    from secfwt_jax.backend import make_backend

    two = write_cluster(tmp_path / "two.yaml", n=2)
    with pytest.raises(ValueError, match="lists 2 parties; aby3 needs 3"):
        make_backend("aby3", mode="mp", cluster=str(two))
    with pytest.raises(ValueError, match="cluster needs mode='mp'"):
        make_backend("semi2k", dealer="trusted_first_party", cluster=str(two))


# -- with servers ----------------------------------------------------------------------------


@needs_openssl
@pytest.mark.slow
def test_a_party_that_never_comes_up_is_a_clear_error_within_the_timeout(tmp_path):
    from secfwt_jax.backend import BackendError, make_backend

    tls = certs(tmp_path / "certs")
    cluster = write_cluster(tmp_path / "cluster.yaml", tls=tls, timeout=4)
    servers = Servers(cluster, [0, 1], tmp_path)  # rank 2 is never started
    try:
        t0 = time.time()
        address = servers.cluster.parties[2].control
        with pytest.raises(BackendError, match=f"party 2 at {address} did not answer on its "
                                             r"control channel within 4 s.*--rank 2"):
            make_backend("aby3", mode="mp", cluster=str(cluster), timeout_s=10)
        assert time.time() - t0 < 4 + 10
        assert servers.status(0)["session"] is None and servers.status(1)["session"] is None
        # a data owner whose certificate another CA signed is refused by the servers
        other = certs(tmp_path / "other")
        doc = yaml.safe_load(cluster.read_text())
        doc["tls"] = other
        (tmp_path / "other.yaml").write_text(yaml.safe_dump(doc))
        with pytest.raises(BackendError, match="party 0 at .* did not answer.*check its cert"):
            make_backend("aby3", mode="mp", cluster=str(tmp_path / "other.yaml"), timeout_s=10)
        assert all(p.poll() is None for p in servers.procs.values())  # servers live on
    finally:
        servers.stop()


@needs_openssl
@pytest.mark.slow
def test_a_tiny_tuning_run_through_three_party_servers_with_tls(tmp_path):
    cluster = write_cluster(tmp_path / "cluster.yaml", tls=certs(tmp_path / "certs"))
    servers = Servers(cluster, [0, 1, 2], tmp_path)
    try:
        out = run_py(cluster, tmp_path / "run", "budget=6")
        assert out.returncode == 0, out.stderr[-3000:]
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["generations"] == 1 and summary["tls_links"] is True
        assert summary["cluster"] == str(cluster) and summary["model_owner"] == "own process"
        assert summary["bytes_total"] > 0
        for r in range(3):  # each server served the session and ended it
            log = servers.logs[r].read_text()
            assert "joined the mesh" in log and "closed by the data owner" in log, log
            assert servers.status(r)["session"] is None
    finally:
        servers.stop()


@needs_openssl
@pytest.mark.slow
def test_a_party_killed_mid_run_is_a_clear_error_and_nothing_is_left_running(tmp_path):
    cluster = write_cluster(tmp_path / "cluster.yaml", tls=certs(tmp_path / "certs"))
    servers = Servers(cluster, [0, 1, 2], tmp_path)
    run_dir = tmp_path / "run"
    proc = run_py(cluster, run_dir, "budget=600", popen=True)
    try:
        deadline = time.time() + 400
        while not (run_dir / "metrics.jsonl").exists():  # tuning has started
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() < deadline, "the run did not reach its first generation"
            time.sleep(0.5)
        pids = [pid for r in range(3) for pid in servers.status(r)["party_pids"]]
        assert len(pids) == 3 and all(running(p) for p in pids)
        servers.procs[2].kill()  # the host of party 2 goes down
        t0 = time.time()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode != 0
        address = servers.cluster.parties[2].control
        assert f"PartyError: party 2 at {address} failed" in err, err[-3000:]
        assert time.time() - t0 < 60
        deadline = time.time() + 30  # the other servers abort the session at once
        while any(running(p) for p in pids) and time.time() < deadline:
            time.sleep(0.2)
        assert not [p for p in pids if running(p)]
        for r in (0, 1):  # long-lived: alive, the session ended, waiting for the next one
            assert servers.procs[r].poll() is None
            assert servers.status(r)["session"] is None
            assert "ended" in servers.logs[r].read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        servers.stop()
