"""Run one pure JAX function in plaintext (jax.jit) or under MPC (SecretFlow SPU).

    from secfwt_jax.backend import make_backend
    be = make_backend("aby3", mode="sim", field="FM64", fraction_bits=18, timeout_s=60)
    params_h = be.put(params, owner="model")     # secret-shared once, resident in the parties
    fn = be.compile(f)                           # compiled once per input shapes/dtypes
    out, cost = fn(params_h, x1, x2)             # x1, x2 shared per call; out revealed (numpy)
    kept, cost = fn(params_h, x1, reveal=False)  # out stays shared: a Handle for later calls
    be.counters; be.close()                      # or `with make_backend(...) as be:`

Handles may stand anywhere a whole argument pytree goes (also as a leaf inside one).
`cost` is a CallCost (cost.py); `estimate_time(cost, "lan")` models it on a network
(network.py). Protocols: plaintext, plaintext_fxp (plaintext emulating SPU's FM64/FM128 fixed-point
arithmetic, fxp.py), aby3 (3 parties), semi2k (2), cheetah (2), ref2k (1,
debugging only: no security). Modes: "sim" (parties are threads, in-memory links) and "mp" (one
OS process per party, brpc links). docs/backend.md describes roles, costs and faults.

Every backend declares its `capabilities` (base.Capabilities: secure, runs MPC programs, whom it
can reveal to, field and fraction bits) and satisfies the `Backend` protocol (base.py); library
code branches on capabilities, never on a backend's name.

spu is imported only by the SPU modules (spu_backend.py, spu_hosts.py, spu_party.py, ...), and
only when make_backend asks for an SPU protocol, so the plaintext path runs where spu is not
installed.
"""

from __future__ import annotations

from .base import REVEAL_TARGETS, Backend, Capabilities, protocol_capabilities
from .common import (
    DEALERS,
    DEFAULT_FRACTION_BITS,
    FIELDS,
    MODES,
    PROTOCOL_PARTIES,
    PROTOCOLS,
    BackendError,
    Handle,
    InsecureDealerWarning,
    check_dealer,
    protocol_label,
)
from .cost import OP_CLASSES, CallCost, CostParseError, OpClassCost, sum_costs
from .network import NETWORKS, NetworkSetting, TimeEstimate, estimate_time


def _check(kind: str, value, accepted) -> None:
    if value not in accepted:
        raise ValueError(f"unknown {kind} {value!r}; accepted: {', '.join(map(str, accepted))}")


def make_backend(
    protocol: str = "plaintext", mode: str = "sim", field: str = "FM64",
    fraction_bits: int | None = 18, timeout_s: float = 60.0, addresses: list[str] | None = None,
    runtime_options: dict | None = None, compiler_options: dict | None = None,
    dealer: str | None = None, tls: dict | None = None, cluster=None,
    start_timeout_s: float | None = None,
):
    """A backend by name.

    protocol: one of PROTOCOLS. mode: "sim" or "mp" (SPU protocols only). field: "FM64" or
    "FM128". fraction_bits: fixed-point fraction bits (SPU's fxp_fraction_bits); None: the
    field's SPU default (DEFAULT_FRACTION_BITS: 18 for FM64, 26 for FM128).
    timeout_s: a party that sends nothing (sim: no message arrives; mp: no heartbeat) for this
    many seconds makes the call fail with a BackendError (PartyError) naming it.
    addresses: "host:port" of each party in mp mode (default: free loopback ports).
    runtime_options / compiler_options: extra SPU RuntimeConfig / CompilerOptions attributes.
    dealer: SEMI2K's Beaver-triple source, required for semi2k and None for every other
    protocol (check_dealer; only "trusted_first_party", insecure against party 0, exists in this
    SPU build). tls: mp mode only, {"cert", "key", "ca"} PEM paths (experiments/make_certs.sh):
    the parties' brpc links use TLS and verify each other against the CA. cluster: mp mode
    only, a cluster file (path or party_cluster.Cluster): the parties are the party servers it
    lists (python -m secfwt_jax.party), with its TLS settings. start_timeout_s: mp mode with
    local party processes only, how long starting them and connecting their mesh may take
    before a PartyError (default None: max(timeout_s, 60); a mesh that cannot connect, e.g. a
    wrong TLS CA, fails after it). Unknown names raise ValueError listing the accepted ones.
    """
    _check("protocol", protocol, PROTOCOLS)
    _check("mode", mode, MODES)
    _check("field", field, FIELDS)
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if start_timeout_s is not None and (mode != "mp" or cluster is not None
                                        or not start_timeout_s > 0):
        raise ValueError(f"start_timeout_s={start_timeout_s!r}: a positive number, for mode='mp' "
                         "with local party processes only (a cluster file has connect_timeout_s)")
    check_dealer(protocol, dealer)  # before any work, without spu
    if cluster is not None:
        cluster = _check_cluster(protocol, mode, cluster, addresses, tls)
    if fraction_bits is None:
        fraction_bits = DEFAULT_FRACTION_BITS[field]
    if protocol == "plaintext":
        from .plaintext import PlaintextBackend

        return PlaintextBackend()
    if protocol == "plaintext_fxp":  # plaintext with SPU's fixed-point numerics emulated
        from .fxp import PlaintextFxpBackend

        return PlaintextFxpBackend(fraction_bits, field)
    from .spu_backend import SpuBackend

    return SpuBackend(
        protocol, mode=mode, field=field, fraction_bits=fraction_bits, timeout_s=timeout_s,
        addresses=addresses, runtime_options=runtime_options, compiler_options=compiler_options,
        dealer=dealer, tls=tls, cluster=cluster, start_timeout_s=start_timeout_s,
    )


def _check_cluster(protocol: str, mode: str, cluster, addresses, tls):
    """The loaded cluster file, checked against the protocol before any work (no spu)."""
    from ..party_cluster import Cluster, load_cluster

    if mode != "mp" or addresses is not None or tls is not None:
        raise ValueError("cluster needs mode='mp' and takes the addresses and tls from the "
                         f"cluster file (got mode={mode!r}, addresses={addresses!r}, tls={tls!r})")
    cluster = cluster if isinstance(cluster, Cluster) else load_cluster(str(cluster))
    if len(cluster.parties) != PROTOCOL_PARTIES[protocol]:
        raise ValueError(f"cluster {cluster.path} lists {len(cluster.parties)} parties; "
                         f"{protocol} needs {PROTOCOL_PARTIES[protocol]}")
    return cluster


__all__ = [
    "DEALERS", "DEFAULT_FRACTION_BITS", "FIELDS", "MODES", "NETWORKS", "OP_CLASSES", "PROTOCOLS",
    "PROTOCOL_PARTIES", "REVEAL_TARGETS",
    "Backend", "BackendError", "Capabilities", "CallCost", "CostParseError", "Handle",
    "InsecureDealerWarning", "NetworkSetting", "OpClassCost",
    "TimeEstimate", "check_dealer", "estimate_time", "make_backend", "protocol_capabilities",
    "protocol_label", "sum_costs",
]
