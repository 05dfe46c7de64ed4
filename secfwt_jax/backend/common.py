"""What every backend shares: handles, argument flattening, counters, the compiled-function
wrapper. No spu here (the plaintext path must run without it)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

_UIDS = itertools.count()


class BackendError(RuntimeError):
    """A backend cannot go on (a party died, stopped answering, or the backend is closed)."""


class Handle:
    """Values kept inside a backend between calls: secret shares resident in the parties (SPU)
    or device arrays (plaintext). A handle stands for a whole argument pytree.

    names: the parties' variable names of the flattened tree (SPU); value: the arrays
    (plaintext); abstract: the pytree of jax.ShapeDtypeStruct it stands for.
    """

    def __init__(self, backend_uid: int, abstract: Any, owner: str, names=None, value=None):
        self.backend_uid = backend_uid
        self.abstract = abstract
        self.owner = owner
        self.names = None if names is None else tuple(names)
        self.value = value
        self.deleted = False

    @property
    def shapes(self):
        """Pytree of the shapes it holds."""
        import jax

        return jax.tree_util.tree_map(lambda a: tuple(a.shape), self.abstract)

    def __repr__(self):
        import jax

        n = len(jax.tree_util.tree_leaves(self.abstract))
        return f"Handle(owner={self.owner!r}, arrays={n}, backend={self.backend_uid})"


def canonical_array(x) -> np.ndarray:
    """numpy view of a data argument with jax's default (32-bit) dtypes."""
    a = np.asarray(x)
    mapping = {np.dtype(np.float64): np.float32, np.dtype(np.int64): np.int32,
               np.dtype(np.uint64): np.uint32}
    if a.dtype in mapping:
        a = a.astype(mapping[a.dtype])
    if a.dtype.kind not in "biuf":
        raise TypeError(f"unsupported argument dtype {a.dtype}; accepted: bool, int, uint, float")
    return a


class FlatArgs:
    """Arguments of one call, flattened. `slots` has one entry per flat input of the compiled
    function: ("handle", handle, index into handle.names) or ("data", numpy array).
    canonical: the arguments with data leaves as numpy arrays of jax's default dtypes."""

    def __init__(self, args, backend_uid: int):
        import jax

        leaves, treedef = jax.tree_util.tree_flatten(args, is_leaf=lambda x: isinstance(x, Handle))
        abstract_leaves, canonical_leaves, self.slots, self.handles = [], [], [], []
        for leaf in leaves:
            if isinstance(leaf, Handle):
                if leaf.backend_uid != backend_uid:
                    raise ValueError(
                        f"{leaf!r} belongs to another backend (uid {leaf.backend_uid}); "
                        f"this backend's uid is {backend_uid}"
                    )
                if leaf.deleted:
                    raise ValueError(f"{leaf!r} was deleted")
                abstract_leaves.append(leaf.abstract)
                n = len(jax.tree_util.tree_leaves(leaf.abstract))
                self.slots.extend(("handle", leaf, i) for i in range(n))
                self.handles.append(leaf)
                canonical_leaves.append(leaf)
            elif isinstance(leaf, jax.ShapeDtypeStruct):  # precompile only
                dtype = canonical_array(np.zeros((), leaf.dtype)).dtype
                abstract_leaves.append(jax.ShapeDtypeStruct(tuple(leaf.shape), dtype))
                self.slots.append(("abstract", leaf))
                canonical_leaves.append(leaf)
            else:
                a = canonical_array(leaf)
                abstract_leaves.append(jax.ShapeDtypeStruct(a.shape, a.dtype))
                self.slots.append(("data", a))
                canonical_leaves.append(a)
        self.canonical = jax.tree_util.tree_unflatten(treedef, canonical_leaves)
        self.abstract = jax.tree_util.tree_unflatten(treedef, abstract_leaves)
        flat, in_tree = jax.tree_util.tree_flatten(self.abstract)
        self.key = (in_tree, tuple((tuple(a.shape), np.dtype(a.dtype).str) for a in flat))

    @property
    def data(self) -> list[np.ndarray]:
        """The data arrays, in input order. Raises if any argument is only a shape."""
        if any(s[0] == "abstract" for s in self.slots):
            raise TypeError("jax.ShapeDtypeStruct arguments are for precompile(), not for calls")
        return [s[1] for s in self.slots if s[0] == "data"]


def new_counters() -> dict:
    return {
        "compiles": 0,          # executables built (one per function and input shapes/dtypes)
        "calls": 0,
        "puts": {},             # sharing events by owner: put() calls, and "data" per call
        "shares_set": 0,        # arrays secret-shared into the parties (all owners)
        "share_bytes": {},      # bytes of shares handed to the parties, by owner
        "bytes_sent": 0,        # MPC bytes sent by all parties, over all calls
        "send_actions": 0,
        "wall_s": 0.0,
    }


