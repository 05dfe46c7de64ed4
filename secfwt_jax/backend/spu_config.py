"""SPU RuntimeConfig for a protocol, field, fraction bits, dealer and extra options.

Imports spu (only the SPU backend modules do).
"""

from __future__ import annotations

import warnings

from spu import libspu

from .common import FIELD_BITS, InsecureDealerWarning, check_dealer

_PROTOCOL_KINDS = {
    "aby3": libspu.ProtocolKind.ABY3, "semi2k": libspu.ProtocolKind.SEMI2K,
    "cheetah": libspu.ProtocolKind.CHEETAH, "ref2k": libspu.ProtocolKind.REF2K,
}
_FIELD_TYPES = {"FM64": libspu.FieldType.FM64, "FM128": libspu.FieldType.FM128}
_BEAVER_TYPES = {"trusted_first_party": libspu.RuntimeConfig.BeaverType.TrustedFirstParty}


def runtime_config(
    protocol: str, field: str, fraction_bits: int, options: dict | None = None,
    dealer: str | None = None,
):
    """SPU RuntimeConfig for a protocol name, a field name and fraction bits.

    dealer: SEMI2K's source of Beaver triples (common.check_dealer; required for semi2k, None
    for the others). "trusted_first_party" emits an InsecureDealerWarning. options: extra
    RuntimeConfig attributes, e.g. {"fxp_exp_mode": "EXP_PRIME"}; enum values may be given by
    member name; beaver_type is set through `dealer` only.
    """
    dealer = check_dealer(protocol, dealer)
    bits = FIELD_BITS[field]
    if not 0 < fraction_bits < bits // 2:
        raise ValueError(
            f"fraction_bits {fraction_bits} out of range for {field}: 1..{bits // 2 - 1}"
        )
    if "beaver_type" in (options or {}):
        raise ValueError("set SEMI2K's beaver_type through dealer=..., not runtime_options")
    cfg = libspu.RuntimeConfig(
        protocol=_PROTOCOL_KINDS[protocol], field=_FIELD_TYPES[field],
        fxp_fraction_bits=fraction_bits,
    )
    if dealer is not None:
        cfg.beaver_type = _BEAVER_TYPES[dealer]
        if dealer == "trusted_first_party":
            warnings.warn(
                "semi2k with dealer=trusted_first_party: party 0 derives every Beaver triple, "
                "so this run hides nothing from party 0 (SPU: not for production). Its records "
                "name the dealer.", InsecureDealerWarning, stacklevel=4,
            )
    for key, value in (options or {}).items():
        if not hasattr(cfg, key):
            raise ValueError(f"unknown RuntimeConfig option {key!r}")
        if isinstance(value, str):
            enum_type = type(getattr(cfg, key))
            if not hasattr(enum_type, value):
                members = [m for m in dir(enum_type) if m.isupper() or m[:1].isupper()]
                raise ValueError(
                    f"unknown value {value!r} for {key}; accepted: {', '.join(members)}"
                )
            value = getattr(enum_type, value)
        setattr(cfg, key, value)
    return cfg
