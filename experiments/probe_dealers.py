"""Which SEMI2K dealers (SPU beaver_type) this spu wheel accepts: a 2-party in-memory SEMI2K
runtime is started with each (no TTP server configured: none ships with the wheel); the
outcome is written to OUT/probe.json (default results/dealer).

    python experiments/probe_dealers.py [out=OUT]
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings

import common

BEAVER_TYPES = ("TrustedFirstParty", "TrustedThirdParty", "MultiParty")


@dataclasses.dataclass
class Config(common.AppConfig):
    out: str = "results/dealer"  # OUT/probe.json


def probe(beaver_type: str) -> dict:
    import spu
    from spu import libspu

    from secfwt_jax.backend.spu_backend import PartyError, SimParties, runtime_config

    cfg = runtime_config("aby3", "FM64", 18)  # then switched to SEMI2K with this beaver type
    cfg.protocol = libspu.ProtocolKind.SEMI2K
    cfg.beaver_type = getattr(libspu.RuntimeConfig.BeaverType, beaver_type)
    try:
        parties = SimParties(2, cfg, 10.0)
    except PartyError as e:
        return dict(beaver_type=beaver_type, runs=False, error=str(e).splitlines()[0:2],
                    spu_version=spu.__version__)
    parties.close()
    return dict(beaver_type=beaver_type, runs=True, spu_version=spu.__version__)


@common.hydra_app(Config, "probe_dealers")
def main(cfg) -> None:
    warnings.simplefilter("ignore")
    records = [probe(b) for b in BEAVER_TYPES]
    common.write_json(os.path.join(cfg.out, "probe.json"),
                      {"command": common.command_line(), "records": records})
    for r in records:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    # the half-started runtimes of the refused dealers abort in their C++ destructors at
    # interpreter exit ("terminate called without an active exception"); the probe is done
    os._exit(0)
