"""The attention ablation's report: tables, ratios and a plot from the recorded cells.

    python experiments/attention_report.py

Reads OUT/records.jsonl (attention_cell.py, attention_grid.py) and OUT/trig.json
(attention_trig.py), OUT = results/attention; writes OUT/ablation.json (the latest record of
every cell, an "ok" one when there is one), OUT/README.md (tables) and OUT/ablation.png.
"""

from __future__ import annotations

import dataclasses
import os

import common

ATTENTIONS = common.ATTENTION_KERNELS


@dataclasses.dataclass
class Config(common.AppConfig):
    out: str = os.path.join("results", "attention")
    records: str | None = None  # default: OUT/records.jsonl
    # how the machine was used while the cells ran (said in the report)
    machine: str = "a 2-core machine shared with other jobs"


def fmt_bytes(b) -> str:
    return f"{b / 1e9:.2f} GB" if b >= 1e9 else f"{b / 1e6:.1f} MB"


def trig_table(trig: list[dict]) -> list[str]:
    """Every trig record, then builtin / masked ratios per protocol."""
    lines = common.markdown_table(
        ["protocol", "impl", "input", "elements", "wall (s)", "bytes", "send actions",
         "max abs err"],
        [[r["protocol"], r["impl"], r["setting"].get("input", "-"), r["n"], f"{r['wall_s']:.3f}",
          fmt_bytes(r["bytes_total"]), r["send_actions"], f"{r['max_abs_err']:.2e}"]
         for r in trig])
    by = {(r["protocol"], r["impl"]): r for r in trig}
    ratios = []
    for p in dict.fromkeys(r["protocol"] for r in trig):
        b, m = by.get((p, "builtin")), by.get((p, "masked"))
        if b and m:
            ratios.append([p, f"{b['wall_s'] / m['wall_s']:.1f}x",
                           f"{b['bytes_total'] / m['bytes_total']:.1f}x",
                           f"{b['send_actions'] / m['send_actions']:.1f}x"])
    return lines + [""] + common.markdown_table(
        ["protocol", "builtin / masked (radians in): time", "bytes", "send actions"], ratios)


def modelled(r: dict, network: str) -> str:
    v = r.get("modelled_s", {}).get(network)
    return "-" if v is None else f"{v:.2f}"


def ablation_table(cells: dict, protocols, seq_lens) -> list[str]:
    rows = []
    for p in protocols:
        for s in seq_lens:
            for a in ATTENTIONS:
                r = cells.get((a, p, s))
                if r is None:
                    continue
                if r["status"] != "ok":
                    rows.append([p, s, a, f"not run: {r['reason']}", "", "", "", "", ""])
                    continue
                rows.append([p, s, a, f"{r['wall_s']:.2f}", modelled(r, "lan"),
                             modelled(r, "wan100"), fmt_bytes(r["bytes_total"]),
                             r["send_actions"],
                             f"{r['max_abs_err']:.2e} ({r['plaintext_max_abs_err']:.2e})"])
    return common.markdown_table(
        ["protocol", "seq", "attention", "wall (s)", "LAN (s)", "WAN100 (s)", "bytes",
         "send actions", "max abs err (plaintext)"], rows)


def ratio_table(cells: dict, protocols, seq_lens, num="softmax_puma", den="rfa_masked") -> list:
    def model_ratio(a, b, net):
        x, y = a.get("modelled_s", {}).get(net), b.get("modelled_s", {}).get(net)
        return "-" if x is None or y is None else f"{x / y:.2f}x"

    rows = []
    for p in protocols:
        for s in seq_lens:
            a, b = cells.get((num, p, s)), cells.get((den, p, s))
            if a and b and a["status"] == b["status"] == "ok":
                rows.append([p, s, f"{a['wall_s'] / b['wall_s']:.2f}x",
                             model_ratio(a, b, "lan"), model_ratio(a, b, "wan100"),
                             f"{a['bytes_total'] / b['bytes_total']:.2f}x",
                             f"{a['send_actions'] / b['send_actions']:.2f}x"])
    return common.markdown_table(
        ["protocol", "seq", f"{num} / {den}: wall time", "LAN", "WAN100", "bytes",
         "send actions"], rows)


