"""Cost records of backend calls, and the parser of SPU's profiling log that fills them.

Where each number comes from (docs/backend.md has the full story):
- wall_s: time.perf_counter() around the whole call in the controller (sharing the inputs,
  running all parties, revealing the outputs). Measured.
- exec_s[p]: party p's "execution took X s" from SPU's "[Profiling] SPU execution ..." line.
- bytes_sent[p], bytes_recv[p], send_actions[p], recv_actions[p]: party p's "Link details:
  total send bytes N, recv bytes M, send actions A, recv actions B" line, which SPU computes as
  the difference of the link context's counters around the execution. Exact counts of the MPC
  messages (payload bytes, no transport framing); the controller's sharing of inputs and
  reveal of outputs are not MPC messages and are counted separately (input_share_bytes,
  output_share_bytes: the sizes of the share chunks handed to / taken from the parties).
- ops / by_op_class: the "HLO profiling" lines "- pphlo.X, executed K times, duration Ts,
  send bytes N recv bytes M, send actions A, recv actions B" of every party, summed over the
  parties; op classes partition these by HLO op name (OP_CLASSES). time_s is the mean over
  parties of their time in the class. The "truncation" class is a different view: SPU
  truncates inside matmuls and multiplications, so it is read from the "MPC profiling" lines of
  the kernels trunc_* and overlaps the other classes; its `parties` field says whose MPC
  profile it sums.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

OP_CLASSES = ("matmul", "exp", "reciprocal", "comparison", "trig", "truncation", "other")

# HLO op (name without the "pphlo." prefix) -> class. Everything else is "other".
_HLO_CLASS = {
    "dot": "matmul", "dot_general": "matmul", "convolution": "matmul",
    "exponential": "exp", "exponential_minus_one": "exp", "log": "exp", "log_plus_one": "exp",
    "divide": "reciprocal", "reciprocal": "reciprocal", "rsqrt": "reciprocal", "sqrt": "reciprocal",
    "less": "comparison", "greater": "comparison", "less_equal": "comparison",
    "greater_equal": "comparison", "equal": "comparison", "not_equal": "comparison",
    "maximum": "comparison", "minimum": "comparison", "select": "comparison",
    "clamp": "comparison", "sign": "comparison", "abs": "comparison", "reduce": "comparison",
    "reduce_window": "comparison", "sort": "comparison", "argmax": "comparison",
    "sine": "trig", "cosine": "trig", "tan": "trig", "atan2": "trig",
}


def op_class(hlo_name: str) -> str:
    """Class of an HLO op name such as "pphlo.dot" (see OP_CLASSES; unknown ops -> "other").

    pphlo.reduce counts as comparison: max-reductions (softmax) are the ones that communicate;
    sum-reductions are local and add no bytes.
    """
    name = hlo_name.removeprefix("pphlo.")
    return _HLO_CLASS.get(name, "other")


def is_truncation_kernel(mpc_name: str) -> bool:
    return mpc_name.startswith("trunc")


@dataclasses.dataclass
class OpStat:
    """One op line of SPU's profile: counts, seconds and link traffic (bytes)."""

    count: int = 0
    time_s: float = 0.0
    send_bytes: int = 0
    recv_bytes: int = 0
    send_actions: int = 0
    recv_actions: int = 0

    def add(self, other: OpStat) -> None:
        self.count += other.count
        self.time_s += other.time_s
        self.send_bytes += other.send_bytes
        self.recv_bytes += other.recv_bytes
        self.send_actions += other.send_actions
        self.recv_actions += other.recv_actions

    def link_tuple(self) -> tuple[int, int, int, int]:
        return (self.send_bytes, self.recv_bytes, self.send_actions, self.recv_actions)


@dataclasses.dataclass
class OpClassCost:
    """Cost of one op class: time_s (mean over parties, seconds), bytes and send actions
    (summed over `parties`)."""

    time_s: float = 0.0
    bytes: int = 0
    send_actions: int = 0
    parties: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {
            "time_s": self.time_s, "bytes": self.bytes, "send_actions": self.send_actions,
            "parties": list(self.parties),
        }


PARTY_ORDER_EXACT = "exact"


