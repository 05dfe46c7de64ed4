"""Shared test helper (not a test module): TLS certificates from experiments/make_certs.sh."""

import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent


def certs(out) -> dict:
    """One CA and one party certificate under `out`: protocol.tls's {cert, key, ca}."""
    out = pathlib.Path(out)
    subprocess.run(["bash", str(ROOT / "experiments" / "make_certs.sh"), str(out)], check=True,
                   capture_output=True, timeout=60)
    return {"cert": str(out / "party.pem"), "key": str(out / "party.key"),
            "ca": str(out / "ca.pem")}