def count_put(counters: dict, owner: str, arrays: int, nbytes: int) -> None:
    counters["puts"][owner] = counters["puts"].get(owner, 0) + 1
    counters["shares_set"] += arrays
    counters["share_bytes"][owner] = counters["share_bytes"].get(owner, 0) + nbytes


class CompiledFunction:
    """`fn(*args, reveal=True) -> (outputs, cost)`; compiled once per input shapes/dtypes.

    args: pytrees of arrays (the data owner's secrets, shared for this call) or Handles (kept
    in the backend). reveal=True returns numpy outputs (revealed to the data owner only);
    reveal=False returns a Handle to the outputs, which stay in the backend.
    """

    def __init__(self, backend, f: Callable):
        self.backend = backend
        self.f = f
        self.executables: dict = {}

    def __call__(self, *args, reveal: bool = True):
        return self.backend._call(self, args, reveal)

    def precompile(self, *args) -> None:
        """Compile for these arguments' shapes/dtypes now, without running (arrays or
        jax.ShapeDtypeStruct pytrees and Handles). Counted in counters["compiles"]."""
        self.backend._executable(self, FlatArgs(args, self.backend.uid))

    def __repr__(self):
        name = getattr(self.f, "__name__", type(self.f).__name__)
        return f"CompiledFunction({name}, shapes compiled={len(self.executables)})"


def next_uid() -> int:
    return next(_UIDS)


# One place for the names a user types, and each protocol's party count.
PROTOCOL_PARTIES = {
    "plaintext": 1, "plaintext_fxp": 1, "aby3": 3, "semi2k": 2, "cheetah": 2, "ref2k": 1,
}
PROTOCOLS = tuple(PROTOCOL_PARTIES)
MODES = ("sim", "mp")
FIELDS = ("FM64", "FM128")
FIELD_BITS = {"FM64": 64, "FM128": 128}
# SPU's choice when RuntimeConfig.fxp_fraction_bits is 0 (libspu/core/config.cc).
DEFAULT_FRACTION_BITS = {"FM64": 18, "FM128": 26}

# Who supplies SEMI2K's correlated randomness (Beaver triples). SPU 0.9.5 offers, for SEMI2K,
# TrustedFirstParty (party 0 derives every triple: insecure against party 0) and
# TrustedThirdParty (a separate beaver server that this wheel does not ship); MultiParty is
# refused for SEMI2K ("unsupported beaver type 2"). docs/backend.md, "Dealer".
DEALERS = ("trusted_first_party",)
UNAVAILABLE_DEALERS = {
    "trusted_third_party": "needs SPU's beaver server (libspu/mpc/semi2k/beaver/"
    "beaver_impl/ttp_server), which the spu 0.9.5 wheel does not ship",
    "multi_party": "spu 0.9.5 has no MultiParty beaver provider for SEMI2K (it raises "
    "'unsupported beaver type 2')",
}
DEALER_PROTOCOLS = ("semi2k",)


DEALER_SHORT = {"trusted_first_party": "TFP"}


def protocol_label(protocol: str, dealer: str | None = None) -> str:
    """A table cell naming the protocol and, for SEMI2K, its dealer: "semi2k (TFP)"."""
    return f"{protocol} ({DEALER_SHORT.get(dealer, dealer)})" if dealer else protocol


class InsecureDealerWarning(UserWarning):
    """A run uses a dealer that one of its compute parties controls (TrustedFirstParty)."""


def check_dealer(protocol: str, dealer: str | None) -> str | None:
    """The dealer a backend for `protocol` uses; raises ValueError naming the accepted values.

    semi2k: `dealer` must be given. No secure dealer is available in this SPU build (see
    UNAVAILABLE_DEALERS), so there is no default: "trusted_first_party" must be asked for by
    name and makes the run insecure against party 0. Other protocols take no dealer (ABY3 and
    Cheetah make their correlated randomness among the parties; ref2k and plaintext need none).
    """
    if protocol not in DEALER_PROTOCOLS:
        if dealer is not None:
            raise ValueError(
                f"dealer {dealer!r} given for protocol {protocol!r}; only "
                f"{', '.join(DEALER_PROTOCOLS)} takes a dealer (others: dealer=None)"
            )
        return None
    if dealer in DEALERS:
        return dealer
    why = UNAVAILABLE_DEALERS.get(dealer)
    head = ("semi2k needs a dealer for its Beaver triples and none was given" if dealer is None
            else f"dealer {dealer!r} is not available: {why}" if why
            else f"unknown dealer {dealer!r}")
    raise ValueError(
        f"{head}. Accepted: {', '.join(DEALERS)} (insecure: party 0 knows every triple, so "
        f"SEMI2K then hides nothing from party 0; ask for it explicitly, e.g. "
        f"protocol.dealer=trusted_first_party). Not available in this build: "
        + "; ".join(f"{k} ({v})" for k, v in UNAVAILABLE_DEALERS.items())
        + ". For a 2-party run without a trusted dealer use cheetah."
    )
