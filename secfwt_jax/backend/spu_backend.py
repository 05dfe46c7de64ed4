"""The secure backend: one JAX function run under SPU (ABY3, SEMI2K, Cheetah, REF2K).

Roles (docs/backend.md, secfwt_jax/principals.py): `put` is the model owner's act (it splits
the weights into shares once); calls are the data owner's (it splits each call's inputs into
shares and reconstructs the revealed outputs). In mp mode `put_from_owner_process` runs the
model owner as its own process, so this process never holds the weights. The parties only ever
hold shares. Every input is VIS_SECRET. SEMI2K needs a named `dealer` (spu_config.py).

Party hosting (threads or processes, faults, log capture) is in spu_hosts.py.

Modes
- "sim": the parties are threads of this process over SPU's in-memory links.
- "mp": one OS process per party ('spawn' start method) over SPU's brpc links, by default on
  free loopback ports (`addresses` makes them configurable). Each process is sent only its own
  shares. A party that dies, raises, or stops stamping its heartbeat for `timeout_s` seconds
  makes the call raise PartyError within that time, and every party process is ended.

Costs: both modes run the profile switches of SPU and parse its log (cost.py says how).
"""

from __future__ import annotations

import itertools
import re
import time

import jax
import numpy as np
from spu import api as spu_api
from spu import libspu
from spu.utils import frontend as spu_fe

from .base import protocol_capabilities
from .common import (
    PROTOCOL_PARTIES,
    BackendError,
    CompiledFunction,
    FlatArgs,
    Handle,
    count_put,
    new_counters,
    next_uid,
)
from .cost import CallCost, build_cost
from .spu_config import runtime_config
from .spu_hosts import PartyError, ProcParties, SimParties

__all__ = ["PartyError", "ProcParties", "SimParties", "SpuBackend", "runtime_config"]

SECRET = libspu.Visibility.VIS_SECRET
SHARE_BATCH_BYTES = 256 * 2**20


# ---------------------------------------------------------------------------------------------


class _Executable:
    def __init__(self, exe_id: int, name: str, code: bytes, out_tree, out_abstract):
        self.exe_id, self.name, self.code = exe_id, name, code
        self.out_tree, self.out_abstract = out_tree, out_abstract


def _safe_name(f) -> str:
    name = getattr(f, "__name__", None) or type(f).__name__
    return re.sub(r"[^A-Za-z0-9_]", "_", name) or "fn"


def check_tls(tls: dict | None) -> dict | None:
    """tls: None (plain TCP links) or {"cert", "key", "ca"} paths of PEM files (made by
    experiments/make_certs.sh); raises ValueError naming a missing key or file."""
    if tls is None:
        return None
    import os

    keys = ("cert", "key", "ca")
    if not isinstance(tls, dict) or set(tls) != set(keys):
        got = sorted(tls) if isinstance(tls, dict) else type(tls).__name__
        raise ValueError(f"tls must be a dict with keys {keys}, got {got}")
    for k in keys:
        if not os.path.isfile(tls[k]):
            raise ValueError(f"tls[{k!r}] = {tls[k]!r} is not a file")
    return {k: os.path.abspath(tls[k]) for k in keys}


def _disclose_nothing(params):
    return None


class SpuBackend:
    """SPU backend; construct through `make_backend`. API: see secfwt_jax.backend."""

    def __init__(
        self, protocol: str, mode: str = "sim", field: str = "FM64", fraction_bits: int = 18,
        timeout_s: float = 60.0, addresses: list[str] | None = None,
        runtime_options: dict | None = None, compiler_options: dict | None = None,
        dealer: str | None = None, tls: dict | None = None, cluster=None,
        start_timeout_s: float | None = None,
    ):
        self.name = protocol
        self.mode = mode
        self.field = field
        self.fraction_bits = fraction_bits
        self.timeout_s = float(timeout_s)
        self.n_parties = PROTOCOL_PARTIES[protocol]
        self.capabilities = protocol_capabilities(protocol, field, fraction_bits)
        self.uid = next_uid()
        self.counters = new_counters()
        self.config = runtime_config(protocol, field, fraction_bits, runtime_options, dealer)
        self.dealer = dealer  # named in every CallCost this backend produces
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
            if addresses is not None or tls is not None:
                raise ValueError("addresses and tls are for mode='mp'; sim mode uses in-memory "
                                 "links")
            self.parties = SimParties(self.n_parties, self.config, self.timeout_s)
        elif cluster is not None:  # party servers on other hosts (spu_remote.py)
            from .spu_remote import RemoteParties

            self.parties = RemoteParties(self.n_parties, self.config, self.timeout_s, cluster)
        else:
            self.parties = ProcParties(self.n_parties, self.config, self.timeout_s, addresses,
                                       check_tls(tls), start_timeout_s=start_timeout_s)

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

    def put_from_owner_process(self, loader, loader_args=(), disclose=None):
        """mp mode: share weights that this process never holds. A separate model-owner process
        (spu_owner.model_owner_main) runs loader(*loader_args), sends party r only its shares,
        and returns to this process only the variable names, the shapes and
        disclose(params) (a declared disclosure; None: nothing). loader and disclose must be
        picklable (module-level functions). Returns (Handle, disclosure)."""
        self._check_usable()
        if self.mode != "mp":
            raise ValueError(f"put_from_owner_process needs mode='mp', not {self.mode!r}")
        if not self.parties.owner_send_ends:
            raise ValueError("the model owner's pipes are used once per backend; make a new one")
        import multiprocessing

        from .spu_owner import model_owner_main

        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        prefix = f"m{next(self._names)}_"
        proc = ctx.Process(
            target=model_owner_main, name="model-owner", daemon=True,
            args=(loader, tuple(loader_args), disclose or _disclose_nothing,
                  self.config.SerializeToString(), self.n_parties, prefix,
                  self.parties.owner_send_ends, child),
        )
        proc.start()
        child.close()
        names, abstract, disclosure, nbytes = self._guard(
            lambda: self.parties.adopt_from_owner(proc, parent, "model owner's put"))
        parent.close()
        abstract = jax.tree_util.tree_map(
            lambda t: jax.ShapeDtypeStruct(t[1], np.dtype(t[2])), abstract,
            is_leaf=lambda t: isinstance(t, tuple) and len(t) == 3 and t[0] == "shape")
        count_put(self.counters, "model", len(names), nbytes)
        return Handle(self.uid, abstract, "model", names=names), disclosure

    @staticmethod
    def open_to_servers():
        """f(x): x opened to every compute server inside a compiled program
        (spu.experimental.reveal, a JAX primitive lowered to SPU's "spu.reveal" custom call;
        the data owner never sees the opened value)."""
        from spu.experimental import reveal

        return reveal

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
            f"fraction_bits={self.fraction_bits}, parties={self.n_parties}"
            + (f", dealer={self.dealer!r})" if self.dealer else ")")
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
            input_share_bytes=nbytes, output_share_bytes=out_bytes, dealer=self.dealer,
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
