"""A TCP relay that puts a chosen one-way latency and bandwidth between SPU parties (benchmarks
only; this kernel has no netem). Used by experiments/bench_wan.py; a toolkit module of
experiments/ (no command-line entry; its self-test is tests/test_network.py's relay test).

Every directed party pair r -> s gets its own route: the relay listens on a port that party r
is told is party s's address, and forwards each accepted connection to s's real listener. Both
directions of every connection are relayed:
- forward (r's data to s: SPU's messages, split by brpc into <= 1 MiB requests) and
- backward (s's brpc responses, the acknowledgements r's throttle window waits for).

Byte streams are copied exactly (same bytes, same order). Each chunk the relay reads from a
party at time t is delivered to the other end at

    start     = max(t, free_at[sender])
    free_at[sender] = start + 8 * len / bandwidth_bps      (the sender's uplink: one token bucket
                                                            per party shared by all its routes)
    deliver   = free_at[sender] + latency_s                 (one-way propagation delay)

so each party has one uplink of the given bandwidth (what network.py's transfer term assumes)
and every byte is delayed by the latency in each direction. The reader stops reading a
direction while more than `window_bytes` of it wait in the relay (like a TCP window; otherwise
a fast sender would park the whole message in the relay).

The relay also counts, per party, data flights: a party's data send (forward direction) that
follows a data delivery to it since its previous send starts a new flight. A flight's depth is
one more than the deepest flight delivered to its party before it (Lamport clocks), and `depth`
is the deepest flight: the longest chain of hops in which each may have waited for the one
before (at zero added latency an early delivery can make an independent send look dependent,
so depth bounds the dependent chain from above). Acknowledgements are not data and do not
count. Everything runs in one asyncio loop in a background thread.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import socket
import threading

CHUNK = 1 << 16


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Shape:
    """A network: one-way latency (s) per direction, and each party's uplink (bits/s; None:
    unlimited)."""

    name: str
    latency_s: float = 0.0
    bandwidth_bps: float | None = None


@dataclasses.dataclass
class PartyStats:
    data_bytes_sent: int = 0
    ack_bytes_sent: int = 0
    data_chunks_sent: int = 0
    flights: int = 0
    last_was_recv: bool = True  # the first send opens flight 1
    clock: int = 0  # Lamport depth: the deepest data delivered to this party so far
    label: int = 0  # depth of this party's current flight


class Relay:
    """Routes: (listen_port, target_port, src_rank, dst_rank). `shape` may be changed between
    calls (set_shape); stats are cumulative (snapshot with stats())."""

    def __init__(self, routes, n_parties: int, host: str = "127.0.0.1",
                 window_bytes: int = 4 << 20):
        self.routes, self.host, self.window = list(routes), host, window_bytes
        self.shape = Shape("direct")
        self.parties = [PartyStats() for _ in range(n_parties)]
        self.free_at = [0.0] * n_parties
        self.copied = 0  # bytes written out, all directions (checks exact forwarding volume)
        self.depth = 0  # deepest flight so far: the longest chain of dependent hops
        self.loop = asyncio.new_event_loop()
        self.servers = []
        self.tasks: set = set()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True,
                                       name="wan-relay")
        self.thread.start()
        if not ready.wait(30):
            raise RuntimeError("the relay did not start within 30 s")

    # -- control (any thread) -------------------------------------------------------------

    def set_shape(self, shape: Shape) -> None:
        def apply():
            self.shape = shape
            now = self.loop.time()
            self.free_at = [now] * len(self.free_at)

        self._call(apply)

    def stats(self) -> dict:
        def snap():
            return {"parties": [dataclasses.asdict(p) for p in self.parties],
                    "copied_bytes": self.copied, "depth": self.depth}

        return self._call(snap)

    def close(self) -> None:
        async def stop():
            for s in self.servers:
                s.close()
            tasks = list(self.tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # let them finish cancelling

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _call(self, fn):
        async def run():
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    # -- the loop ---------------------------------------------------------------------------

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        for listen, target, src, dst in self.routes:
            srv = self.loop.run_until_complete(asyncio.start_server(
                lambda r, w, t=target, a=src, b=dst: self._accept(r, w, t, a, b),
                self.host, listen))
            self.servers.append(srv)
        ready.set()
        self.loop.run_forever()

    def _spawn(self, coro) -> asyncio.Task:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _accept(self, reader, writer, target: int, src: int, dst: int) -> None:
        try:
            t_reader, t_writer = await asyncio.open_connection(self.host, target)
        except OSError:
            writer.close()
            return
        for sock in (writer, t_writer):
            s = sock.get_extra_info("socket")
            if s is not None:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._spawn(self._pipe(reader, t_writer, src, dst, data=True))
        self._spawn(self._pipe(t_reader, writer, dst, src, data=False))

    async def _pipe(self, reader, writer, sender: int, receiver: int, data: bool) -> None:
        """Copy reader -> writer with the shape's delay; `data`: forward direction."""
        queue: collections.deque = collections.deque()
        state = {"queued": 0, "eof": False}
        wake = asyncio.Event()
        room = asyncio.Event()
        room.set()
        deliver = self._spawn(self._deliver(queue, state, wake, room, writer, receiver, data))
        try:
            while True:
                await room.wait()
                chunk = await reader.read(CHUNK)
                if not chunk:
                    break
                now = self.loop.time()
                shape = self.shape
                if shape.bandwidth_bps:
                    start = max(now, self.free_at[sender])
                    self.free_at[sender] = start + 8 * len(chunk) / shape.bandwidth_bps
                    due = self.free_at[sender] + shape.latency_s
                else:
                    due = now + shape.latency_s
                p = self.parties[sender]
                if data:
                    p.data_bytes_sent += len(chunk)
                    p.data_chunks_sent += 1
                    if p.last_was_recv:
                        p.flights += 1
                        p.last_was_recv = False
                        p.label = p.clock + 1
                        self.depth = max(self.depth, p.label)
                else:
                    p.ack_bytes_sent += len(chunk)
                queue.append((due, chunk, p.label))
                state["queued"] += len(chunk)
                if state["queued"] > self.window:
                    room.clear()
                wake.set()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            state["eof"] = True
            wake.set()
            await asyncio.gather(deliver, return_exceptions=True)

    async def _deliver(self, queue, state, wake, room, writer, receiver: int, data: bool):
        try:
            while True:
                if not queue:
                    if state["eof"]:
                        break
                    wake.clear()
                    await wake.wait()
                    continue
                due, chunk, label = queue[0]
                delay = due - self.loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                queue.popleft()
                writer.write(chunk)
                await writer.drain()
                self.copied += len(chunk)
                state["queued"] -= len(chunk)
                if state["queued"] <= self.window:
                    room.set()
                if data:
                    q = self.parties[receiver]
                    q.last_was_recv = True
                    q.clock = max(q.clock, label)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
