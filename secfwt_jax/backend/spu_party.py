"""One SPU party: a long-lived Runtime that keeps its variables (weight shares) across calls.

`PartyRuntime` is the party's state and commands; the sim mode drives n of them from threads of
the controller (in-memory links), the mp mode runs each in its own OS process (`party_main`,
started with the 'spawn' method) over SPU's brpc links, and talks to it through a pipe:

    controller -> party: (command, payload)            party -> controller: ("ok", result)
                                                                             or ("error", text)
Commands: set (name, share) pairs; load an executable; run it; get / delete variables; adopt
(read (name, share) pairs from a separate model-owner process's pipe, spu_owner.py); stop.
A heartbeat thread stamps a shared double every HEARTBEAT_S seconds so the controller can tell
a party that stopped answering from one that is busy computing; the same thread ends the
process (os._exit) once its parent is gone, whatever the main thread is blocked in.
Ending: on "stop" the party closes its links (yacl's stop_link waits for the peers' goodbye),
for at most STOP_LINK_S seconds; when the controller is gone (its pipe closed: the controller
or the party server that started this process died) the party exits at once, as its peers may
be gone too and stop_link would then wait for their goodbye until the links' receive timeout.

Only the backend's spu_* modules import spu.
"""

from __future__ import annotations

import os
import threading
import time
import traceback

from spu import api as spu_api
from spu import libspu

HEARTBEAT_S = 0.5
STOP_LINK_S = 5.0  # "stop": the most a party waits for its peers' goodbye before it exits
EXIT_ORPHANED = 3  # exit code of a party whose controller is gone


def share_from_parts(meta: bytes, chunks: list[bytes]):
    s = libspu.Share()
    s.meta = meta
    s.share_chunks = list(chunks)
    return s


def share_to_parts(share) -> tuple[bytes, list[bytes]]:
    return bytes(share.meta), [bytes(c) for c in share.share_chunks]


def party_config(config, rank: int, hlo_profile: bool, hal_profile: bool):
    """Copy of the RuntimeConfig with this party's profiling switches."""
    cfg = libspu.RuntimeConfig(config)
    cfg.enable_pphlo_profile = hlo_profile
    cfg.enable_hal_profile = hal_profile
    return cfg


class PartyRuntime:
    """A party's SPU Runtime plus the executables it has been sent (by id)."""

    def __init__(self, rank: int, lctx, config):
        self.rank = rank
        self.lctx = lctx
        self.runtime = spu_api.Runtime(lctx, config)
        self.codes: dict[int, bytes] = {}
        self.vars_set = 0

    def set(self, items) -> int:
        """items: [(name, libspu.Share)]. Returns how many variables were set."""
        for name, share in items:
            self.runtime.set_var(name, share)
        self.vars_set += len(items)
        return len(items)

    def load(self, exe_id: int, code: bytes) -> None:
        self.codes[exe_id] = code

    def run(self, exe_id: int, name: str, in_names, out_names) -> None:
        exe = libspu.Executable(
            name=name, input_names=list(in_names), output_names=list(out_names),
            code=self.codes[exe_id],
        )
        self.runtime.run(exe)

    def get(self, names):
        return [self.runtime.get_var(n) for n in names]

    def delete(self, names) -> None:
        for n in names:
            self.runtime.del_var(n)


# ---------------------------------------------------------------------------------------------
# mp mode: the party process.


def _heartbeat(stamp, parent_pid: int, stop: threading.Event) -> None:
    while not stop.is_set():
        stamp.value = time.time()
        if os.getppid() != parent_pid:  # the controller is gone: do not linger as an orphan
            os._exit(EXIT_ORPHANED)
        stop.wait(HEARTBEAT_S)


def _read_new(path: str, offset: int) -> tuple[str, int]:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    return data.decode("utf-8", "replace"), offset + len(data)


