"""The cluster file: where each compute party runs and how its links are secured (issue 12).

A YAML file, the same on every host and on the data owner's machine (README "Running the parties
on separate machines")::

    parties:                      # one entry per compute party, in rank order (ABY3: 3)
      - {host: 10.0.0.1, control_port: 7001, link_port: 7101}
      - {host: 10.0.0.2, control_port: 7001, link_port: 7101}
      - {host: 10.0.0.3, control_port: 7001, link_port: 7101}
    tls:                          # PEM files (experiments/make_certs.sh), relative to this file
      ca: certs/ca.pem
      cert: certs/party.pem
      key: certs/party.key
    insecure: false               # true: plain TCP although a host is not loopback (warns)
    connect_timeout_s: 30         # a party server must answer within this (seconds)

control_port: the party server's gRPC control channel (the data owner and the model owner call
it); link_port: SPU's own brpc link between the parties (MPC traffic). With `tls` both use TLS
with mutual authentication against `ca` (a peer must present a certificate it signed). A party
entry may carry its own `tls: {cert, key}` (per-host certificates, `make_certs.sh --per-host`;
the top-level cert and key are then the data owner's client identity). TLS is required when
any host is not loopback, unless `insecure: true`.

No spu, no grpc: the file is checked before anything starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import warnings

import yaml

KEYS = ("parties", "tls", "insecure", "connect_timeout_s")
PARTY_KEYS = ("host", "control_port", "link_port", "tls")
TLS_KEYS = ("ca", "cert", "key")
LOOPBACK_NAMES = ("localhost",)


class InsecureClusterWarning(UserWarning):
    """A cluster with a non-loopback host runs without TLS (insecure: true)."""


@dataclasses.dataclass(frozen=True)
class PartyAddress:
    rank: int
    host: str
    control_port: int
    link_port: int
    tls: dict | None  # {"ca", "cert", "key"} absolute paths, or None (plain TCP)

    @property
    def control(self) -> str:
        return f"{self.host}:{self.control_port}"

    @property
    def link(self) -> str:
        return f"{self.host}:{self.link_port}"


@dataclasses.dataclass(frozen=True)
class Cluster:
    path: str
    parties: tuple[PartyAddress, ...]
    connect_timeout_s: float
    insecure: bool
    client_tls: dict | None = None  # the data owner's / model owner's certificate (top level)

    @property
    def tls(self) -> bool:
        return self.parties[0].tls is not None

    def fingerprint(self) -> str:
        """sha256 of the ranks' addresses and whether TLS is on: the data owner and every
        server must agree on it (checked when a session opens)."""
        desc = [(p.host, p.control_port, p.link_port) for p in self.parties]
        return hashlib.sha256(json.dumps([desc, self.tls]).encode()).hexdigest()[:16]


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port(where: str, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{where}: {key} must be a port number 1..65535, got {value!r}")
    return value


def _tls_paths(where: str, tls, base: str, keys=TLS_KEYS) -> dict:
    if not isinstance(tls, dict) or set(tls) != set(keys):
        got = sorted(tls) if isinstance(tls, dict) else repr(tls)
        raise ValueError(f"{where}: tls must have exactly the keys {list(keys)}, got {got}")
    return {k: os.path.abspath(os.path.join(base, str(tls[k]))) for k in keys}


def _check_files(where: str, tls: dict) -> None:
    for k, path in tls.items():
        if not os.path.isfile(path):
            raise ValueError(f"{where}: tls.{k} = {path!r} is not a file; make certificates "
                             "with `bash experiments/make_certs.sh [--per-host] DIR HOST...`")


def load_cluster(path: str, rank: int | None = None) -> Cluster:
    """Read and check a cluster file; ValueError names the bad key and value. Warns
    (InsecureClusterWarning) for a non-loopback cluster with `insecure: true`.

    rank: the party server of that rank reads it (its own certificate and key must be here);
    None: the data owner (the top-level certificate and key, its client identity)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError as e:
        raise ValueError(f"cluster file {path!r} cannot be read: {e}") from e
    except yaml.YAMLError as e:
        raise ValueError(f"cluster file {path}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ValueError(f"cluster file {path}: expected a mapping with keys {KEYS}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ValueError(f"cluster file {path}: unknown keys {unknown}; accepted: {KEYS}")
    base = os.path.dirname(os.path.abspath(path))
    entries = raw.get("parties")
    if not isinstance(entries, list) or len(entries) < 2:
        raise ValueError(f"cluster file {path}: parties must be a list of at least 2 entries, "
                         f"got {entries!r}")
    insecure = raw.get("insecure", False)
    if not isinstance(insecure, bool):
        raise ValueError(f"cluster file {path}: insecure must be true or false, got {insecure!r}")
    timeout = raw.get("connect_timeout_s", 30)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError(f"cluster file {path}: connect_timeout_s must be a number > 0, "
                         f"got {timeout!r}")
    common = raw.get("tls")
    common = None if common is None else _tls_paths(f"cluster file {path}", common, base)
    parties = []
    for r, e in enumerate(entries):
        where = f"cluster file {path}, parties[{r}]"
        if not isinstance(e, dict) or set(e) - set(PARTY_KEYS) or "host" not in e:
            raise ValueError(f"{where}: expected a mapping with keys host, control_port, "
                             f"link_port (optional tls: {{cert, key}}), got {e!r}")
        own = e.get("tls")
        tls = common
        if own is not None:
            if common is None:
                raise ValueError(f"{where}: a party's tls needs the top-level tls (its ca)")
            tls = {"ca": common["ca"], **_tls_paths(where, own, base, ("cert", "key"))}
        parties.append(PartyAddress(r, str(e["host"]), _port(where, "control_port",
                                    e.get("control_port")), _port(where, "link_port",
                                    e.get("link_port")), tls))
    used = [(p.host, port) for p in parties for port in (p.control_port, p.link_port)]
    if len(set(used)) != len(used):
        raise ValueError(f"cluster file {path}: a host:port is used twice: {used}")
    remote = [p.host for p in parties if not is_loopback(p.host)]
    if remote and common is None:
        if not insecure:
            raise ValueError(
                f"cluster file {path}: hosts {remote} are not loopback, so TLS is required: add "
                "tls: {ca, cert, key} (bash experiments/make_certs.sh DIR HOST...), or set "
                "insecure: true to send shares in the clear (not for real data)")
        warnings.warn(f"cluster {path}: hosts {remote} without TLS (insecure: true): shares "
                      "and revealed values cross the network in the clear",
                      InsecureClusterWarning, stacklevel=2)
    if common is not None:
        if rank is None:
            _check_files(f"cluster file {path}", common)
        elif 0 <= rank < len(parties):
            _check_files(f"cluster file {path}, party {rank}", parties[rank].tls)
    return Cluster(os.path.abspath(path), tuple(parties), float(timeout), insecure,
                   common)


def write_local_cluster(path: str, n: int, tls: dict | None = None, own: list | None = None,
                        host: str = "127.0.0.1", connect_timeout_s: float = 20, **extra) -> str:
    """Write a cluster file of n parties on `host` at free ports of this machine (trying the
    servers on one machine, tests, benchmarks). tls: the top-level {ca, cert, key}; own: each
    party's {cert, key}; extra: further top-level keys (insecure). Returns path."""
    import socket

    socks = [socket.socket() for _ in range(2 * n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    doc = {"parties": [{"host": host, "control_port": ports[2 * r], "link_port": ports[2 * r + 1],
                        **({"tls": own[r]} if own else {})} for r in range(n)],
           "connect_timeout_s": connect_timeout_s, **extra}
    if tls:
        doc["tls"] = tls
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)
    return path
