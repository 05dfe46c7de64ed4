"""Party servers on separate hosts (issue 12, item 5), tested on one machine: three servers
started as separate commands (`python -m secfwt_jax.party --cluster FILE --rank R`) on
different ports, which is the code path of separate hosts. A full tiny tuning run through
run.py with protocol.cluster (TLS on); a party that never comes up; a party killed mid-run."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import warnings

import pytest
import yaml
from certs import certs  # tests/certs.py

from secfwt_jax.party import start_servers, stop_servers
from secfwt_jax.party_cluster import InsecureClusterWarning, load_cluster, write_local_cluster
from secfwt_jax.party_rpc import call, open_channel, pack, unpack

ROOT = pathlib.Path(__file__).resolve().parent.parent
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def per_host_certs(out: pathlib.Path, n=3) -> tuple[dict, list[dict]]:
    """make_certs.sh --per-host: (the data owner's tls, each party's own {cert, key})."""
    subprocess.run(["bash", str(ROOT / "experiments" / "make_certs.sh"), "--per-host", str(out),
                    *["127.0.0.1"] * n], check=True, capture_output=True, timeout=60)
    return ({"ca": str(out / "ca.pem"), "cert": str(out / "owner.pem"),
             "key": str(out / "owner.key")},
            [{"cert": str(out / f"party{r}.pem"), "key": str(out / f"party{r}.key")}
             for r in range(n)])


def write_cluster(path: pathlib.Path, n=3, tls=None, host="127.0.0.1", timeout=20,
                  own=None, **extra) -> pathlib.Path:
    write_local_cluster(str(path), n, tls, own, host, timeout, **extra)
    return path


class Servers:
    """Party servers as separate OS commands (party.start_servers); stop() ends them."""

    def __init__(self, cluster: pathlib.Path, ranks, log_dir: pathlib.Path):
        self.cluster = load_cluster(str(cluster))
        started = start_servers(str(cluster), ranks, str(log_dir))
        self.started = started
        self.procs = {r: proc for r, (proc, _) in started.items()}
        self.logs = {r: pathlib.Path(log) for r, (_, log) in started.items()}

    def status(self, r: int) -> dict:
        p = self.cluster.parties[r]
        with open_channel(p.control, self.cluster.client_tls) as ch:
            reply = call(ch, "Status", {}, 10)
        assert reply["ok"], reply
        return reply["result"]

    def stop(self):
        stop_servers(self.started)


def running(pid: int) -> bool:
    """Whether pid is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def still_running(pids, wait_s: float = 30) -> list[int]:
    """The pids still alive after waiting up to wait_s for all of them to end."""
    deadline = time.time() + wait_s
    while any(running(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    return [p for p in pids if running(p)]


def log_says(path, text: str, wait_s: float = 15) -> bool:
    """Whether the log file at path holds text within wait_s seconds."""
    deadline = time.time() + wait_s
    while text not in path.read_text() and time.time() < deadline:
        time.sleep(0.2)
    return text in path.read_text()


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
    with pytest.raises(ValueError, match=r"tls.ca = '.*x.pem' is not a file.*make_certs.sh"):
        load_cluster(str(tls))
    if shutil.which("openssl"):  # per-host certificates: a server needs only its own key
        owner, own = per_host_certs(tmp_path / "ph")
        per_host = write_cluster(tmp_path / "ph.yaml", tls=owner, own=own)
        os.remove(own[0]["key"])
        assert load_cluster(str(per_host), rank=1).parties[1].tls["cert"] == own[1]["cert"]
        with pytest.raises(ValueError, match=r"party 0: tls.key = .*party0.key' is not a file"):
            load_cluster(str(per_host), rank=0)
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
    owner, own = per_host_certs(tmp_path / "certs")  # each party its own key
    cluster = write_cluster(tmp_path / "cluster.yaml", tls=owner, own=own)
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
        assert not still_running(pids)  # the other servers abort the session at once
        for r in (0, 1):  # long-lived: alive, the session ended, waiting for the next one
            assert servers.procs[r].poll() is None
            assert servers.status(r)["session"] is None
            assert log_says(servers.logs[r], "ended")
    finally:
        if proc.poll() is None:
            proc.kill()
        servers.stop()


@pytest.mark.slow
def test_a_data_owner_that_dies_ends_the_servers_sessions(tmp_path):
    """The servers are long-lived: when the data owner's process dies (SIGKILL, nothing sent),
    each ends its session and party process and waits for the next one."""
    cluster = write_cluster(tmp_path / "cluster.yaml")
    servers = Servers(cluster, [0, 1, 2], tmp_path)
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from secfwt_jax.backend import make_backend; "
         f"be = make_backend('aby3', mode='mp', cluster={str(cluster)!r}, timeout_s=20); "
         "print('open', flush=True); time.sleep(600)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        for line in owner.stdout:  # SPU logs to stdout too; ends (EOF) if the owner fails
            if line.strip() == "open":
                break
        assert owner.poll() is None
        pids = [pid for r in range(3) for pid in servers.status(r)["party_pids"]]
        assert len(pids) == 3 and all(running(p) for p in pids)
        owner.kill()
        owner.wait(10)
        assert not still_running(pids)
        for r in range(3):
            assert servers.status(r)["session"] is None
            # the server logs the end after its party process is gone (pids above): allow it
            # the moment to write the line on a loaded machine
            assert log_says(servers.logs[r], "the data owner's connection closed")
    finally:
        if owner.poll() is None:
            owner.kill()
        servers.stop()


def test_the_model_owner_sends_its_shares_in_bounded_messages(monkeypatch):
    """RemoteShareSink splits a party's shares into messages of at most BATCH_BYTES (gRPC
    refuses messages over 2 GiB; a roberta-base share set is larger)."""
    from concurrent import futures

    import grpc

    pytest.importorskip("spu")
    from secfwt_jax.backend import spu_remote
    from secfwt_jax.party_rpc import handler

    got = []
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers([handler({
        "Call": lambda req, ctx: got.append(req) or {"ok": True, "result": len(req["payload"])}
    })])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setattr(spu_remote, "BATCH_BYTES", 1100)
        items = [(f"m0_{i}", b"m" * 10, [b"x" * 400, b"y" * 100]) for i in range(5)]
        spu_remote.RemoteShareSink(f"127.0.0.1:{port}", None, "s1", 0, 10).send(items)
    finally:
        server.stop(0)
    assert [len(r["payload"]) for r in got] == [2, 2, 1]  # 510 bytes each, <= 1100 a message
    assert [tuple(i) for r in got for i in r["payload"]] == [
        (n, m, list(c)) for n, m, c in items]
    assert {r["session"] for r in got} == {"s1"} and {r["cmd"] for r in got} == {"set"}


def test_a_party_down_during_the_model_owners_put_is_named():
    """The model owner sends a party server that is down (nothing listens on its port): the
    error names the party and its address (PartyError, reported to the data owner as it is,
    not as the model owner's traceback)."""
    import multiprocessing
    import socket

    pytest.importorskip("spu")
    from secfwt_jax.backend import spu_hosts, spu_remote

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    sink = spu_remote.RemoteShareSink(address, None, "s1", 2, 5)
    with pytest.raises(spu_hosts.PartyError,
                       match=f"party 2 at {address} failed during the model owner's put: "):
        sink.send([("m0_0", b"m", [b"x"])])
    # the controller reports the owner's "party_error" reply as the message itself
    ours, theirs = multiprocessing.Pipe()
    theirs.send(("party_error", f"party 2 at {address} failed during the model owner's put"))

    def fail(message):
        raise spu_hosts.PartyError(message)

    class Owner:  # the (finished) model-owner process, as wait_for_owner sees it
        pid = 0

        def is_alive(self):
            return False

        def join(self, timeout=None):
            pass

    with pytest.raises(spu_hosts.PartyError, match=r"^party 2 at .* failed during the model"):
        spu_hosts.wait_for_owner(Owner(), ours, "put", 5, fail)


@pytest.mark.slow
def test_a_server_killed_before_the_model_owners_put_leaves_no_party_process(tmp_path):
    """Party 2's server dies (SIGKILL) after the mesh joined, before the model owner sends the
    weight shares: the put fails naming party 2, and party 2's own party process ends at once
    (it used to wait for its peers' goodbye, which never came, until the links' receive timeout
    of an hour; docs/backend.md, "Faults and timeouts")."""
    import numpy as np

    from secfwt_jax.backend import make_backend
    from secfwt_jax.backend.spu_hosts import PartyError

    cluster = write_cluster(tmp_path / "cluster.yaml")
    servers = Servers(cluster, [0, 1, 2], tmp_path)
    be = make_backend("aby3", mode="mp", cluster=str(cluster), timeout_s=20)
    try:
        pids = [pid for r in range(3) for pid in servers.status(r)["party_pids"]]
        assert len(pids) == 3 and all(running(p) for p in pids)
        servers.procs[2].kill()
        servers.procs[2].wait(10)
        params = {f"w{i}": np.ones((256, 256), np.float32) for i in range(8)}
        with pytest.raises(PartyError, match="party 2 at "):
            be.put(params, owner="model")
        assert not still_running(pids, wait_s=10)
    finally:
        be.close()
        servers.stop()