@dataclasses.dataclass
class CallCost:
    """Cost of one backend call. Measured figures are attributes; modelled ones come from
    `modelled()` / `estimate_time`. Lists are indexed by party rank."""

    protocol: str
    field: str | None
    fraction_bits: int | None
    mode: str
    n_parties: int
    # measured
    wall_s: float
    exec_s: list[float]
    bytes_sent: list[int]
    bytes_recv: list[int]
    send_actions: list[int]
    recv_actions: list[int]
    by_op_class: dict[str, OpClassCost]
    ops: dict[str, OpStat]
    input_share_bytes: int = 0
    output_share_bytes: int = 0
    party_order: str = PARTY_ORDER_EXACT
    notes: list[str] = dataclasses.field(default_factory=list)
    dealer: str | None = None  # SEMI2K's Beaver-triple source (common.DEALERS); else None
    rounds: int | None = None  # sequential rounds counted on a relayed run (network.py); None:
    #                            not counted, estimate_time derives them from send_actions

    MEASURED = (
        "wall_s", "exec_s", "bytes_sent", "bytes_recv", "bytes_total", "send_actions",
        "recv_actions", "send_actions_total", "by_op_class", "ops", "input_share_bytes",
        "output_share_bytes", "party_order", "notes",
    )

    @property
    def bytes_total(self) -> int:
        """Bytes sent by all parties together (each byte counted once, at its sender)."""
        return int(sum(self.bytes_sent))

    @property
    def send_actions_total(self) -> int:
        return int(sum(self.send_actions))

    def modelled(self, networks: Iterable[Any] | None = None) -> dict:
        """Rounds estimate and estimated times on `networks` (default: all of NETWORKS)."""
        from .network import NETWORKS, ROUNDS_RULE, TRANSFER_RULE, estimate_time, rounds_of

        nets = list(NETWORKS) if networks is None else list(networks)
        est = {}
        for n in nets:
            e = estimate_time(self, n)
            est[e.network] = e.to_dict()
        return {
            "rounds": rounds_of(self), "rounds_rule": ROUNDS_RULE,
            "transfer_rule": TRANSFER_RULE, "networks": est,
        }

    def to_dict(self) -> dict:
        """JSON-able: {"setting": ..., "measured": ..., "modelled": ...}."""
        measured = {}
        for name in self.MEASURED:
            v = getattr(self, name)
            if name == "by_op_class":
                v = {k: c.to_dict() for k, c in v.items()}
            elif name == "ops":
                v = {k: dataclasses.asdict(s) for k, s in v.items()}
            elif isinstance(v, list):
                v = list(v)
            measured[name] = v
        setting = {
            "protocol": self.protocol, "field": self.field, "fraction_bits": self.fraction_bits,
            "mode": self.mode, "n_parties": self.n_parties,
        }
        if self.dealer is not None:
            setting["dealer"] = self.dealer
        if self.rounds is not None:
            measured["rounds"] = self.rounds
        return {"setting": setting, "measured": measured, "modelled": self.modelled()}


def plaintext_cost(wall_s: float) -> CallCost:
    """Cost of a plaintext (jax.jit) call: wall time only, no parties, zero bytes."""
    return CallCost(
        protocol="plaintext", field=None, fraction_bits=None, mode="local", n_parties=1,
        wall_s=wall_s, exec_s=[wall_s], bytes_sent=[0], bytes_recv=[0], send_actions=[0],
        recv_actions=[0], by_op_class={c: OpClassCost() for c in OP_CLASSES}, ops={},
    )


def sum_costs(costs: Sequence[CallCost]) -> CallCost:
    """One record for several calls of the same backend: sums of every measured figure."""
    if not costs:
        raise ValueError("sum_costs needs at least one cost")
    first = costs[0]
    for c in costs[1:]:
        if (c.protocol, c.n_parties, c.dealer) != (first.protocol, first.n_parties,
                                                    first.dealer):
            raise ValueError(
                f"cannot sum costs of {c.protocol}/{c.n_parties} parties/dealer {c.dealer} "
                f"with {first.protocol}/{first.n_parties} parties/dealer {first.dealer}"
            )
    n = first.n_parties

    def col(name):
        return [sum(getattr(c, name)[p] for c in costs) for p in range(n)]

    ops: dict[str, OpStat] = {}
    classes = {k: OpClassCost() for k in OP_CLASSES}
    for c in costs:
        for k, s in c.ops.items():
            ops.setdefault(k, OpStat()).add(s)
        for k, oc in c.by_op_class.items():
            t = classes.setdefault(k, OpClassCost())
            t.time_s += oc.time_s
            t.bytes += oc.bytes
            t.send_actions += oc.send_actions
            t.parties = tuple(sorted(set(t.parties) | set(oc.parties)))
    orders = {c.party_order for c in costs}
    return CallCost(
        protocol=first.protocol, field=first.field, fraction_bits=first.fraction_bits,
        mode=first.mode, n_parties=n, wall_s=sum(c.wall_s for c in costs),
        exec_s=col("exec_s"), bytes_sent=col("bytes_sent"), bytes_recv=col("bytes_recv"),
        send_actions=col("send_actions"), recv_actions=col("recv_actions"),
        by_op_class=classes, ops=ops,
        input_share_bytes=sum(c.input_share_bytes for c in costs),
        output_share_bytes=sum(c.output_share_bytes for c in costs),
        party_order=orders.pop() if len(orders) == 1 else "mixed",
        notes=[f"sum of {len(costs)} calls"] + sorted({x for c in costs for x in c.notes}),
        dealer=first.dealer,
        rounds=None if any(c.rounds is None for c in costs) else sum(c.rounds for c in costs),
    )


