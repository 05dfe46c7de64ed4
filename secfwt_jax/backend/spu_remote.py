"""Parties on other hosts (issue 12): the data owner's driver of the party servers.

`RemoteParties` has the interface of ProcParties (set, load, run, get, delete, close, and the
model owner's `owner_send_ends` / `adopt_from_owner`), but each party is a long-lived party
server (`python -m secfwt_jax.party --cluster FILE --rank R`, secfwt_jax/party.py) reached
over gRPC (secfwt_jax/party_rpc.py, TLS from the cluster file). A session: Open on every server
(each starts its party process, which joins the SPU mesh on the link ports), commands, Abort.
The MPC traffic runs on SPU's own brpc links between the servers' party processes (TLS from the
same cluster file); the control channel carries only this process's shares in, revealed output
shares out, executables and cost logs.

Faults: a server that does not answer within the cluster's connect_timeout_s, a call that
fails (a server died, its party raised or stopped answering: the server's heartbeat check), or
a lost connection (gRPC keepalive) raise PartyError naming the rank and address, after every
other server was told to abort the session (each ends its party process and waits for the
next session). Each server also ends the session when this process's Watch call ends (the
data owner died or its connection was lost).

Imports spu (through spu_hosts / spu_party) and grpc.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import time

import grpc

from ..party_cluster import Cluster
from ..party_rpc import call, call_async, open_channel
from .cost import parse_party_log
from .spu_hosts import (
    LINK_TIMEOUT_S,
    OWNER_TIMEOUT_S,
    START_TIMEOUT_S,
    PartyError,
    ProcParties,
    wait_for_owner,
)
from .spu_party import share_from_parts, share_to_parts

ABORT_TIMEOUT_S = 5.0
BATCH_BYTES = 256 * 2**20  # the model owner's shares per message (SpuBackend batches likewise)


def start_session_party(n: int, rank: int, config_bytes: bytes, addresses: list[str],
                        timeout_s: float, tls: dict | None, cancel) -> ProcParties:
    """A party server's session: its one party process (rank) joining the mesh at addresses."""
    from spu import libspu

    config = libspu.RuntimeConfig()
    config.ParseFromString(config_bytes)
    return ProcParties(n, config, timeout_s, addresses, tls, ranks=[rank], cancel=cancel)


def _client(cluster: Cluster, party) -> dict | None:
    """The TLS settings of this process's channel to `party`: the cluster's CA and the data
    owner's certificate (None: plain TCP)."""
    return None if party.tls is None else dict(cluster.client_tls)


@dataclasses.dataclass(frozen=True)
class RemoteShareSink:
    """Picklable: the model-owner process sends party `rank` its shares through this
    (a 'set' call of the session on that party's server)."""

    address: str
    tls: dict | None
    session: str
    rank: int
    timeout_s: float

    def send(self, items) -> None:
        """items: [(name, meta, chunks)], sent in messages of at most BATCH_BYTES (gRPC's
        message limit is 2 GiB; a roberta-base share set is larger)."""
        batches, size = [[]], 0
        for item in items:
            n = len(item[1]) + sum(len(c) for c in item[2])
            if batches[-1] and size + n > BATCH_BYTES:
                batches.append([])
                size = 0
            batches[-1].append(item)
            size += n
        with open_channel(self.address, self.tls) as channel:
            for batch in batches:
                try:
                    reply = call(channel, "Call", {"session": self.session, "cmd": "set",
                                                   "payload": batch}, self.timeout_s)
                except grpc.RpcError as e:  # the server is down or unreachable
                    raise PartyError(
                        f"party {self.rank} at {self.address} failed during the model owner's "
                        f"put: {e.code().name}: {e.details()}") from e
                if not reply["ok"]:
                    raise RuntimeError(f"party {self.rank} at {self.address} refused the model "
                                       f"owner's shares: {reply['error']}")

    def close(self) -> None:
        pass