def plot(cells: dict, protocols, seq_lens, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = (("wall_s", "wall time (s)"), ("bytes_total", "bytes sent (all parties)"),
               ("max_abs_err", "max abs error vs exact softmax"))
    fig, axes = plt.subplots(len(protocols), 3, figsize=(15, 4 * len(protocols)), squeeze=False)
    for i, p in enumerate(protocols):
        for j, (key, label) in enumerate(metrics):
            ax = axes[i][j]
            for a in ATTENTIONS:
                pts = [(s, cells[(a, p, s)][key]) for s in seq_lens
                       if cells.get((a, p, s), {}).get("status") == "ok"]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=a)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length")
            ax.set_ylabel(label)
            ax.set_title(f"{p}: {label}")
            ax.grid(True, which="both", alpha=0.3)
        axes[i][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_lines(cells: dict, trig: list[dict], protocols, seq_lens,
                 machine: str = Config.machine) -> list[str]:
    ok = [r for r in cells.values() if r["status"] == "ok"]
    setting = ok[0]["setting"] if ok else {}
    r_max = common.TRIG_RANGE_RAD
    return [
        "# Attention under MPC: the ablation",
        "",
        f"Generated by `{common.command_line()}` from records.jsonl "
        "(one line per cell run; ablation.json holds the latest record of each cell, with its "
        "command). Setting: the attention kernel alone of one roberta-base-shaped layer "
        f"(12 heads, head dim 64, batch 1; q, k, v from {setting.get('inputs', '-')}), SPU "
        f"{setting.get('field', '-')} with {setting.get('fraction_bits', '-')} fraction bits, "
        f"sim mode (parties are threads of one process on {machine}), "
        f"{common.ATTENTION_LAYER['num_features']} orthogonal random features for rfa "
        "and favor. wall: one warm "
        "call (median of up to 3 when short); bytes: sent by all parties together; error: "
        "max abs difference of the MPC output from exact float64 softmax attention (in "
        "parentheses: the same kernel in plaintext float32, i.e. the approximation error "
        "alone). LAN / WAN100: the backend's network model (secfwt_jax.backend.network: "
        "measured wall time + 8 x max bytes sent by a party / bandwidth + max send actions of a "
        "party x latency; LAN 3 Gbps / 0.8 ms, WAN 100 Mbps / 80 ms). Output magnitude: "
        "max |softmax attention| = "
        f"{max((r['ref_max_abs'] for r in ok), default=float('nan')):.3f}.",
        "",
        "## Masked cos/sin vs SPU's built-in cos/sin",
        "",
        f"Same secret inputs: angles uniform in [-{r_max:g}, {r_max:g}] rad; "
        "both compute cos and sin of every element. See docs/masked_trig.md.",
        "",
        *trig_table(trig),
        "",
        "## Ablation",
        "",
        *ablation_table(cells, protocols, seq_lens),
        "",
        "## PUMA-style softmax / RFA (masked trig)",
        "",
        *ratio_table(cells, protocols, seq_lens),
        "",
        "## Naive softmax / RFA (masked trig)",
        "",
        *ratio_table(cells, protocols, seq_lens, num="softmax_naive"),
        "",
        "## RFA built-in trig / RFA masked trig",
        "",
        *ratio_table(cells, protocols, seq_lens, num="rfa_builtin"),
        "",
        "![ablation](ablation.png)",
        "",
    ]


@common.hydra_app(Config, "attention_report")
def main(args) -> None:
    records = args.records or os.path.join(args.out, "records.jsonl")
    cells = common.latest_per_key(common.read_jsonl(records),
                                  lambda r: (r["attention"], r["protocol"], r["seq_len"]))
    protocols = [p for p in common.ATTENTION_PROTOCOLS if any(k[1] == p for k in cells)]
    seq_lens = sorted({k[2] for k in cells})
    common.write_json(os.path.join(args.out, "ablation.json"), [cells[k] for k in sorted(cells)])
    trig = common.read_json(os.path.join(args.out, "trig.json"), [])
    lines = report_lines(cells, trig, protocols, seq_lens, args.machine)
    common.write_text(os.path.join(args.out, "README.md"), "\n".join(lines))
    plot(cells, protocols, seq_lens, os.path.join(args.out, "ablation.png"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
