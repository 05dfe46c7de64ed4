"""Network model: estimated time of a secure call on a given network.

    total_s    = compute_s + transfer_s + latency_s
    compute_s  = measured wall time of the call (parties on one machine, in-memory or loopback
                 links: a network with ~zero latency and ~infinite bandwidth)
    transfer_s = 8 * max_p bytes_sent[p] / bandwidth_bps       (modelled)
    latency_s  = rounds * latency_s                            (modelled)
    rounds     = cost.rounds when counted, else max_p send_actions[p]

A round is one sequentially dependent exchange: a hop whose message the receiver waits for
before it can send the next. `cost.rounds`, where present, is counted on a run whose links
pass experiments/wan_relay.py with latency added: the relay's Lamport depth, the longest chain
of hops in which each was sent after the one before it was delivered. Records without it (every
record made by the backend itself) use the busiest party's send actions.

Why (measurements in results/wan/, discussion in docs/backend.md "Network model"):
- transfer: every party has its own uplink of the given bandwidth and the parties send in
  parallel, so the party that sends the most bytes bounds the transfer time. The relay
  enforces exactly this (one token bucket per sending party).
- rounds: send actions are not an over-count of rounds. SPU does not split a large message
  into more send actions (brpc splits it below the counter), and its batched matmul is a loop
  of one matmul per batch element whose exchanges each cost a latency on the relay. Under ABY3
  max_p send actions measured 0.82-0.94x the counted rounds; under Cheetah the ratio depends on
  the kernel (0.67x to 3.7x), so send actions are only a rough figure there.
- latency is charged in full per round: compute does not overlap the wait (measured: the wall
  time grows by counted rounds x latency, not less).

Settings follow the SecFwT paper (arXiv 2506.15307): LAN 3 Gbps / 0.8 ms; WAN 100 Mbps / 80 ms
and 200 Mbps / 40 ms. Latency is the one-way delay charged per round.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class NetworkSetting:
    """A network: bandwidth in bits per second, latency in seconds per round."""

    name: str
    bandwidth_bps: float
    latency_s: float

    def __post_init__(self):
        if self.bandwidth_bps <= 0:
            raise ValueError(f"bandwidth_bps must be positive, got {self.bandwidth_bps}")
        if self.latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {self.latency_s}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


NETWORKS: dict[str, NetworkSetting] = {
    "lan": NetworkSetting("lan", 3e9, 0.8e-3),
    "wan100": NetworkSetting("wan100", 100e6, 80e-3),
    "wan200": NetworkSetting("wan200", 200e6, 40e-3),
}

ROUNDS_RULE = (
    "rounds counted on a relayed run (cost.rounds) where present, else max over parties of send "
    "actions (ABY3: measured 0.82-0.94x the counted rounds; Cheetah: kernel-dependent)"
)
TRANSFER_RULE = "8 * max over parties of bytes sent / bandwidth (parties send in parallel)"


@dataclasses.dataclass(frozen=True)
class TimeEstimate:
    """Modelled time of one call on `network`, in seconds. Only compute_s is measured."""

    network: str
    bandwidth_bps: float
    latency_s_per_round: float
    compute_s: float
    transfer_s: float
    latency_s: float
    total_s: float
    rounds: int
    critical_bytes: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def network_setting(network: str | NetworkSetting) -> NetworkSetting:
    """Resolve a network name (`lan`, `wan100`, `wan200`) or pass a NetworkSetting through."""
    if isinstance(network, NetworkSetting):
        return network
    if network not in NETWORKS:
        raise ValueError(
            f"unknown network {network!r}; accepted: {', '.join(NETWORKS)} or a NetworkSetting"
        )
    return NETWORKS[network]


def rounds_of(cost: Any) -> int:
    """Sequential rounds of `cost` (ROUNDS_RULE): its counted rounds, else its busiest party's
    send actions."""
    counted = getattr(cost, "rounds", None)
    if counted is not None:
        if counted < 0:
            raise ValueError(f"cost.rounds must be >= 0 or None, got {counted}")
        return int(counted)
    return max((int(a) for a in cost.send_actions), default=0)


def estimate_time(cost: Any, network: str | NetworkSetting) -> TimeEstimate:
    """Estimated seconds of the call described by `cost` (a CallCost) on `network`.

    Formula and the meaning of each term: module docstring. A cost with no traffic (plaintext)
    gets transfer and latency 0.
    """
    net = network_setting(network)
    sent = [int(b) for b in cost.bytes_sent] or [0]
    critical = max(sent)
    rounds = rounds_of(cost)
    transfer = 8.0 * critical / net.bandwidth_bps
    latency = rounds * net.latency_s
    compute = float(cost.wall_s)
    return TimeEstimate(
        network=net.name, bandwidth_bps=net.bandwidth_bps, latency_s_per_round=net.latency_s,
        compute_s=compute, transfer_s=transfer, latency_s=latency,
        total_s=compute + transfer + latency, rounds=rounds, critical_bytes=critical,
    )
