"""The party servers' control channel: gRPC unary calls carrying bytes (issue 12).

gRPC is used through its generic handlers with raw-bytes messages, so no protoc-generated code
and no protobuf schema are needed: a message is a small JSON header plus binary blobs (shares
travel as bytes, never pickled, so a peer cannot make a server execute code). With TLS the
channel is mutually authenticated: the server requires a client certificate signed by the
cluster's CA, and the client checks the server's certificate against the same CA and the host
name of the cluster file.

Methods of service secfwt.Party: Open (start a session's party process), Call (one party
command: set, load, run, get, delete), Watch (held open by the data owner for the whole
session: when its process dies the call ends and the server ends the session; gRPC's own
threads keep it alive, so a data owner busy in a long C++ call that holds Python's GIL is not
mistaken for a dead one), Abort (end the session), Status. Replies are {"ok": true,
"result": ...} or {"ok": false, "error": text}.

No spu here.
"""

from __future__ import annotations

import json
import struct

import grpc

SERVICE = "secfwt.Party"
METHODS = ("Open", "Call", "Watch", "Abort", "Status")
MAX_MESSAGE = 2**31 - 1  # shares are sent in batches of at most 256 MiB per party
OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    # a peer that vanished (host down, cable cut) is noticed during a long call
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
SERVER_OPTIONS = OPTIONS + [("grpc.http2.min_ping_interval_without_data_ms", 5_000)]


def pack(obj) -> bytes:
    """obj: None, bool, int, float, str, bytes, and lists / tuples / str-keyed dicts of them.
    Bytes go as blobs after a JSON header; tuples come back as lists."""
    blobs: list[bytes] = []

    def enc(o):
        if isinstance(o, bytes | bytearray | memoryview):
            blobs.append(bytes(o))
            return {"__b": len(blobs) - 1}
        if isinstance(o, list | tuple):
            return [enc(v) for v in o]
        if isinstance(o, dict):
            if "__b" in o or not all(isinstance(k, str) for k in o):
                raise TypeError(f"pack: dict keys must be str (not '__b'), got {list(o)}")
            return {k: enc(v) for k, v in o.items()}
        if o is None or isinstance(o, bool | int | float | str):
            return o
        raise TypeError(f"pack: cannot send a {type(o).__name__}")

    head = json.dumps(enc(obj)).encode()
    parts = [struct.pack("<I", len(head)), head, struct.pack("<I", len(blobs))]
    for b in blobs:
        parts += [struct.pack("<Q", len(b)), b]
    return b"".join(parts)


def unpack(data: bytes):
    """The inverse of pack."""
    view = memoryview(data)
    (n,) = struct.unpack_from("<I", view, 0)
    head = json.loads(bytes(view[4:4 + n]))
    pos = 4 + n
    (count,) = struct.unpack_from("<I", view, pos)
    pos += 4
    blobs = []
    for _ in range(count):
        (size,) = struct.unpack_from("<Q", view, pos)
        pos += 8
        blobs.append(bytes(view[pos:pos + size]))
        pos += size

    def dec(o):
        if isinstance(o, dict):
            if set(o) == {"__b"}:
                return blobs[o["__b"]]
            return {k: dec(v) for k, v in o.items()}
        if isinstance(o, list):
            return [dec(v) for v in o]
        return o

    return dec(head)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def open_channel(address: str, tls: dict | None) -> grpc.Channel:
    """A channel to a party server at host:port; tls {"ca", "cert", "key"}: mutual TLS."""
    if tls is None:
        return grpc.insecure_channel(address, options=OPTIONS)
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read(tls["ca"]), private_key=_read(tls["key"]),
        certificate_chain=_read(tls["cert"]))
    return grpc.secure_channel(address, creds, options=OPTIONS)


def add_port(server: grpc.Server, address: str, tls: dict | None) -> int:
    """Listen on address; with tls, only clients with a certificate signed by tls["ca"]."""
    if tls is None:
        return server.add_insecure_port(address)
    creds = grpc.ssl_server_credentials(
        [(_read(tls["key"]), _read(tls["cert"]))], root_certificates=_read(tls["ca"]),
        require_client_auth=True)
    return server.add_secure_port(address, creds)


def handler(functions: dict) -> grpc.GenericRpcHandler:
    """functions: {method: f(request obj, grpc context) -> reply obj}; bytes in and out via
    pack/unpack."""
    return grpc.method_handlers_generic_handler(SERVICE, {
        name: grpc.unary_unary_rpc_method_handler(
            lambda req, ctx, f=f: pack(f(unpack(req), ctx)))
        for name, f in functions.items()
    })


def call(channel: grpc.Channel, method: str, request, timeout_s: float | None):
    """One unary call; returns the unpacked reply. grpc.RpcError on transport failure."""
    stub = channel.unary_unary(f"/{SERVICE}/{method}")
    return unpack(stub(pack(request), timeout=timeout_s))


def call_async(channel: grpc.Channel, method: str, request) -> grpc.Future:
    """A call left running (Watch); cancel() ends it."""
    return channel.unary_unary(f"/{SERVICE}/{method}").future(pack(request))