# ---------------------------------------------------------------------------------------------
# Parsing SPU 0.9.5's profile log (spu/libspu api.cc printProfilingData).

_NUM = r"([0-9.eE+-]+)"
_HEADER_RE = re.compile(
    r"\[Profiling\] SPU execution (\S+) completed, input processing took " + _NUM
    + r"s, execution took " + _NUM + r"s, output processing took " + _NUM
    + r"s, total time " + _NUM + r"s"
)
_SECTION_RE = re.compile(r"\] (HLO|HAL|MPC) profiling: total time")
_OP_RE = re.compile(
    r"\] - (\S+), executed (\d+) times, duration " + _NUM + r"s, send bytes (\d+) recv bytes "
    r"(\d+), send actions (\d+), recv actions (\d+)\s*$"
)
_LINK_RE = re.compile(
    r"Link details: total send bytes (\d+), recv bytes (\d+), send actions (\d+), "
    r"recv actions (\d+)"
)


class CostParseError(RuntimeError):
    """SPU's profile log did not hold what the cost record needs (named in the message)."""


@dataclasses.dataclass
class PartyProfile:
    """Everything one party's profile block says. link = (send bytes, recv bytes, send
    actions, recv actions) of the whole execution."""

    exec_s: float = math.nan
    hlo: dict[str, OpStat] = dataclasses.field(default_factory=dict)
    hal: dict[str, OpStat] = dataclasses.field(default_factory=dict)
    mpc: dict[str, OpStat] = dataclasses.field(default_factory=dict)
    link: tuple[int, int, int, int] | None = None


def _op_stat(m: re.Match) -> OpStat:
    return OpStat(
        count=int(m.group(2)), time_s=float(m.group(3)), send_bytes=int(m.group(4)),
        recv_bytes=int(m.group(5)), send_actions=int(m.group(6)), recv_actions=int(m.group(7)),
    )


def parse_party_log(text: str) -> PartyProfile:
    """Parse the profile block(s) of ONE party (its own log, mp mode). Raises CostParseError
    unless exactly one execution's "Link details" line is present."""
    prof = PartyProfile()
    section = None
    links = []
    for line in text.splitlines():
        if m := _HEADER_RE.search(line):
            prof.exec_s = float(m.group(3))
        elif m := _SECTION_RE.search(line):
            section = m.group(1)
        elif m := _OP_RE.search(line):
            if section is None:
                raise CostParseError(f"op line before any section header: {line!r}")
            table = {"HLO": prof.hlo, "HAL": prof.hal, "MPC": prof.mpc}[section]
            table.setdefault(m.group(1), OpStat()).add(_op_stat(m))
        elif m := _LINK_RE.search(line):
            links.append(tuple(int(g) for g in m.groups()))
    if len(links) != 1:
        raise CostParseError(
            f"expected one 'Link details' line in the party's profile log, found {len(links)}"
        )
    prof.link = links[0]
    return prof


