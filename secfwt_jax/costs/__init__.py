"""The cost algebra: figures of secure programs, their composition and the tables made of them.

- figures:  cost_figures (CallCost -> JSON figures), combine / add / lin, networks (modelled
            seconds via secfwt_jax.backend.network.estimate_time)
- compose:  compose_layers (1 and 2 layers -> N), extrapolate_entries (slices -> whole update),
            fit_seq / fit_seq_mixed (shorter sequences -> longer), keep_flat_rounds
- records:  iteration records: load_records, sft_from_parts, whole_update(_record),
            update_from_step, with_sft, compose_seq, seq_check, composition_check,
            attach_rounds (rounds counted on the WAN relay into measured records)
- report:   iteration_markdown, composition_markdown, plots, write_iteration
- paper:    the SecFwT paper's table (PAPER) and ours beside it (paper_rows, paper_markdown)

Sums of measured CallCosts are secfwt_jax.backend.cost.sum_costs; network times are
secfwt_jax.backend.network.estimate_time. Nothing here imports spu.
"""

from .compose import (
    FLAT_ROUNDS,
    compose_layers,
    extrapolate_entries,
    fit_seq,
    fit_seq_mixed,
    keep_flat_rounds,
)
from .figures import FIGURES, NETS, add, combine, cost_figures, figures_of, lin, networks
from .records import (
    BASE_KEYS,
    DEFINITIONS,
    METHODS,
    SEQ_FREE,
    SFT_PARTS,
    attach_rounds,
    compose_seq,
    composition_check,
    load_records,
    seq_check,
    sft_from_parts,
    update_from_step,
    whole_update,
    whole_update_record,
    with_sft,
)

__all__ = [
    "BASE_KEYS", "DEFINITIONS", "FIGURES", "FLAT_ROUNDS", "METHODS", "NETS", "SEQ_FREE",
    "SFT_PARTS", "add", "attach_rounds", "combine", "compose_layers", "compose_seq",
    "composition_check", "cost_figures", "extrapolate_entries", "figures_of", "fit_seq",
    "fit_seq_mixed", "keep_flat_rounds", "lin", "load_records", "networks", "seq_check",
    "sft_from_parts", "update_from_step", "whole_update", "whole_update_record", "with_sft",
]
