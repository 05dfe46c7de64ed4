"""The model owner as its own OS process (mp mode): it loads the weights, splits them into
shares and sends party r only share r over a pipe that the controller (the data owner) cannot
read; the controller receives the variable names, the shapes and the declared disclosure.

Started by SpuBackend.put_from_owner_process ('spawn' start method); imports spu.
"""

from __future__ import annotations

import traceback

import numpy as np
from spu import api as spu_api
from spu import libspu

from .common import FlatArgs
from .spu_hosts import PartyError
from .spu_party import share_to_parts

SECRET = libspu.Visibility.VIS_SECRET


def model_owner_main(loader, loader_args, disclose, config_bytes: bytes, n: int, prefix: str,
                     party_conns, conn) -> None:
    """loader(*loader_args) -> params pytree; disclose(params) -> the declared disclosure
    (picklable). Replies on `conn` ("ok", (names, [(shape, dtype str)] in leaf order,
    treedef-free nested abstract, disclosure, bytes)) or ("error", traceback)."""
    try:
        import jax

        params = loader(*loader_args)
        config = libspu.RuntimeConfig()
        config.ParseFromString(config_bytes)
        io = spu_api.Io(n, config)
        flat = FlatArgs(params, -1)
        per_party, names, nbytes = [[] for _ in range(n)], [], 0
        for i, a in enumerate(flat.data):
            name = f"{prefix}{i}"
            for r, s in enumerate(io.make_shares(np.ascontiguousarray(a), SECRET)):
                meta, chunks = share_to_parts(s)
                per_party[r].append((name, meta, chunks))
                nbytes += len(meta) + sum(len(c) for c in chunks)
            names.append(name)
        for r in range(n):
            party_conns[r].send(per_party[r])
            party_conns[r].close()
        abstract = jax.tree_util.tree_map(
            lambda a: ("shape", tuple(a.shape), np.dtype(a.dtype).str), flat.abstract)
        conn.send(("ok", (names, abstract, disclose(params), nbytes)))
    except PartyError as e:  # a party the shares were sent to failed: the controller says so
        conn.send(("party_error", str(e)))
    except BaseException:  # noqa: B036 - reported to the controller
        conn.send(("error", traceback.format_exc()))
