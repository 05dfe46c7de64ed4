"""The secure backend: one JAX function run under SPU (ABY3, SEMI2K, Cheetah, REF2K).

Roles (docs/backend.md): the controller in this process plays the model owner (it splits the
weights into shares once, in `put`) and the data owner (it splits each call's inputs into
shares, and reconstructs the revealed outputs). The parties only ever hold shares. Every input
is VIS_SECRET.

Modes
- "sim": the parties are threads of this process over SPU's in-memory links.
- "mp": one OS process per party ('spawn' start method) over SPU's brpc links, by default on
  free loopback ports (`addresses` makes them configurable). Each process is sent only its own
  shares. A party that dies, raises, or stops stamping its heartbeat for `timeout_s` seconds
  makes the call raise PartyError within that time, and every party process is ended.

Costs: both modes run the profile switches of SPU and parse its log (cost.py says how).
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing
import multiprocessing.connection
import os
import queue
import re
import shutil
import signal
import socket
import tempfile
import threading
import time

import jax
import numpy as np
from spu import api as spu_api
from spu import libspu
from spu.utils import frontend as spu_fe

from .common import (
    FIELD_BITS,
    PROTOCOL_PARTIES,
    BackendError,
    CompiledFunction,
    FlatArgs,
    Handle,
    count_put,
    new_counters,
    next_uid,
)
from .cost import CallCost, build_cost, parse_party_log, parse_shared_log
from .spu_party import PartyRuntime, party_config, party_main, share_from_parts, share_to_parts

SECRET = libspu.Visibility.VIS_SECRET
START_TIMEOUT_S = 60.0  # mp: starting the processes and connecting the mesh, at least
LINK_TIMEOUT_S = 3600.0  # mp: the brpc links' receive timeout, at least
SHARE_BATCH_BYTES = 256 * 2**20
_PROTOCOL_KINDS = {
    "aby3": libspu.ProtocolKind.ABY3, "semi2k": libspu.ProtocolKind.SEMI2K,
    "cheetah": libspu.ProtocolKind.CHEETAH, "ref2k": libspu.ProtocolKind.REF2K,
}
_FIELD_TYPES = {"FM64": libspu.FieldType.FM64, "FM128": libspu.FieldType.FM128}


class PartyError(BackendError):
    """A party process died, raised, or stopped answering; the message names it and the cause.
    All party processes of the backend have been ended when this is raised."""


def runtime_config(protocol: str, field: str, fraction_bits: int, options: dict | None = None):
    """SPU RuntimeConfig for a protocol name, a field name and fraction bits.

    options: extra RuntimeConfig attributes, e.g. {"fxp_exp_mode": "EXP_PRIME"}; enum values
    may be given by member name.
    """
    bits = FIELD_BITS[field]
    if not 0 < fraction_bits < bits // 2:
        raise ValueError(
            f"fraction_bits {fraction_bits} out of range for {field}: 1..{bits // 2 - 1}"
        )
    cfg = libspu.RuntimeConfig(
        protocol=_PROTOCOL_KINDS[protocol], field=_FIELD_TYPES[field],
        fxp_fraction_bits=fraction_bits,
    )
    for key, value in (options or {}).items():
        if not hasattr(cfg, key):
            raise ValueError(f"unknown RuntimeConfig option {key!r}")
        if isinstance(value, str):
            enum_type = type(getattr(cfg, key))
            if not hasattr(enum_type, value):
                members = [m for m in dir(enum_type) if m.isupper() or m[:1].isupper()]
                raise ValueError(
                    f"unknown value {value!r} for {key}; accepted: {', '.join(members)}"
                )
            value = getattr(enum_type, value)
        setattr(cfg, key, value)
    return cfg


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


class ProcParties:
    """n parties as OS processes over brpc links (mp mode); see the module docstring."""

    mode = "mp"

    def __init__(self, n: int, config, timeout_s: float, addresses: list[str] | None = None):
        if addresses is None:
            addresses = [f"127.0.0.1:{_free_port()}" for _ in range(n)]
        if len(addresses) != n:
            raise ValueError(f"{len(addresses)} party addresses given for {n} parties: {addresses}")
        self.n, self.timeout_s, self.addresses = n, timeout_s, list(addresses)
        # The heartbeat judges silence (timeout_s). The links' own receive timeout only backs
        # it up (a party that raised or died is handled at once), so it is generous: a peer
        # may compute for minutes between two messages on a large model.
        self.start_timeout_s = max(timeout_s, START_TIMEOUT_S)
        self.link_timeout_s = max(timeout_s, LINK_TIMEOUT_S)
        self.log_dir = tempfile.mkdtemp(prefix="secfwt-spu-mp-")
        ctx = multiprocessing.get_context("spawn")
        self.procs, self.conns, self.stamps = [], [], []
        self.closed = False
        config_bytes = config.SerializeToString()
        for r in range(n):
            parent, child = ctx.Pipe()
            stamp = ctx.Value("d", 0.0, lock=False)  # 0: not started (start_timeout_s applies)
            cfg = libspu.RuntimeConfig()
            cfg.ParseFromString(config_bytes)
            cfg = party_config(cfg, r, True, True)
            proc = ctx.Process(
                target=party_main, name=f"spu-party-{r}", daemon=True,
                args=(r, self.addresses, cfg.SerializeToString(),
                      os.path.join(self.log_dir, f"party{r}.log"), child, stamp, os.getpid(),
                      int(self.link_timeout_s * 1000), self.start_timeout_s),
            )
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)
            self.stamps.append(stamp)
        self.pids = self._collect(range(n), "start", deadline=time.time() + self.start_timeout_s)

    @property
    def party_pids(self) -> list[int]:
        return [p.pid for p in self.procs]

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
                            f"party {r} (pid {self.procs[r].pid}) died during {what}: "
                            f"{_exit_cause(self.procs[r].exitcode)}"
                        )
                    if status == "error":
                        self._fail(f"party {r} raised during {what}:\n{payload}")
                    replies[r] = payload
                    pending.discard(r)
                else:
                    r = sentinels[obj]
                    if r in pending and self.conns[r].poll():
                        continue  # its last reply is still in the pipe: read it first
                    self.procs[r].join(0.1)
                    self._fail(
                        f"party {r} (pid {self.procs[r].pid}) died during {what}: "
                        f"{_exit_cause(self.procs[r].exitcode)}"
                    )
            for r, e in enumerate(send_errors):
                if e is not None:
                    self.procs[r].join(0.5)
                    self._fail(
                        f"party {r} (pid {self.procs[r].pid}) is unreachable during {what}: "
                        f"{_exit_cause(self.procs[r].exitcode)} ({type(e).__name__}: {e})"
                    )
            now = time.time()
            if deadline is not None and now > deadline and pending:
                self._fail(
                    f"parties {sorted(pending)} did not finish {what} within "
                    f"{self.start_timeout_s:.0f} s"
                )
            for r in range(self.n):
                stamp = self.stamps[r].value
                silent = now - stamp
                if stamp > 0 and silent > self.timeout_s:
                    self._fail(
                        f"party {r} (pid {self.procs[r].pid}) stopped answering during {what}: "
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


# ---------------------------------------------------------------------------------------------


class _Executable:
    def __init__(self, exe_id: int, name: str, code: bytes, out_tree, out_abstract):
        self.exe_id, self.name, self.code = exe_id, name, code
        self.out_tree, self.out_abstract = out_tree, out_abstract


def _safe_name(f) -> str:
    name = getattr(f, "__name__", None) or type(f).__name__
    return re.sub(r"[^A-Za-z0-9_]", "_", name) or "fn"


class SpuBackend:
    """SPU backend; construct through `make_backend`. API: see secfwt_jax.backend."""

    def __init__(
        self, protocol: str, mode: str = "sim", field: str = "FM64", fraction_bits: int = 18,
        timeout_s: float = 60.0, addresses: list[str] | None = None,
        runtime_options: dict | None = None, compiler_options: dict | None = None,
    ):
        self.name = protocol
        self.mode = mode
        self.field = field
        self.fraction_bits = fraction_bits
        self.timeout_s = float(timeout_s)
        self.n_parties = PROTOCOL_PARTIES[protocol]
        self.uid = next_uid()
        self.counters = new_counters()
        self.config = runtime_config(protocol, field, fraction_bits, runtime_options)
        self.copts = libspu.CompilerOptions()
        for key, value in (compiler_options or {}).items():
            if not hasattr(self.copts, key):
                raise ValueError(f"unknown CompilerOptions option {key!r}")
            setattr(self.copts, key, value)
        self.io = spu_api.Io(self.n_parties, self.config)
        self._names = itertools.count()
        self._exe_ids = itertools.count()
        self.closed = False
        self.broken: str | None = None
        if mode == "sim":
            if addresses is not None:
                raise ValueError("addresses are for mode='mp'; sim mode uses in-memory links")
            self.parties = SimParties(self.n_parties, self.config, self.timeout_s)
        else:
            self.parties = ProcParties(self.n_parties, self.config, self.timeout_s, addresses)

    # -- public API -----------------------------------------------------------------------

    def put(self, tree, owner: str = "model") -> Handle:
        """Secret-share a pytree of arrays into the parties once; the shares stay resident.

        Each party gets only its own share of every array. Returns a Handle that calls accept
        in place of the tree.
        """
        self._check_usable()
        flat = FlatArgs(tree, self.uid)
        if flat.handles:
            raise ValueError("put() takes arrays, not handles")
        names, nbytes = self._share(flat.data)
        count_put(self.counters, owner, len(names), nbytes)
        return Handle(self.uid, flat.abstract, owner, names=names)

    def compile(self, f) -> CompiledFunction:
        """Wrap a pure JAX function; it is compiled on first call for each input signature."""
        self._check_usable()
        return CompiledFunction(self, f)

    def delete(self, handle: Handle) -> None:
        """Free the parties' variables behind a handle."""
        if handle.backend_uid != self.uid:
            raise ValueError(f"{handle!r} belongs to another backend")
        if not handle.deleted:
            self._guard(lambda: self.parties.delete(list(handle.names)))
            handle.deleted = True

    def close(self) -> None:
        """End the parties (joins threads / stops and reaps the processes)."""
        if not self.closed:
            self.closed = True
            self.parties.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (
            f"SpuBackend({self.name!r}, mode={self.mode!r}, field={self.field!r}, "
            f"fraction_bits={self.fraction_bits}, parties={self.n_parties})"
        )

    # -- internals ------------------------------------------------------------------------

    def _check_usable(self):
        if self.closed:
            raise BackendError(f"backend {self.name!r} ({self.mode}) is closed")
        if self.broken:
            raise BackendError(f"backend {self.name!r} ({self.mode}) is unusable: {self.broken}")

    def _guard(self, action):
        try:
            return action()
        except PartyError as e:
            self.broken = str(e).splitlines()[0]
            self.close()
            raise

    def _new_name(self) -> str:
        return f"v{next(self._names)}"

    def _share(self, arrays) -> tuple[list[str], int]:
        """Split arrays into shares, hand party r its shares only, in batches of at most
        SHARE_BATCH_BYTES per party. Returns the variable names and the bytes handed over."""
        names, nbytes = [], 0
        per_party, batch_bytes = [[] for _ in range(self.n_parties)], 0

        def flush():
            if per_party[0]:
                self._guard(lambda: self.parties.set(per_party))

        for a in arrays:
            name = self._new_name()
            shares = self.io.make_shares(np.ascontiguousarray(a), SECRET)
            size = [len(s.meta) + sum(len(c) for c in s.share_chunks) for s in shares]
            if batch_bytes and batch_bytes + max(size) > SHARE_BATCH_BYTES:
                flush()
                per_party, batch_bytes = [[] for _ in range(self.n_parties)], 0
            for r, s in enumerate(shares):
                per_party[r].append((name, s))
            batch_bytes += max(size)
            nbytes += sum(size)
            names.append(name)
        flush()
        return names, nbytes

    def _executable(self, fn: CompiledFunction, flat: FlatArgs) -> _Executable:
        self._check_usable()
        entry = fn.executables.get(flat.key)
        if entry is None:
            entry = self._compile(fn.f, flat)
            fn.executables[flat.key] = entry
        return entry

    def _compile(self, f, flat: FlatArgs) -> _Executable:
        name = _safe_name(f)

        def fn(*args):
            return f(*args)

        fn.__name__ = name
        n_in = len(flat.slots)
        exe, out_info = spu_fe.compile(
            spu_fe.Kind.JAX, fn, list(flat.abstract), {}, [f"in{i}" for i in range(n_in)],
            [SECRET] * n_in, lambda outs: [f"out{i}" for i in range(len(outs))], copts=self.copts,
        )
        out_leaves, out_tree = jax.tree_util.tree_flatten(out_info)
        out_abstract = [jax.ShapeDtypeStruct(tuple(o.shape), o.dtype) for o in out_leaves]
        entry = _Executable(next(self._exe_ids), name, bytes(exe.code), out_tree, out_abstract)
        self._guard(lambda: self.parties.load(entry.exe_id, entry.code))
        self.counters["compiles"] += 1
        return entry

    def _call(self, fn: CompiledFunction, args, reveal: bool):
        self._check_usable()
        t0 = time.perf_counter()
        flat = FlatArgs(args, self.uid)
        entry = self._executable(fn, flat)
        t_start = time.perf_counter()  # the controller's compile time is not part of the call
        data_names, nbytes = self._share(flat.data)
        if data_names:
            count_put(self.counters, "data", len(data_names), nbytes)
        it = iter(data_names)
        in_names = [s[1].names[s[2]] if s[0] == "handle" else next(it) for s in flat.slots]
        out_names = [self._new_name() for _ in entry.out_abstract]
        profiles, order, notes, trunc_parties = self._guard(
            lambda: self.parties.run(entry.exe_id, entry.name, in_names, out_names)
        )
        out_bytes = 0
        if reveal:
            shares = self._guard(lambda: self.parties.get(out_names))
            flat_out = []
            for i in range(len(out_names)):
                parts = [shares[r][i] for r in range(self.n_parties)]
                out_bytes += sum(len(s.meta) + sum(len(c) for c in s.share_chunks) for s in parts)
                flat_out.append(np.asarray(self.io.reconstruct(parts)))
            out = jax.tree_util.tree_unflatten(entry.out_tree, flat_out)
            self._guard(lambda: self.parties.delete(out_names + data_names))
        else:
            abstract = jax.tree_util.tree_unflatten(entry.out_tree, entry.out_abstract)
            out = Handle(self.uid, abstract, "computed", names=out_names)
            if data_names:
                self._guard(lambda: self.parties.delete(data_names))
        wall = time.perf_counter() - t_start
        cost = build_cost(
            profiles, merged_hlo=self.mode == "sim", truncation_parties=trunc_parties,
            protocol=self.name, field=self.field, fraction_bits=self.fraction_bits,
            mode=self.mode, wall_s=wall, party_order=order, notes=notes,
            input_share_bytes=nbytes, output_share_bytes=out_bytes,
        )
        if t_start - t0 > 0.5:
            cost.notes.append(f"compiled in {t_start - t0:.2f} s before the call (not in wall_s)")
        self._account(cost)
        return out, cost

    def _account(self, cost: CallCost) -> None:
        self.counters["calls"] += 1
        self.counters["bytes_sent"] += cost.bytes_total
        self.counters["send_actions"] += cost.send_actions_total
        self.counters["wall_s"] += cost.wall_s