def _read_profile(path: str, offset: int, wait_s: float = 5.0) -> tuple[str, int]:
    """The log text written since `offset`, waiting (briefly) for the 'Link details' line that
    closes the profile block in case the logger has not flushed it yet."""
    deadline = time.time() + wait_s
    text, new_offset = _read_new(path, offset)
    while "Link details" not in text and time.time() < deadline:
        time.sleep(0.01)
        more, new_offset = _read_new(path, new_offset)
        text += more
    return text, new_offset


def party_main(
    rank: int, addresses: list[str], config_bytes: bytes, log_path: str, conn, stamp,
    parent_pid: int, recv_timeout_ms: int, connect_timeout_s: float, owner_conn=None,
    tls: dict | None = None,
) -> None:
    """Entry point of a party process (mp mode). Never returns normally before 'stop'."""
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(stamp, parent_pid, stop), daemon=True).start()
    try:
        opts = libspu.logging.LogOptions()
        opts.system_log_path = log_path
        opts.enable_console_logger = False
        libspu.logging.setup_logging(opts)
        config = libspu.RuntimeConfig()
        config.ParseFromString(config_bytes)
        desc = libspu.link.Desc()
        desc.id = "secfwt-mp"
        desc.recv_timeout_ms = recv_timeout_ms
        desc.connect_retry_interval_ms = 200
        desc.connect_retry_times = max(1, int(connect_timeout_s / 0.2))
        for r, addr in enumerate(addresses):
            desc.add_party(f"party{r}", addr)
        if tls:  # brpc TLS both ways; a peer must present a certificate signed by tls["ca"]
            desc.enable_ssl = True
            for opts in (desc.server_ssl_opts, desc.client_ssl_opts):
                opts.cert.certificate_path = tls["cert"]
                opts.cert.private_key_path = tls["key"]
                opts.verify.ca_file_path = tls["ca"]
                opts.verify.verify_depth = 1
        lctx = libspu.link.create_brpc(desc, rank)
        party = PartyRuntime(rank, lctx, config)
        conn.send(("ok", os.getpid()))
    except BaseException:  # noqa: B036 - report anything to the controller, then exit
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            cmd, payload = conn.recv()
        except (EOFError, OSError):  # the controller is gone; its other parties may be too
            os._exit(EXIT_ORPHANED)
        try:
            if cmd == "set":
                result = party.set([(n, share_from_parts(m, c)) for n, m, c in payload])
            elif cmd == "load":
                party.load(*payload)
                result = None
            elif cmd == "run":
                offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
                party.run(*payload)
                result, _ = _read_profile(log_path, offset)
                os.truncate(log_path, 0)  # the logger appends (O_APPEND): keep the file small
            elif cmd == "get":
                result = [share_to_parts(s) for s in party.get(payload)]
            elif cmd == "adopt":  # this party's weight shares, from the model-owner process
                if not owner_conn.poll(payload):
                    raise TimeoutError(f"no shares from the model owner within {payload} s")
                result = party.set([(n, share_from_parts(m, c)) for n, m, c in owner_conn.recv()])
            elif cmd == "delete":
                party.delete(payload)
                result = None
            elif cmd == "stop":
                conn.send(("ok", None))
                break
            else:
                raise ValueError(f"unknown party command {cmd!r}")
            conn.send(("ok", result))
        except BaseException:  # noqa: B036 - the controller decides what to do
            conn.send(("error", traceback.format_exc()))
    _stop_link(lctx, STOP_LINK_S)  # the heartbeat (and its orphan check) runs until the end
    stop.set()


def _stop_link(lctx, wait_s: float) -> None:
    """lctx.stop_link() for at most wait_s seconds: it waits for every peer's goodbye, which a
    peer that died never sends; past wait_s the process ends without it (os._exit: the
    interpreter's exit could wait on the link's threads too)."""

    def stop_link():
        try:
            lctx.stop_link()
        except Exception:  # noqa: BLE001 - peers may already be gone
            pass

    t = threading.Thread(target=stop_link, daemon=True)
    t.start()
    t.join(wait_s)
    if t.is_alive():
        os._exit(0)