class RemoteParties:
    """n parties served by the party servers of `cluster` (see the module docstring)."""

    mode = "mp"

    def __init__(self, n: int, config, timeout_s: float, cluster: Cluster):
        if len(cluster.parties) != n:
            raise ValueError(f"cluster {cluster.path} lists {len(cluster.parties)} parties; "
                             f"this protocol needs {n}")
        self.n, self.timeout_s, self.cluster = n, timeout_s, cluster
        self.addresses = [p.control for p in cluster.parties]
        self.call_timeout_s = max(timeout_s, LINK_TIMEOUT_S)  # keepalive notices dead peers
        self.session = os.urandom(16).hex()  # also a capability: only its holders may call
        self.closed = False
        self.pool = concurrent.futures.ThreadPoolExecutor(2 * n, thread_name_prefix="remote")
        # the servers check this process's certificate (the cluster's top-level one)
        self.channels = [open_channel(p.control, _client(cluster, p)) for p in cluster.parties]
        deadline = time.time() + cluster.connect_timeout_s
        for r, ch in enumerate(self.channels):
            try:
                grpc.channel_ready_future(ch).result(timeout=max(0.1, deadline - time.time()))
            except grpc.FutureTimeoutError:
                self._fail(
                    f"party {r} at {self.addresses[r]} did not answer on its control channel "
                    f"within {cluster.connect_timeout_s:g} s (connect_timeout_s of "
                    f"{cluster.path}): start `python -m secfwt_jax.party --cluster "
                    f"{os.path.basename(cluster.path)} --rank {r}` on {cluster.parties[r].host}"
                    + (", and check its certificates" if cluster.tls else ""))
        self.owner_send_ends = [
            RemoteShareSink(p.control, _client(cluster, p), self.session, r, self.call_timeout_s)
            for r, p in enumerate(cluster.parties)]
        replies = self._all("Open", [
            {"session": self.session, "fingerprint": cluster.fingerprint(), "n": n,
             "config": config.SerializeToString(), "timeout_s": timeout_s}
            for _ in range(n)], "start", max(timeout_s, START_TIMEOUT_S) + 30)
        self.pids = [rep["pid"] for rep in replies]
        # held open for the session: if this process dies, each server ends the session
        self.watches = [call_async(ch, "Watch", {"session": self.session})
                        for ch in self.channels]

    def _fail(self, message: str):
        self.close(reason=message.splitlines()[0])
        raise PartyError(message)

    def _all(self, method: str, requests: list, what: str, timeout_s: float | None = None):
        """Call method on every server at once; the replies' results, or PartyError at the
        first failure (the other servers abort the session)."""
        if self.closed:
            raise PartyError(f"the party servers' session is closed; cannot {what}")
        timeout_s = self.call_timeout_s if timeout_s is None else timeout_s
        futures = {self.pool.submit(call, self.channels[r], method, req, timeout_s): r
                   for r, req in enumerate(requests)}
        results = [None] * self.n
        for fut in concurrent.futures.as_completed(futures):
            r = futures[fut]
            problem = self._problem(fut)
            if problem is None:
                results[r] = fut.result()["result"]
                continue
            # One failure makes the other parties fail too (their peer is gone): wait briefly
            # and name a server that died before parties that merely lost it.
            concurrent.futures.wait(futures, timeout=1.0)
            failed = [(r, problem)] + [(q, self._problem(f)) for f, q in futures.items()
                                       if q != r and f.done() and self._problem(f)]
            failed.sort(key=lambda rp: not rp[1][0])
            self._fail("; ".join(f"party {q} at {self.addresses[q]} failed during {what}: {p[1]}"
                                 for q, p in failed))
        return results

    @staticmethod
    def _problem(fut):
        """None for a successful reply, else (server unreachable?, text)."""
        try:
            reply = fut.result()
        except grpc.RpcError as e:
            return True, (f"the server is unreachable or died ({e.code().name}: "
                          f"{e.details()})")
        return None if reply["ok"] else (False, reply["error"])

    def _commands(self, cmd: str, payloads: list, what: str):
        return self._all("Call", [{"session": self.session, "cmd": cmd, "payload": p}
                                  for p in payloads], what)

    def set(self, items_per_party) -> None:
        self._commands("set", [[(name, *share_to_parts(s)) for name, s in items]
                               for items in items_per_party], "set")

    def load(self, exe_id: int, code: bytes) -> None:
        self._commands("load", [(exe_id, code)] * self.n, "load")

    def run(self, exe_id, name, in_names, out_names):
        texts = self._commands("run", [(exe_id, f"{name}.r{r}", list(in_names), list(out_names))
                                       for r in range(self.n)], f"run of {name}")
        return [parse_party_log(t) for t in texts], "exact", [], tuple(range(self.n))

    def get(self, names):
        replies = self._commands("get", [list(names)] * self.n, "get")
        return [[share_from_parts(m, c) for m, c in rep] for rep in replies]

    def delete(self, names) -> None:
        self._commands("delete", [list(names)] * self.n, "delete")

    def adopt_from_owner(self, owner_proc, owner_conn, what: str):
        """The model-owner process (spawned with owner_send_ends) has sent each server its
        party's shares; returns the owner's reply payload."""
        self.owner_send_ends = []
        return wait_for_owner(owner_proc, owner_conn, what, max(self.timeout_s, OWNER_TIMEOUT_S),
                              self._fail)

    def close(self, reason: str = "closed by the data owner") -> None:
        """End the session on every server (each ends its party process); idempotent."""
        if self.closed:
            return
        self.closed = True
        graceful = reason == "closed by the data owner"
        futures = [self.pool.submit(call, ch, "Abort", {"session": self.session, "reason": reason,
                                                        "graceful": graceful}, ABORT_TIMEOUT_S)
                   for ch in self.channels]
        concurrent.futures.wait(futures, timeout=ABORT_TIMEOUT_S + 1)
        for w in getattr(self, "watches", []):
            w.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)
        for ch in self.channels:
            ch.close()
