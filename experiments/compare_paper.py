"""Our per-iteration costs (bench_iteration's iteration.json) next to the SecFwT paper's table.

    python experiments/compare_paper.py results/iteration/roberta-large_aby3/iteration.json \
        [more iteration.json ...] --out results/iteration/paper_comparison.md

The paper's figures (LAN, RoBERTa-large, one iteration; from a secondary source quoted in
issue 5) compare one optimizer step of SFT and of gradient prompt tuning with one forward query
of the forward-only methods. Ours are matched unit for unit: SFT / prompt tuning "iteration",
forward-only "query" (one candidate prompt on one batch); the "generation" unit (all lambda
candidates in one call, what one CMA-ES step costs) is shown too. For every (protocol, method)
the composed record is used when there is one, else the measured record with the most layers.
Time is the modelled LAN time (measured wall + max-party bytes / 3 Gbps + max-party send
actions x 0.8 ms; docs/backend.md) and, separately, the measured wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

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


def load_records(paths) -> list[dict]:
    """The records of iteration.json files, each with `source`: the file it came from."""
    records = []
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no iteration records at {path} (run bench_iteration.py)")
        with open(path) as f:
            records.extend(dict(r, source=path) for r in json.load(f))
    return records


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


def rows(records: list[dict]) -> list[dict]:
    """One row per (protocol, method, unit) present: ours, ratios vs our SFT and prompt
    tuning, and the paper's matching figures and ratios."""
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
                       **({"dealer": r["dealer"]} if r.get("dealer") else {}))
            for name, base in (("sft", sft), ("pt", pt)):
                if base is not None:
                    row[f"time_x_vs_{name}"] = base["networks"]["lan"]["total_s"] / lan
                    row[f"wall_x_vs_{name}"] = base["wall_s"] / r["wall_s"]
                    row[f"bytes_x_vs_{name}"] = base["bytes_total"] / r["bytes_total"]
            paper = PAPER.get(PAPER_ROW[method]) if unit != "generation" else None
            if paper:
                row["paper_lan_s"], row["paper_gb"] = paper
                row["paper_time_x_vs_sft"] = PAPER["sft"][0] / paper[0]
                row["paper_bytes_x_vs_sft"] = PAPER["sft"][1] / paper[1]
            out.append(row)
    return out


def composition_check(records: list[dict]) -> list[dict]:
    """Composed vs directly measured: for every (protocol, method, unit) with measured 1- and
    2-layer records and a measured record with N > 2 layers, cost(1) + (N - 1)(cost(2) -
    cost(1)) (bench_iteration.compose) against the measurement, in bytes and wall time."""
    from bench_iteration import compose

    measured = {(r["protocol"], r["method"], r["unit"], r["model"], r["seq_len"], r["batch"],
                 r["population"], r["layers"]): r for r in records if r["kind"] == "measured"}
    out = []
    for key, r in sorted(measured.items()):
        *setting, n = key
        one, two = (measured.get((*setting, k)) for k in (1, 2))
        if n <= 2 or one is None or two is None:
            continue
        c = compose(one, two, n)
        out.append(dict(protocol=r["protocol"], method=r["method"], unit=r["unit"], layers=n,
                        model=r["model"], seq_len=r["seq_len"],
                        bytes_composed=c["bytes_total"], bytes_measured=r["bytes_total"],
                        bytes_ratio=c["bytes_total"] / r["bytes_total"],
                        wall_composed=c["wall_s"], wall_measured=r["wall_s"],
                        wall_ratio=c["wall_s"] / r["wall_s"]))
    return out


def composition_markdown(check: list[dict]) -> str:
    """Composed vs measured rows (`composition_check`, or compose_seq's check, whose rows also
    say the sequence lengths fitted and the send-action ratio)."""
    seq = bool(check) and "from_seq" in check[0]
    lines = ["| protocol | method | unit | model | seq | layers | " + (
        "fitted from seq | " if seq else "") + "GB composed / measured | "
             "wall s composed / measured |" + (" send actions ratio |" if seq else ""),
             "|" + "---|" * (10 if seq else 8)]
    for c in check:
        lines.append(
            f"| {c['protocol']} | {c['method']} | {c['unit']} | {c['model']} | {c['seq_len']} | "
            f"{c['layers']} | " + (f"{c['from_seq']} | " if seq else "")
            + f"{c['bytes_composed'] / 1e9:.4g} / {c['bytes_measured'] / 1e9:.4g} "
            f"= {c['bytes_ratio']:.4f} | {c['wall_composed']:.4g} / {c['wall_measured']:.4g} = "
            f"{c['wall_ratio']:.3f} |" + (f" {c['send_actions_ratio']:.3f} |" if seq else ""))
    return "\n".join(lines) + "\n"


def _x(v) -> str:
    return "-" if v is None else f"{v:.1f}x"


def kind(row: dict) -> str:
    seqs = row.get("composed_from_seq_lens")
    return row["kind"] + (f" from seq {'/'.join(map(str, seqs))}" if seqs else "")


def markdown(table: list[dict]) -> str:
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
            f"{kind(r)} | {r['lan_s']:.4g} | "
            f"{r['wall_s']:.4g} | {r['gb']:.4g} | {_x(r.get('time_x_vs_sft'))} | "
            f"{_x(r.get('wall_x_vs_sft'))} | {_x(r.get('bytes_x_vs_sft'))} | "
            f"{_x(r.get('time_x_vs_pt'))} / {_x(r.get('bytes_x_vs_pt'))} | {paper} |")
    settings = sorted({(r["model"], r["layers"], r["seq_len"], r["batch"]) for r in table})
    lines += [
        "",
        "Setting: " + "; ".join(f"{m}, {n} layers, seq {s}, batch {b}" for m, n, s, b in settings)
        + "; random weights (cost does not depend on weight values); FM64.",
        f"Paper: {PAPER_SOURCE}. Paper rows: fot_softmax and fot_puma are set against the "
        "paper's forward-only softmax, fot_rfa and fot_secfwt against its forward-only + RFA.",
        "x = our SFT (or prompt tuning) cost divided by this row's cost. LAN s = measured wall + "
        "max-party bytes / 3 Gbps + max-party send actions x 0.8 ms (modelled).",
        "Commands: " + "; ".join(f"`{c}`" for c in sorted({r["command"] for r in table})),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="iteration.json files from bench_iteration.py")
    ap.add_argument("--out", help="write the markdown table (and a .json next to it) here")
    ap.add_argument("--check-composition", action="store_true",
                    help="instead: composed (from 1 and 2 layers) vs measured deeper records")
    args = ap.parse_args(argv)
    records = load_records(args.paths)
    if args.check_composition:
        table = composition_check(records)
        text = composition_markdown(table)
    else:
        table = rows(records)
        text = markdown(table)
    text += "\nTable made by: `python " + shlex.join(
        [os.path.relpath(sys.argv[0]), *(argv if argv is not None else sys.argv[1:])]) + "`\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
