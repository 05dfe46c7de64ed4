"""What a backend is: the `Backend` protocol and the `Capabilities` every backend declares.

Library code decides what to do on a backend from `backend.capabilities`, never from its name:
a new backend (another MPC library, a GPU emulation) that declares the same capabilities gets
the same treatment. `protocol_capabilities` is the one table of what each protocol of
make_backend offers. No spu here (the plaintext path must run without it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .common import DEFAULT_FRACTION_BITS, FIELD_BITS, PROTOCOL_PARTIES, CompiledFunction, Handle

# Who can learn a value: the data owner (a call's revealed outputs, reveal=True) and the
# compute servers (a value opened inside a program, e.g. the masked trigonometry's opening).
REVEAL_TARGETS = ("data_owner", "servers")


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a backend offers, declared once per backend instance.

    secure: no single party learns the inputs of a call (SPU's ABY3 and Cheetah; SEMI2K only
        with a dealer that no compute party controls, which this SPU build lacks; REF2K,
        plaintext and the emulation: False).
    mpc_program: compiled functions are MPC programs, or emulate one (plaintext_fxp): callers
        build the MPC form of a computation (one-hot lookups instead of gathers at secret
        indices, intermediate results kept in the backend as Handles).
    reveals: who a running program can reveal values to, from REVEAL_TARGETS; "servers" means
        the backend has an in-program opening (`Backend.open_to_servers`).
    field_bits: k of the ring Z_2^k of fixed-point arithmetic; None: floating point.
    fraction_bits: f, values are integers times 2^-f; None: floating point.
    n_parties: compute parties (1 for plaintext and REF2K).
    """

    secure: bool
    mpc_program: bool
    reveals: tuple[str, ...]
    field_bits: int | None
    fraction_bits: int | None
    n_parties: int = 1

    def __post_init__(self):
        bad = [r for r in self.reveals if r not in REVEAL_TARGETS]
        if bad:
            raise ValueError(f"unknown reveal targets {bad}; accepted: {', '.join(REVEAL_TARGETS)}")
        if (self.field_bits is None) != (self.fraction_bits is None):
            raise ValueError(
                f"field_bits {self.field_bits} and fraction_bits {self.fraction_bits} must be "
                "both set (fixed point) or both None (floating point)"
            )
        if self.secure and not self.mpc_program:
            raise ValueError("a secure backend runs MPC programs (mpc_program=True)")

    @property
    def fixed_point(self) -> bool:
        """Values live on the 2^-f grid of a ring (field_bits, fraction_bits set)."""
        return self.field_bits is not None

    @property
    def opens_to_servers(self) -> bool:
        """A program can open a value to the compute servers (`Backend.open_to_servers`)."""
        return "servers" in self.reveals


@runtime_checkable
class Backend(Protocol):
    """Runs pure JAX functions; make_backend returns one (secfwt_jax.backend's docstring shows
    the calls). `name`, `field` and `fraction_bits` are for records and messages; decisions
    use `capabilities`. A backend whose capabilities include reveals "servers" also has
    `open_to_servers() -> f`, f(x) = x opened to every compute server inside a program."""

    name: str
    uid: int
    counters: dict
    capabilities: Capabilities

    def put(self, tree: Any, owner: str = "model") -> Handle: ...

    def compile(self, f: Callable) -> CompiledFunction: ...

    def delete(self, handle: Handle) -> None: ...

    def close(self) -> None: ...


# Not semi2k: its only dealer in this SPU build is trusted_first_party (common.check_dealer), and
# party 0 then knows every Beaver triple. Not ref2k: one party computes on the plain values.
SECURE_PROTOCOLS = ("aby3", "cheetah")
PLAINTEXT_PROTOCOLS = ("plaintext", "plaintext_fxp")


def protocol_capabilities(
    protocol: str, field: str | None = "FM64", fraction_bits: int | None = 18,
) -> Capabilities:
    """The capabilities of make_backend(protocol, field=field, fraction_bits=fraction_bits).

    protocol: one of common.PROTOCOLS. field / fraction_bits are ignored for "plaintext"
    (floating point). ValueError names an unknown protocol or field.
    """
    if protocol not in PROTOCOL_PARTIES:
        raise ValueError(
            f"unknown protocol {protocol!r}; accepted: {', '.join(PROTOCOL_PARTIES)}"
        )
    if protocol == "plaintext":
        return Capabilities(secure=False, mpc_program=False, reveals=("data_owner",),
                            field_bits=None, fraction_bits=None)
    if field not in FIELD_BITS:
        raise ValueError(f"unknown field {field!r}; accepted: {', '.join(FIELD_BITS)}")
    if fraction_bits is None:
        fraction_bits = DEFAULT_FRACTION_BITS[field]
    spu = protocol not in PLAINTEXT_PROTOCOLS
    return Capabilities(
        secure=protocol in SECURE_PROTOCOLS, mpc_program=True,
        reveals=("data_owner", "servers") if spu else ("data_owner",),
        field_bits=FIELD_BITS[field], fraction_bits=int(fraction_bits),
        n_parties=PROTOCOL_PARTIES[protocol],
    )
