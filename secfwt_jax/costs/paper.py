"""Our per-iteration cost records next to the SecFwT paper's efficiency table.

The paper's figures (LAN, RoBERTa-large, one iteration; from a secondary source quoted in
issue 5) compare one optimizer step of SFT and of gradient prompt tuning with one forward query
of the forward-only methods. Ours are matched unit for unit: SFT / prompt tuning "iteration",
forward-only "query" (one candidate prompt on one batch); the "generation" unit (all lambda
candidates in one call, what one CMA-ES step costs) is shown too.
"""

from __future__ import annotations

import math

# (LAN seconds, GB) per iteration, RoBERTa-large; the paper's methods and our matching records
PAPER = {
    "sft": (651.6, 970.7),
    "prompt_tuning": (882.1, 1116.2),
    "fot_softmax": (174.1, 205.4),
    "fot_rfa": (55.2, 56.5),
}
PAPER_SOURCE = ("SecFwT (arXiv 2506.15307), LAN, RoBERTa-large, per iteration; figures from a "
                "secondary source quoted in issue 5")
# our rows: (method, unit); fot_puma / fot_secfwt have no paper row of their own
ROWS = (("sft", "iteration"), ("prompt_tuning", "iteration"), ("fot_softmax", "query"),
        ("fot_puma", "query"), ("fot_rfa", "query"), ("fot_secfwt", "query"),
        ("fot_puma", "generation"), ("fot_secfwt", "generation"))
PAPER_ROW = {"sft": "sft", "prompt_tuning": "prompt_tuning", "fot_softmax": "fot_softmax",
             "fot_rfa": "fot_rfa", "fot_secfwt": "fot_rfa", "fot_puma": "fot_softmax"}


def pick(records: list[dict]) -> dict:
    """{(protocol, method, unit): record}: composed if any, else the measured one with the
    most layers."""
    out = {}
    for r in records:
        key = (r["protocol"], r["method"], r["unit"])
        old = out.get(key)
        better = old is None or (r["kind"] == "composed" and old["kind"] != "composed") or (
            r["kind"] == old["kind"] and r["layers"] > old["layers"])
        if better:
            out[key] = r
    return out


def paper_rows(records: list[dict]) -> list[dict]:
    """One row per (protocol, method, unit) present: ours (modelled LAN s, wall s, GB),
    ratios vs our SFT and prompt tuning (their cost / this row's), and the paper's matching
    figures and ratios."""
    chosen = pick(records)
    out = []
    for protocol in sorted({p for p, _, _ in chosen}):
        sft, pt = chosen.get((protocol, "sft", "iteration")), chosen.get(
            (protocol, "prompt_tuning", "iteration"))
        for method, unit in ROWS:
            r = chosen.get((protocol, method, unit))
            if r is None:
                continue
            lan, gb = r["networks"]["lan"]["total_s"], r["bytes_total"] / 1e9
            row = dict(protocol=protocol, method=method, unit=unit, kind=r["kind"],
                       layers=r["layers"], model=r["model"], seq_len=r["seq_len"],
                       batch=r["batch"], population=r["population"], wall_s=r["wall_s"],
                       lan_s=lan, gb=gb, command=r["command"],
                       composed_from_seq_lens=r.get("composed_from_seq_lens"),
                       rounds_counted="rounds" in r,
                       **({"dealer": r["dealer"]} if r.get("dealer") else {}))
            for name, base in (("sft", sft), ("pt", pt)):
                if base is not None:
                    row[f"time_x_vs_{name}"] = base["networks"]["lan"]["total_s"] / lan
                    # one side's latency term from counted rounds, the other's from send actions
                    row[f"mixed_rounds_vs_{name}"] = ("rounds" in base) != ("rounds" in r)
                    row[f"wall_x_vs_{name}"] = base["wall_s"] / r["wall_s"]
                    row[f"bytes_x_vs_{name}"] = base["bytes_total"] / r["bytes_total"]
            paper = PAPER.get(PAPER_ROW[method]) if unit != "generation" else None
            if paper:
                row["paper_lan_s"], row["paper_gb"] = paper
                row["paper_time_x_vs_sft"] = PAPER["sft"][0] / paper[0]
                row["paper_bytes_x_vs_sft"] = PAPER["sft"][1] / paper[1]
            out.append(row)
    return out


def _x(v) -> str:
    """A ratio as "12.3x"; "-" where there is none or it is not determined (NaN times)."""
    return "-" if v is None or math.isnan(v) else f"{v:.1f}x"


def _kind(row: dict) -> str:
    seqs = row.get("composed_from_seq_lens")
    return (row["kind"] + (f" from seq {'/'.join(map(str, seqs))}" if seqs else "")
            + (", rounds counted" if row.get("rounds_counted") else ""))


def _lan_x(row: dict, name: str) -> str:
    """The LAN-time ratio vs `name`, marked * where one side's rounds were counted and the
    other's are send actions (not like for like)."""
    return _x(row.get(f"time_x_vs_{name}")) + "*" * bool(row.get(f"mixed_rounds_vs_{name}"))


def paper_markdown(table: list[dict]) -> str:
    """The rows of `paper_rows` as a markdown table with the setting, the paper's source and
    the commands of the records."""
    from secfwt_jax.backend.common import protocol_label

    lines = [
        "| protocol | method | unit | kind | LAN s (modelled) | wall s | GB | vs SFT: LAN time | "
        "vs SFT: wall | vs SFT: bytes | vs prompt tuning: LAN time / bytes | paper LAN s | "
        "paper GB | paper vs SFT: time / bytes |",
        "|" + "---|" * 14,
    ]
    for r in table:
        paper = (f"{r['paper_lan_s']:g} | {r['paper_gb']:g} | {_x(r['paper_time_x_vs_sft'])} / "
                 f"{_x(r['paper_bytes_x_vs_sft'])}") if "paper_lan_s" in r else "- | - | -"
        unit = r["unit"] + (f" (P={r['population']})" if r["unit"] == "generation" else "")
        lines.append(
            f"| {protocol_label(r['protocol'], r.get('dealer'))} | {r['method']} | {unit} | "
            f"{_kind(r)} | {r['lan_s']:.4g} | "
            f"{r['wall_s']:.4g} | {r['gb']:.4g} | {_lan_x(r, 'sft')} | "
            f"{_x(r.get('wall_x_vs_sft'))} | {_x(r.get('bytes_x_vs_sft'))} | "
            f"{_lan_x(r, 'pt')} / {_x(r.get('bytes_x_vs_pt'))} | {paper} |")
    settings = sorted({(r["model"], r["layers"], r["seq_len"], r["batch"]) for r in table})
    lines += [
        "",
        "Setting: " + "; ".join(f"{m}, {n} layers, seq {s}, batch {b}" for m, n, s, b in settings)
        + "; random weights (cost does not depend on weight values); FM64.",
        f"Paper: {PAPER_SOURCE}. Paper rows: fot_softmax and fot_puma are set against the "
        "paper's forward-only softmax, fot_rfa and fot_secfwt against its forward-only + RFA.",
        "x = our SFT (or prompt tuning) cost divided by this row's cost. LAN s = measured wall + "
        "max-party bytes / 3 Gbps + rounds x 0.8 ms (modelled), the rounds counted on the WAN "
        "relay where the kind says so, else the max-party send actions (under Cheetah more than "
        "its rounds: docs/backend.md). *: one side's rounds counted, the other's send actions, "
        "so that LAN-time ratio is not like for like (compare the wall ratio).",
        "Commands: " + "; ".join(f"`{c}`" for c in sorted({r["command"] for r in table})),
    ]
    return "\n".join(lines) + "\n"
