"""A compute party's server, started once per host (issue 12):

    python -m secfwt_jax.party --cluster cluster.yaml --rank R

It listens for the data owner on its control port (gRPC, secfwt_jax/party_rpc.py; mutual TLS
when the cluster file has certificates) and serves one session at a time. A session (opened by
a run with `protocol.cluster=cluster.yaml`) is one SPU party process (spu_hosts.ProcParties with
this rank only) that joins the mesh of the other hosts' parties on the link ports, keeps its
weight shares across calls and runs the commands set / load / run / get / delete.

A session ends when the data owner closes it, when it asks for an abort (another party failed),
when the party process dies, raises or stops answering (its heartbeat), or when the data
owner's Watch call ends (its process died or its connection was lost); the server then ends the
party process and waits for the next session. The server itself runs until SIGINT / SIGTERM.
It never loads weights or data: it holds shares only.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

from .party_cluster import Cluster, load_cluster
from .party_rpc import SERVER_OPTIONS, add_port, handler

COMMANDS = ("set", "load", "run", "get", "delete")
WORKERS = 16  # Watch holds one; aborts must be served while a long command runs


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Session:
    def __init__(self, sid: str, timeout_s: float):
        self.id, self.timeout_s = sid, timeout_s
        self.cancel = threading.Event()
        self.parties = None  # ProcParties once started
        self.lock = threading.Lock()  # one command at a time


class PartyServer:
    """The gRPC methods of one party server (see party_rpc for the wire format)."""

    def __init__(self, cluster: Cluster, rank: int):
        self.cluster, self.rank = cluster, rank
        self.me = cluster.parties[rank]
        self.session: Session | None = None
        self.lock = threading.Lock()  # guards self.session

    # -- gRPC methods; each returns {"ok": ..., "result" | "error": ...} --------------------

    def open(self, req, ctx=None):
        if req.get("fingerprint") != self.cluster.fingerprint():
            return _error(f"party {self.rank}: the data owner's cluster file differs from this "
                          f"server's ({self.cluster.path}); both must list the same hosts, "
                          "ports and TLS setting")
        with self.lock:
            if self.session is not None:
                return _error(f"party {self.rank} is busy with session {self.session.id[:8]}")
            sess = self.session = Session(req["session"], float(req["timeout_s"]))
        log(f"session {sess.id[:8]}: starting party {self.rank}")
        try:
            from .backend.spu_remote import start_session_party

            sess.parties = start_session_party(
                int(req["n"]), self.rank, req["config"], [p.link for p in self.cluster.parties],
                sess.timeout_s, self.me.tls, sess.cancel)
        except Exception as e:  # noqa: BLE001 - reported to the data owner
            self.end(sess.id, f"start failed: {e}")
            return _error(f"party {self.rank}: {type(e).__name__}: {e}")
        if sess.cancel.is_set():
            self.end(sess.id, "aborted during start")
            return _error(f"party {self.rank}: the session was aborted during start")
        log(f"session {sess.id[:8]}: party process {sess.parties.pids[0]} joined the mesh")
        return {"ok": True, "result": {"pid": sess.parties.pids[0]}}

    def command(self, req, ctx=None):
        sess = self._session(req)
        if sess is None or sess.parties is None:
            return _error(f"party {self.rank} has no open session {req.get('session', '')[:8]}")
        cmd = req.get("cmd")
        if cmd not in COMMANDS:
            return _error(f"unknown command {cmd!r}; accepted: {', '.join(COMMANDS)}")
        try:
            with sess.lock:
                result = sess.parties._request([(cmd, req["payload"])], cmd)[0]
        except Exception as e:  # noqa: BLE001 - the session is over; say why
            self.end(sess.id, f"{cmd} failed")
            return _error(f"party {self.rank}: {e}")
        return {"ok": True, "result": result}

    def watch(self, req, ctx):
        """Held open by the data owner for the session; when it ends from the data owner's
        side (its process died, its connection was lost: gRPC keepalive), so does the
        session. Returns when the session ends."""
        sess = self._session(req)
        if sess is None:
            return _error(f"party {self.rank} has no session {req.get('session', '')[:8]}")
        gone = threading.Event()
        ctx.add_callback(gone.set)  # runs when the call terminates: cancelled, peer gone
        while not gone.wait(0.5):
            if self.session is not sess:
                return {"ok": True, "result": None}
        self.end(sess.id, "the data owner's connection closed")
        return {"ok": True, "result": None}

    def abort(self, req, ctx=None):
        self.end(req.get("session"), req.get("reason", "aborted"), bool(req.get("graceful")))
        return {"ok": True, "result": None}

    def status(self, req, ctx=None):
        sess = self.session
        pids = sess.parties.party_pids if sess and sess.parties else []
        return {"ok": True, "result": {"rank": self.rank, "session": sess and sess.id,
                                       "party_pids": pids}}

    # -- sessions ---------------------------------------------------------------------------

    def _session(self, req) -> Session | None:
        sess = self.session
        return sess if sess is not None and sess.id == req.get("session") else None

    def end(self, sid, reason: str, graceful: bool = False) -> None:
        """End session sid (if it is the current one): its party process is ended."""
        with self.lock:
            sess = self.session
            if sess is None or sess.id != sid:
                return
            self.session = None
        sess.cancel.set()  # a pending wait on the party fails within 0.2 s and ends it
        if sess.parties is not None and sess.lock.acquire(timeout=2.0):
            try:
                sess.parties.close(force=not graceful)
            finally:
                sess.lock.release()
        log(f"session {sess.id[:8]} ended: {reason}; waiting for the next session")


def _error(text: str) -> dict:
    return {"ok": False, "error": text}


def serve(cluster: Cluster, rank: int, bind: str | None = None,
          stop: threading.Event | None = None) -> None:
    """Run the server until `stop` is set (SIGINT / SIGTERM set it from main)."""
    me = cluster.parties[rank]
    server_obj = PartyServer(cluster, rank)
    server = grpc.server(futures.ThreadPoolExecutor(WORKERS), options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers([handler({
        "Open": server_obj.open, "Call": server_obj.command, "Watch": server_obj.watch,
        "Abort": server_obj.abort, "Status": server_obj.status,
    })])
    address = f"{bind or me.host}:{me.control_port}"
    if not add_port(server, address, me.tls):
        raise OSError(f"party {rank}: cannot listen on {address} (in use?)")
    stop = stop or threading.Event()
    server.start()
    log(f"party {rank} of {len(cluster.parties)} listening on {address} "
        f"({'TLS' if me.tls else 'no TLS'}); SPU link on {me.link}")
    stop.wait()
    if server_obj.session is not None:
        server_obj.end(server_obj.session.id, "server stopped")
    server.stop(grace=1.0).wait(5.0)
    log(f"party {rank} stopped")


def start_servers(cluster_path: str, ranks, log_dir: str, timeout_s: float = 120.0) -> dict:
    """Start the party servers of `ranks` on this machine as separate commands (tests and
    benchmarks: the code path of separate hosts); returns {rank: (Popen, log path)} once each
    listens. Stop them with SIGTERM (stop_servers)."""
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    out = {}
    for r in ranks:
        log_path = os.path.join(log_dir, f"server{r}.log")
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "secfwt_jax.party", "--cluster", str(cluster_path),
                 "--rank", str(r)], env=env, stdout=subprocess.DEVNULL, stderr=log_file)
        out[r] = (proc, log_path)
    deadline = time.time() + timeout_s
    for r, (proc, log_path) in out.items():
        while "listening on" not in open(log_path).read():
            if proc.poll() is not None or time.time() > deadline:
                stop_servers(out)
                raise RuntimeError(f"party server {r} did not start:\n{open(log_path).read()}")
            time.sleep(0.2)
    return out


def stop_servers(servers: dict) -> None:
    """End the servers of start_servers (SIGTERM, then SIGKILL after 15 s)."""
    import subprocess

    for proc, _ in servers.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc, _ in servers.values():
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m secfwt_jax.party", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cluster", required=True, help="the cluster file (YAML)")
    ap.add_argument("--rank", required=True, type=int, help="this host's party rank")
    ap.add_argument("--bind", default=None,
                    help="address to listen on for the control channel (default: the host "
                         "of this rank in the cluster file; 0.0.0.0 for all interfaces)")
    args = ap.parse_args(argv)
    cluster = load_cluster(args.cluster, args.rank)
    if not 0 <= args.rank < len(cluster.parties):
        ap.error(f"--rank {args.rank} out of range: the cluster file lists ranks "
                 f"0..{len(cluster.parties) - 1}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve(cluster, args.rank, args.bind, stop)


if __name__ == "__main__":
    main()