def parse_shared_log(text: str, n_parties: int) -> tuple[list[PartyProfile], str, list[str]]:
    """Parse the interleaved profile blocks of n parties that share one log (sim mode).

    The parties are threads of one process and SPU's log lines carry no party id, so lines of
    different parties interleave. The controller runs every party with the HLO profile on
    (its op lines are only summed, never attributed) and party 0 alone with the HAL profile on:
    the HAL/MPC lines are party 0's, and the "Link details" line whose four numbers equal the
    sums of party 0's HAL lines is party 0's. With two parties the other line is party 1's.
    With three, parties 1 and 2 cannot be told apart: their lines are kept in log order and
    party_order says so. Executable names end in ".r<rank>", which attributes exec_s.

    Returns (profiles with hlo ops of all parties merged into profiles[0].hlo, party_order,
    notes).
    """
    profs = [PartyProfile() for _ in range(n_parties)]
    merged_hlo: dict[str, OpStat] = {}
    section0 = None
    links = []
    for line in text.splitlines():
        if m := _HEADER_RE.search(line):
            name = m.group(1)
            rank = int(name.rsplit(".r", 1)[1]) if ".r" in name else None
            if rank is None or not 0 <= rank < n_parties:
                raise CostParseError(f"profile header of an unknown party: {line!r}")
            profs[rank].exec_s = float(m.group(3))
        elif m := _SECTION_RE.search(line):
            if m.group(1) in ("HAL", "MPC"):
                section0 = m.group(1)
        elif m := _OP_RE.search(line):
            name = m.group(1)
            if name.startswith("pphlo."):
                merged_hlo.setdefault(name, OpStat()).add(_op_stat(m))
            else:
                if section0 is None:
                    raise CostParseError(f"non-HLO op line before party 0's HAL header: {line!r}")
                table = profs[0].hal if section0 == "HAL" else profs[0].mpc
                table.setdefault(name, OpStat()).add(_op_stat(m))
        elif m := _LINK_RE.search(line):
            links.append(tuple(int(g) for g in m.groups()))
    if len(links) != n_parties:
        raise CostParseError(
            f"expected {n_parties} 'Link details' lines (one per party), found {len(links)}"
        )
    notes = []
    total = OpStat()
    for s in profs[0].hal.values():
        total.add(s)
    key = total.link_tuple()
    order = PARTY_ORDER_EXACT
    if key in links:
        profs[0].link = key
        rest = list(links)
        rest.remove(key)
        if n_parties == 3 and rest[0] != rest[1]:
            order = "party 0 exact; parties 1 and 2 in log order (sim mode cannot tell them apart)"
    else:
        rest = list(links)
        profs[0].link = rest.pop(0)
        order = "log order (party 0's HAL sums match no link line)"
        notes.append(f"party 0 HAL sums {key} match none of the link lines {links}")
    for p, link in enumerate(rest, start=1):
        profs[p].link = link
    profs[0].hlo = merged_hlo
    return profs, order, notes


def build_cost(
    profiles: Sequence[PartyProfile], *, merged_hlo: bool, truncation_parties: Sequence[int],
    protocol: str, field: str, fraction_bits: int, mode: str, wall_s: float,
    party_order: str = PARTY_ORDER_EXACT, notes: Sequence[str] = (),
    input_share_bytes: int = 0, output_share_bytes: int = 0, dealer: str | None = None,
) -> CallCost:
    """Assemble a CallCost from per-party profiles.

    merged_hlo: the HLO ops of all parties are already summed in profiles[0].hlo (sim mode);
    else every profile holds its own party's HLO ops (mp mode).
    truncation_parties: the ranks whose MPC profile is present (their trunc_* kernels form
    the "truncation" class).
    """
    n = len(profiles)
    notes = list(notes)
    ops: dict[str, OpStat] = {}
    for prof in profiles[:1] if merged_hlo else profiles:
        for k, s in prof.hlo.items():
            ops.setdefault(k, OpStat()).add(s)
    classes = {c: OpClassCost(parties=tuple(range(n))) for c in OP_CLASSES}
    for k, s in ops.items():
        c = classes[op_class(k)]
        c.time_s += s.time_s / n
        c.bytes += s.send_bytes
        c.send_actions += s.send_actions
    trunc = OpClassCost(parties=tuple(truncation_parties))
    for r in truncation_parties:
        for k, s in profiles[r].mpc.items():
            if is_truncation_kernel(k):
                trunc.time_s += s.time_s / max(len(truncation_parties), 1)
                trunc.bytes += s.send_bytes
                trunc.send_actions += s.send_actions
    classes["truncation"] = trunc
    links = [p.link for p in profiles]
    sent = [lk[0] for lk in links]
    hlo_sum = sum(s.send_bytes for s in ops.values())
    if hlo_sum != sum(sent):
        notes.append(
            f"HLO op lines sum to {hlo_sum} bytes, link totals to {sum(sent)}; "
            "by_op_class covers the op lines only"
        )
    return CallCost(
        protocol=protocol, field=field, fraction_bits=fraction_bits, mode=mode, n_parties=n,
        wall_s=wall_s, exec_s=[p.exec_s for p in profiles], bytes_sent=sent,
        bytes_recv=[lk[1] for lk in links], send_actions=[lk[2] for lk in links],
        recv_actions=[lk[3] for lk in links], by_op_class=classes, ops=ops,
        input_share_bytes=input_share_bytes, output_share_bytes=output_share_bytes,
        party_order=party_order, notes=notes, dealer=dealer,
    )
