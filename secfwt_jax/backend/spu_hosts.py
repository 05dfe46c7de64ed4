"""How the SPU parties are hosted: threads over in-memory links (sim) or OS processes over
brpc links (mp), with log capture for the cost profiles and the party-fault handling described
in spu_backend's docstring. Split out of spu_backend.py; only the SPU backend imports it.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.connection
import os
import queue
import shutil
import signal
import socket
import tempfile
import threading
import time

from spu import libspu

from .common import BackendError, next_uid
from .cost import parse_party_log, parse_shared_log
from .spu_party import PartyRuntime, party_config, party_main, share_from_parts, share_to_parts

START_TIMEOUT_S = 60.0  # mp: starting the processes and connecting the mesh, at least
LINK_TIMEOUT_S = 3600.0  # mp: the brpc links' receive timeout, at least
# mp: the model-owner process loads a checkpoint (GBs) and, on the planted task, makes the task
# with forward passes; its death is noticed at once, this bounds only a hung owner
OWNER_TIMEOUT_S = 900.0


class PartyError(BackendError):
    """A party process died, raised, or stopped answering; the message names it and the cause.
    All party processes of the backend have been ended when this is raised."""


# ---------------------------------------------------------------------------------------------
# Log capture. SPU logs through one process-wide logger; the controller points it at a file
# once and reads back what each call appended.

_LOG_LOCK = threading.Lock()
_SIM_LOCK = threading.Lock()
_LOG_STATE: dict = {"path": None}


def _controller_log() -> str:
    with _LOG_LOCK:
        if _LOG_STATE["path"] is None:
            d = tempfile.mkdtemp(prefix="secfwt-spu-")
            atexit.register(shutil.rmtree, d, True)
            path = os.path.join(d, "controller.log")
            opts = libspu.logging.LogOptions()
            opts.system_log_path = path
            opts.enable_console_logger = False
            libspu.logging.setup_logging(opts)
            _LOG_STATE["path"] = path
        return _LOG_STATE["path"]


def _log_size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0


def _read_since(path: str, offset: int, n_links: int, wait_s: float = 5.0) -> str:
    """Text appended after `offset`, waiting briefly until it holds n 'Link details' lines."""
    deadline = time.time() + wait_s
    while True:
        if _log_size(path) < offset:  # truncated or rotated meanwhile
            offset = 0
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        if text.count("Link details") >= n_links or time.time() > deadline:
            return text
        time.sleep(0.01)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# The two ways of hosting the parties. Both expose: set(items_per_party), load(exe_id, code),
# run(exe_id, name, in_names, out_names) -> (profiles, party_order, notes, truncation_parties),
# get(names) -> shares per party, delete(names), close().


def _run_threads(target, n: int, what: str):
    results, errors = [None] * n, [None] * n
    finished: queue.SimpleQueue = queue.SimpleQueue()

    def work(r):
        try:
            results[r] = target(r)
        except BaseException as e:  # noqa: B036 - re-raised below with the party named
            errors[r] = e
        finished.put(r)

    for r in range(n):
        threading.Thread(target=work, args=(r,), name=f"spu-party-{r}", daemon=True).start()
    for _ in range(n):
        # The first failure is reported at once; the other parties, blocked on a message that
        # will not come, end by their links' receive timeout (the backend is closed by then).
        if errors[finished.get()] is not None:
            break
    for r, e in enumerate(errors):
        if e is not None:
            raise PartyError(f"party {r} failed during {what}: {type(e).__name__}: {e}") from e
    return results


class SimParties:
    """n parties as threads of this process over in-memory links (sim mode).

    Profiling: every party prints its HLO profile, party 0 also its HAL/MPC profile, which is
    what lets parse_shared_log tell party 0's link totals from the others'.
    """

    mode = "sim"

    def __init__(self, n: int, config, timeout_s: float):
        self.n = n
        self.log_path = _controller_log()
        desc = libspu.link.Desc()
        desc.id = f"secfwt-sim-{next_uid()}-{os.getpid()}"
        desc.recv_timeout_ms = int(timeout_s * 1000)
        for r in range(n):
            desc.add_party(f"party{r}", f"thread_{r}")

        def make(r):
            lctx = libspu.link.create_mem(desc, r)
            return PartyRuntime(r, lctx, party_config(config, r, True, r == 0))

        self.parties = _run_threads(make, n, "start")

    def set(self, items_per_party) -> None:
        for party, items in zip(self.parties, items_per_party):
            party.set(items)

    def load(self, exe_id: int, code: bytes) -> None:
        for party in self.parties:
            party.load(exe_id, code)

    def run(self, exe_id, name, in_names, out_names):
        with _SIM_LOCK:
            offset = _log_size(self.log_path)
            _run_threads(
                lambda r: self.parties[r].run(exe_id, f"{name}.r{r}", in_names, out_names),
                self.n, f"run of {name}",
            )
            text = _read_since(self.log_path, offset, self.n)
            os.truncate(self.log_path, 0)  # the logger appends (O_APPEND): keep the file small
        profiles, order, notes = parse_shared_log(text, self.n)
        return profiles, order, notes, (0,)

    def get(self, names):
        return [party.get(names) for party in self.parties]

    def delete(self, names) -> None:
        for party in self.parties:
            party.delete(names)

    def close(self) -> None:
        self.parties = []


def _exit_cause(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def wait_for_owner(owner_proc, owner_conn, what: str, timeout_s: float, fail):
    """The model-owner process's reply payload (spu_owner.model_owner_main); fail(message)
    (which raises) when it dies, raises or is not done within timeout_s."""
    deadline = time.time() + timeout_s
    while not owner_conn.poll(0.2):
        if not owner_proc.is_alive() and not owner_conn.poll(0.1):
            fail(f"the model owner (pid {owner_proc.pid}) died during {what}: "
                 f"{_exit_cause(owner_proc.exitcode)}")
        if time.time() > deadline:
            owner_proc.kill()
            fail(f"the model owner did not finish {what} within {timeout_s:.0f} s")
    status, payload = owner_conn.recv()
    owner_proc.join(5.0)
    if status == "party_error":  # a party failed while the owner sent it its shares
        fail(payload)
    if status == "error":
        fail(f"the model owner raised during {what}:\n{payload}")
    return payload


class ProcParties:
    """n parties as OS processes over brpc links (mp mode); see the module docstring."""

    mode = "mp"

    def __init__(self, n: int, config, timeout_s: float, addresses: list[str] | None = None,
                 tls: dict | None = None, ranks: list[int] | None = None, cancel=None,
                 start_timeout_s: float | None = None):
        """ranks: the parties this object starts (default all n; a party server starts its
        own one, the others run elsewhere at `addresses`); local index i is party ranks[i].
        cancel: a threading.Event; once set, a pending wait fails (a session abort).
        start_timeout_s: the bound on starting and connecting (None: max(timeout_s, 60))."""
        if addresses is None:
            addresses = [f"127.0.0.1:{_free_port()}" for _ in range(n)]
        if len(addresses) != n:
            raise ValueError(f"{len(addresses)} party addresses given for {n} parties: {addresses}")
        self.ranks = list(range(n)) if ranks is None else list(ranks)
        self.cancel = cancel
        self.timeout_s, self.addresses = timeout_s, list(addresses)
        self.n = len(self.ranks)  # the local parties; messages and replies are indexed by them
        # The heartbeat judges silence (timeout_s). The links' own receive timeout only backs
        # it up (a party that raised or died is handled at once), so it is generous: a peer
        # may compute for minutes between two messages on a large model.
        self.start_timeout_s = (max(timeout_s, START_TIMEOUT_S) if start_timeout_s is None
                                else float(start_timeout_s))
        self.link_timeout_s = max(timeout_s, LINK_TIMEOUT_S)
        self.log_dir = tempfile.mkdtemp(prefix="secfwt-spu-mp-")
        ctx = multiprocessing.get_context("spawn")
        self.procs, self.conns, self.stamps = [], [], []
        # one one-way pipe per party from a separate model-owner process (adopt_from_owner):
        # party r reads its weight shares there; this process keeps only the unused send ends
        self.owner_send_ends = []
        self.closed = False
        config_bytes = config.SerializeToString()
        for r in self.ranks:
            parent, child = ctx.Pipe()
            owner_recv, owner_send = ctx.Pipe(duplex=False)
            stamp = ctx.Value("d", 0.0, lock=False)  # 0: not started (start_timeout_s applies)
            cfg = libspu.RuntimeConfig()
            cfg.ParseFromString(config_bytes)
            cfg = party_config(cfg, r, True, True)
            proc = ctx.Process(
                target=party_main, name=f"spu-party-{r}", daemon=True,
                args=(r, self.addresses, cfg.SerializeToString(),
                      os.path.join(self.log_dir, f"party{r}.log"), child, stamp, os.getpid(),
                      int(self.link_timeout_s * 1000), self.start_timeout_s, owner_recv, tls),
            )
            proc.start()
            child.close()
            owner_recv.close()
            self.owner_send_ends.append(owner_send)
            self.procs.append(proc)
            self.conns.append(parent)
            self.stamps.append(stamp)
        self.pids = self._collect(range(self.n), "start",
                                  deadline=time.time() + self.start_timeout_s)

    @property
    def party_pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def _who(self, r: int) -> str:
        return f"party {self.ranks[r]} (pid {self.procs[r].pid})"

    def _fail(self, message: str):
        self.close(force=True)
        raise PartyError(message)

    def _send_all(self, msgs, what: str) -> list:
        """Send msgs[r] to party r from background threads, so that a party that stopped
        reading (a full pipe) cannot block the controller past the heartbeat check."""
        errors: list = [None] * self.n

        def send(r):
            try:
                self.conns[r].send(msgs[r])
            except (OSError, EOFError, ValueError) as e:
                errors[r] = e

        threads = [threading.Thread(target=send, args=(r,), daemon=True) for r in range(self.n)]
        for t in threads:
            t.start()
        return errors

    def _collect(self, ranks, what: str, send_errors=None, deadline=None) -> list:
        """Wait for the replies of `ranks`; raise PartyError on the first death, error,
        silence longer than timeout_s (judged by the heartbeat stamps) or passed deadline."""
        send_errors = send_errors or [None] * self.n
        pending = set(ranks)
        replies = [None] * self.n
        sentinels = {p.sentinel: r for r, p in enumerate(self.procs)}
        conns = {id(c): r for r, c in enumerate(self.conns)}
        while pending:
            waitables = [self.conns[r] for r in pending] + list(sentinels)
            for obj in multiprocessing.connection.wait(waitables, timeout=0.2):
                if id(obj) in conns:
                    r = conns[id(obj)]
                    try:
                        status, payload = obj.recv()
                    except (EOFError, OSError):
                        self.procs[r].join(0.5)
                        self._fail(
                            f"{self._who(r)} died during {what}: "
                            f"{_exit_cause(self.procs[r].exitcode)}"
                        )
                    if status == "error":
                        self._fail(f"party {self.ranks[r]} raised during {what}:\n{payload}")
                    replies[r] = payload
                    pending.discard(r)
                else:
                    r = sentinels[obj]
                    if r in pending and self.conns[r].poll():
                        continue  # its last reply is still in the pipe: read it first
                    self.procs[r].join(0.1)
                    self._fail(
                        f"{self._who(r)} died during {what}: "
                        f"{_exit_cause(self.procs[r].exitcode)}"
                    )
            for r, e in enumerate(send_errors):
                if e is not None:
                    self.procs[r].join(0.5)
                    self._fail(
                        f"{self._who(r)} is unreachable during {what}: "
                        f"{_exit_cause(self.procs[r].exitcode)} ({type(e).__name__}: {e})"
                    )
            if self.cancel is not None and self.cancel.is_set():
                self._fail(f"{what} aborted (the session was ended)")
            now = time.time()
            if deadline is not None and now > deadline and pending:
                self._fail(
                    f"parties {[self.ranks[i] for i in sorted(pending)]} did not finish {what} "
                    f"within "
                    f"{self.start_timeout_s:.0f} s"
                )
            for r in range(self.n):
                stamp = self.stamps[r].value
                silent = now - stamp
                if stamp > 0 and silent > self.timeout_s:
                    self._fail(
                        f"{self._who(r)} stopped answering during {what}: "
                        f"no heartbeat for {silent:.1f} s (timeout_s={self.timeout_s})"
                    )
        return replies

    def _request(self, msgs, what: str) -> list:
        if self.closed:
            raise PartyError(f"the party processes are gone; cannot {what}")
        send_errors = self._send_all(msgs, what)
        return self._collect(range(self.n), what, send_errors)

    def set(self, items_per_party) -> None:
        msgs = [
            ("set", [(name, *share_to_parts(s)) for name, s in items]) for items in items_per_party
        ]
        self._request(msgs, "set")

    def load(self, exe_id: int, code: bytes) -> None:
        self._request([("load", (exe_id, code))] * self.n, "load")

    def run(self, exe_id, name, in_names, out_names):
        msgs = [("run", (exe_id, f"{name}.r{r}", in_names, out_names)) for r in range(self.n)]
        texts = self._request(msgs, f"run of {name}")
        profiles = [parse_party_log(t) for t in texts]
        return profiles, "exact", [], tuple(range(self.n))

    def get(self, names):
        replies = self._request([("get", list(names))] * self.n, "get")
        return [[share_from_parts(m, c) for m, c in rep] for rep in replies]

    def delete(self, names) -> None:
        self._request([("delete", list(names))] * self.n, "delete")

    def adopt_from_owner(self, owner_proc, owner_conn, what: str):
        """Have every party read its shares from the model-owner process `owner_proc` (spawned
        with owner_send_ends) and set them; returns the owner's reply payload. A failure of the
        owner or a party raises PartyError and ends every process."""
        for end in self.owner_send_ends:
            end.close()  # the owner process has its copies; this process never writes
        self.owner_send_ends = []
        timeout_s = max(self.timeout_s, OWNER_TIMEOUT_S)
        send_errors = self._send_all([("adopt", timeout_s)] * self.n, what)
        payload = wait_for_owner(owner_proc, owner_conn, what, timeout_s, self._fail)
        self._collect(range(self.n), what, send_errors)
        return payload

    def close(self, force: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if not force:
            for r, conn in enumerate(self.conns):
                if self.procs[r].is_alive():
                    try:
                        conn.send(("stop", None))
                    except OSError:
                        pass
            for p in self.procs:
                p.join(2.0)
        for p in self.procs:  # SIGKILL: a stopped (SIGSTOP) process ignores SIGTERM
            if p.is_alive():
                p.kill()
        for p in self.procs:
            p.join(5.0)
        for c in self.conns:
            c.close()
        shutil.rmtree(self.log_dir, ignore_errors=True)
