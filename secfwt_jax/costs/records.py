"""Cost records of one tuning iteration (experiments/bench_iteration.py's iteration.json) and
the records composed from them.

A record is a dict: the setting (BASE_KEYS: method, protocol, model, layers, seq_len, batch,
population, prompt_len, unit, definition, field, mode, weights, command), `kind` ("measured"
or "composed", with `composition` saying how), the figures (secfwt_jax.costs.figures: seconds,
bytes, send actions per party and op class) and `networks` (modelled seconds per network).
Records loaded from files carry `source`, the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from .compose import FLAT_ROUNDS, extrapolate_entries, fit_seq_mixed
from .figures import add, combine, figures_of, networks

METHODS = ("sft", "prompt_tuning", "fot_softmax", "fot_rfa", "fot_puma", "fot_secfwt",
           "fot_secfwt_fused", "fot_secfwt_even", "fot_secfwt_lean", "sft_grad",
           "sft_update")
# the two parts of an SFT step, measured apart where the whole step does not fit (Cheetah)
SFT_PARTS = ("sft_grad", "sft_update")
SEQ_FREE = ("sft_update",)  # parts whose cost does not depend on the sequence
DEFINITIONS = {
    ("sft", "iteration"): "one Adam step on one batch: forward + backward + update of all "
    "non-embedding parameters, one secure program",
    ("sft_grad", "part"): "the forward + backward part of one SFT step (gradients of all "
    "non-embedding parameters on one batch), one secure program",
    ("sft_update", "part"): "the Adam part of one SFT step (moments, update and new "
    "parameters for every non-embedding parameter), one secure program",
    ("prompt_tuning", "iteration"): "one Adam step on one batch: forward + backward to the "
    "soft prompt + update of the prompt, one secure program",
    ("fot", "query"): "forward of one candidate prompt on one batch (verbalizer logits)",
    ("fot", "generation"): "forward of all population candidates on one batch, one call",
}
BASE_KEYS = ("method", "protocol", "model", "layers", "seq_len", "batch", "population",
             "prompt_len", "unit", "definition", "field", "mode", "weights", "command")


def load_records(paths: Iterable[str]) -> list[dict]:
    """The records of iteration.json files, each with `source`: the file it came from."""
    records = []
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no iteration records at {path} (run bench_iteration.py)")
        with open(path) as f:
            records.extend(dict(r, source=path) for r in json.load(f))
    return records


def whole_update_record(line: tuple[dict, dict], others: list[dict], composition: str) -> dict:
    """The sft_update record of all entries, read off the line through the two measured slice
    records `line` (compose.extrapolate_entries); each of `others` (measured slices) is checked
    against the line: its prediction / the measurement, in `line_checks`."""
    a, b = line
    total = b["entries_full"]

    def at(n):
        return extrapolate_entries(figures_of(a), figures_of(b), a["entries"], b["entries"], n)

    checks = []
    for r in others:
        p = at(r["entries"])
        checks.append(dict(entries=r["entries"], bytes_ratio=p["bytes_total"] / r["bytes_total"],
                           wall_ratio=p["wall_s"] / r["wall_s"],
                           send_actions_ratio=p["send_actions_total"] / r["send_actions_total"]))
    fig = at(total)
    counted = {} if "rounds" not in fig else {"rounds_counted": dict(
        setting=b["rounds_counted"]["setting"], composition="linear in the entries through the "
        f"slices' counted rounds (within {FLAT_ROUNDS:.0%}: the larger's)")}
    return dict({k: b[k] for k in BASE_KEYS}, kind="composed", entries=total,
                entries_full=total, composed_from_entries=[a["entries"], b["entries"]],
                line_checks=checks, composition=composition, **fig, **counted,
                networks=networks(fig))


def whole_update(records: list[dict]) -> list[dict]:
    """The records with sft_update's slices replaced by the whole update read off the line
    through the two LARGEST slices (the other slices checking that line); a measured whole
    update is used as it is. Why the largest: under Cheetah the bytes per entry fall as the
    slices grow (8.3 KB between 1/1024 and 1/512 of the parameters, 6.2 KB between 1/512 and
    1/256), so the line through the larger slices is the closer one; both are upper
    estimates."""
    out = [r for r in records if r["method"] not in SEQ_FREE]
    for protocol in sorted({r["protocol"] for r in records if r["method"] in SEQ_FREE}):
        mine = [r for r in records if r["method"] in SEQ_FREE and r["protocol"] == protocol]
        whole = [r for r in mine if r["kind"] == "measured" and r["entries"] == r["entries_full"]]
        slices = sorted((r for r in mine if r["kind"] == "measured"
                         and r["entries"] < r["entries_full"]), key=lambda r: r["entries"])
        if whole:
            out.append(whole[-1])
            continue
        if len(slices) < 2:
            raise ValueError(f"{protocol} sft_update: need two measured slices or the whole "
                             f"update, got {len(slices)} slices")
        rec = whole_update_record(
            (slices[-2], slices[-1]), slices[:-2],
            "linear in the entries updated, through the two largest measured slices (send "
            "actions: the larger's where they do not grow)")
        out.append(dict(rec, source=slices[-1]["source"]))
    return updates_from_steps(out)


def update_from_step(step: dict, grad: dict) -> dict:
    """The sft_update record of a model = its SFT step (one program) - its sft_grad part, both
    at the same protocol, seq_len and layers: every figure subtracted. The update does not
    depend on the sequence, and the two parts add up to the step exactly in bytes
    (results/iteration/aby3_checks/parts_L1)."""
    key = ("protocol", "seq_len", "layers", "model", "batch")
    if any(step[k] != grad[k] for k in key):
        raise ValueError(f"step and sft_grad differ in {[k for k in key if step[k] != grad[k]]}")
    fig = combine([figures_of(step), figures_of(grad)], lambda a, b: a - b)
    base = {k: step[k] for k in BASE_KEYS}
    base.update(method="sft_update", unit="part", population=1, prompt_len=0,
                definition=DEFINITIONS[("sft_update", "part")])
    return dict(base, kind="composed", entries=None, entries_full=None,
                composition=f"the SFT step - its sft_grad part at seq {step['seq_len']} (the "
                f"update does not depend on seq_len); step: {step.get('composition', 'measured')}",
                sources=[step.get("source"), grad.get("source")], source=step.get("source"),
                **fig, networks=networks(fig))


def updates_from_steps(records: list[dict]) -> list[dict]:
    """For a protocol with SFT steps (method sft) but no sft_update record: the steps replaced
    by the update (`update_from_step`) of the deepest step that has an sft_grad record at the
    same seq_len and layers; other protocols' records unchanged."""
    out = list(records)
    for protocol in sorted({r["protocol"] for r in records if r["method"] == "sft"}):
        if any(r["protocol"] == protocol and r["method"] in SEQ_FREE for r in records):
            continue
        mine = deepest([r for r in records if r["protocol"] == protocol])
        pairs = []
        for (_, method, _, seq), step in mine.items():
            grad = mine.get((protocol, "sft_grad", "part", seq))
            if method == "sft" and grad is not None and grad["layers"] == step["layers"]:
                pairs.append((step, grad))
        if not pairs:
            continue
        step, grad = max(pairs, key=lambda p: (p[0]["layers"], p[0]["seq_len"]))
        out = [r for r in out if not (r["protocol"] == protocol and r["method"] == "sft")]
        out.append(update_from_step(step, grad))
    return out


def sft_from_parts(records: list[dict], protocol: str, n_layers: int) -> dict | None:
    """An SFT step = sft_grad + sft_update of the full model (figures.add), when `records` have
    both parts for `protocol` at `n_layers` (sft_update: a record of all entries, no slice);
    else None."""
    full = {}
    for r in records:
        whole = r.get("entries") == r.get("entries_full")
        if r["protocol"] == protocol and r["method"] in SFT_PARTS and r["layers"] == n_layers \
                and whole:
            full[r["method"]] = r  # the last: composed after measured
    if len(full) < 2:
        return None
    g, u = full["sft_grad"], full["sft_update"]
    fig = add(figures_of(g), figures_of(u))
    base = {k: g[k] for k in BASE_KEYS}
    base.update(method="sft", unit="iteration", population=1,
                definition=DEFINITIONS[("sft", "iteration")])
    return dict(base, kind="composed",
                composition="sft_grad + sft_update (the two parts of one SFT step, "
                "measured as separate programs)",
                parts={m: {k: r.get(k) for k in ("kind", "seq_len", "wall_s", "bytes_total",
                                                 "composition")} for m, r in full.items()},
                **fig, networks=networks(fig))


def with_sft(records: list[dict]) -> list[dict]:
    """`records` and, per protocol with both parts, the SFT step composed from them."""
    out = list(records)
    for protocol in sorted({r["protocol"] for r in records}):
        parts = [r for r in records if r["protocol"] == protocol and r["method"] in SFT_PARTS]
        rec = sft_from_parts(parts, protocol, max(r["layers"] for r in parts)) if parts else None
        if rec is not None:
            grad = next(r for r in parts if r["method"] == "sft_grad")
            rec.update(composed_from_seq_lens=grad.get("composed_from_seq_lens"))
            out.append(rec)
    return out


def deepest(records: list[dict]) -> dict:
    """{(protocol, method, unit, seq_len): the record with the most layers (composed first)}."""
    out = {}
    for r in records:
        key = (r["protocol"], r["method"], r["unit"], r["seq_len"])
        old = out.get(key)
        if old is None or (r["layers"], r["kind"] == "composed") > (
                old["layers"], old["kind"] == "composed"):
            out[key] = r
    return out


def compose_seq(records: list[dict], seq: int, degree: int, command: str,
                prompt_len: int | None = None, time_degree: int = 1) -> list[dict]:
    """The records at `seq` composed from `records` at other sequence lengths (per (protocol,
    method, unit): the deepest record at each length, compose.fit_seq_mixed); sft_update (no
    sequence) is its whole update (`whole_update`). prompt_len: what the composed records state
    for the methods with a soft prompt (default: the longest point's, scaled to `seq`)."""
    if not 0 <= time_degree <= degree:
        raise ValueError(f"time_degree {time_degree} is not in 0..degree ({degree})")
    best = deepest(whole_update(records))
    groups = {}
    for (protocol, method, unit, s), r in best.items():
        groups.setdefault((protocol, method, unit), []).append((s, r))
    out = []
    for (protocol, method, unit), pts in sorted(groups.items()):
        pts.sort(key=lambda p: p[0])
        top = pts[-1][1]
        if method in SEQ_FREE:
            out.append(dict(top, seq_len=seq, note="does not depend on seq_len"))
            continue
        pts = [p for p in pts if p[0] != seq]
        if len(pts) != degree + 1:
            raise ValueError(
                f"{protocol} {method} {unit}: degree {degree} needs {degree + 1} sequence "
                f"lengths other than {seq}; the inputs have {[p[0] for p in pts]}")
        fig = fit_seq_mixed(pts, seq, degree, time_degree)
        plen = 0 if top["prompt_len"] == 0 else (
            prompt_len if prompt_len is not None
            else round(top["prompt_len"] * seq / top["seq_len"]))
        rec = {k: v for k, v in top.items() if k not in fig and k not in (
            "networks", "source", "composed_from_layers", "composition", "rounds",
            "rounds_counted")}
        seqs = [s for s, _ in pts]
        rec.update(
            seq_len=seq, prompt_len=plen, kind="composed", **fig,
            composed_from_seq_lens=seqs, time_degree=time_degree,
            composed_from_layers=top.get("composed_from_layers"),
            composition=f"bytes: polynomial of degree {degree} in seq_len through the records "
            f"at seq {seqs} (prompt_len {[r['prompt_len'] for _, r in pts]}); "
            + (f"wall time and send actions: degree {time_degree} through seq "
               f"{seqs[-(time_degree + 1):]} " if time_degree else
               "wall time: not composed (NaN); send actions: degree 1 through seq "
               f"{seqs[-2:]} ")
            + f"(send actions within {FLAT_ROUNDS:.0%} at the two longest: the longest's); "
            f"each of those: {top.get('composition', 'measured')}",
            sources=[r["source"] for _, r in pts], command=command,
            layer_command=top["command"])
        if "rounds" in fig:  # every point's rounds were counted: composed as send actions
            rec["rounds_counted"] = dict(
                setting=top["rounds_counted"]["setting"],
                composition=f"degree {max(time_degree, 1)} through the counted rounds at seq "
                f"{seqs[-(max(time_degree, 1) + 1):]} (within {FLAT_ROUNDS:.0%}: the longest's)")
        rec["networks"] = networks(rec)
        out.append(rec)
    return out


def seq_check(composed: list[dict], targets: list[dict]) -> list[dict]:
    """Composed (compose_seq) vs measured (or layer-composed) records at the same (protocol,
    method, unit, seq_len, layers): rows with the ratios composed / measured of bytes, wall
    time and the busiest party's send actions (report.composition_markdown)."""
    rows = []
    for c in composed:
        for t in targets:
            same = all(c[k] == t[k] for k in ("protocol", "method", "unit", "seq_len", "layers"))
            if same and c["method"] not in SEQ_FREE:
                rows.append(dict(
                    protocol=c["protocol"], method=c["method"], unit=c["unit"], model=c["model"],
                    seq_len=c["seq_len"], layers=c["layers"], from_seq=c["composed_from_seq_lens"],
                    target_kind=t["kind"], bytes_composed=c["bytes_total"],
                    bytes_measured=t["bytes_total"],
                    bytes_ratio=c["bytes_total"] / t["bytes_total"], wall_composed=c["wall_s"],
                    wall_measured=t["wall_s"], wall_ratio=c["wall_s"] / t["wall_s"],
                    send_actions_ratio=max(c["send_actions"]) / max(t["send_actions"])))
    return rows


def composition_check(records: list[dict]) -> list[dict]:
    """Layer composition vs direct measurement: for every (protocol, method, unit) with
    measured 1- and 2-layer records and a measured record with N > 2 layers,
    compose.compose_layers against the measurement, in bytes and wall time (ratios)."""
    from .compose import compose_layers

    measured = {(r["protocol"], r["method"], r["unit"], r["model"], r["seq_len"], r["batch"],
                 r["population"], r["layers"]): r for r in records if r["kind"] == "measured"}
    out = []
    for key, r in sorted(measured.items()):
        *setting, n = key
        one, two = (measured.get((*setting, k)) for k in (1, 2))
        if n <= 2 or one is None or two is None:
            continue
        c = compose_layers(*({k: x[k] for k in ("wall_s", "bytes_total")} for x in (one, two)),
                           n)
        out.append(dict(protocol=r["protocol"], method=r["method"], unit=r["unit"], layers=n,
                        model=r["model"], seq_len=r["seq_len"],
                        bytes_composed=c["bytes_total"], bytes_measured=r["bytes_total"],
                        bytes_ratio=c["bytes_total"] / r["bytes_total"],
                        wall_composed=c["wall_s"], wall_measured=r["wall_s"],
                        wall_ratio=c["wall_s"] / r["wall_s"]))
    return out


ROUNDS_KEYS = ("protocol", "model", "layers", "seq_len", "batch")  # a relayed run's setting
# below it early deliveries make independent sends look dependent (docs/backend.md)
MIN_COUNT_LATENCY_S = 0.010
# Cheetah's bytes of one program differ by a few KB from call to call (0.002% at roberta-large
# shapes; its send actions do not): ABY3 and SEMI2K repeat theirs to the byte
SAME_BYTES_REL = 1e-4


def attach_rounds(records: list[dict], runs: list[dict], setting: str) -> list[str]:
    """Set `rounds` (and `rounds_counted`: where from) on the measured `records` whose program
    a relayed run of experiments/bench_wan.py (`runs`, its runs.json records) also ran: same
    protocol, model, layers, seq_len and batch, candidates (population = prompts), and what
    identifies the program: the same number of send actions and of bytes, all parties together
    (bytes within SAME_BYTES_REL; a run of the same setting that differs is another program and
    an error). In all, not per party: a sim-mode record (bench_iteration) attributes ABY3's
    messages to parties 1 and 2 otherwise than the mp parties of a relayed run count them.
    Rounds: the median relay depth of its calls at `setting` (a latency >=
    MIN_COUNT_LATENCY_S). Then the layer-composed records (composed_from_layers [1, 2]) get
    the rounds composed from their 1- and 2-layer records' as every other figure
    (compose.compose_layers), and every changed record its networks again. Returns one line
    per record changed. Changes `records`."""
    import statistics

    from .compose import compose_layers

    said = []

    def same_setting(rec, run):  # a query, or a part of an SFT step (bench_wan part=)
        return (all(rec[k] == run.get(k) for k in ROUNDS_KEYS)
                and rec["population"] == run.get("prompts", 1)
                and (rec["method"] if rec["method"] in SFT_PARTS else None) == run.get("part")
                and rec.get("slice_divisor") == run.get("slice_divisor"))

    def same_program(rec, run):  # in all: a sim-mode record splits ABY3's per-party counts
        c = run["cost"]  # between parties 1 and 2 otherwise than the mp parties count them
        return (len(c["send_actions"]) == len(rec["send_actions"])
                and sum(c["send_actions"]) == sum(rec["send_actions"])
                and abs(sum(c["bytes_sent"]) - rec["bytes_total"])
                <= SAME_BYTES_REL * rec["bytes_total"])

    for rec in records:
        if rec["kind"] != "measured":
            continue
        cands = [run for run in runs if same_setting(rec, run)]
        match = [run for run in cands if same_program(rec, run)]
        if cands and not match:
            raise ValueError(
                f"{rec['protocol']} {rec['method']} layers={rec['layers']} seq {rec['seq_len']}: "
                f"the relayed runs of this setting sent {[c['cost']['bytes_sent'] for c in cands]}"
                f" bytes in {[c['cost']['send_actions'] for c in cands]} send actions per party, "
                f"the record {rec['bytes_sent']} in {rec['send_actions']}: not the same program")
        if not match:
            continue
        run = match[-1]
        counted = {k: v for k, v in run["shapes"].items()
                   if v["latency_s"] >= MIN_COUNT_LATENCY_S}
        if setting not in counted:
            raise ValueError(f"the relayed run of {rec['method']} layers={rec['layers']} has no "
                             f"calls at {setting!r} to count rounds on; it has "
                             f"{sorted(counted) or 'no setting'} with a latency >= "
                             f"{MIN_COUNT_LATENCY_S * 1e3:.0f} ms")
        depths = [c["relay"]["depth"] for c in run["runs"][setting]]
        rec["rounds"] = int(statistics.median(depths))
        rec["rounds_counted"] = dict(setting=setting, depths=depths, command=run["command"],
                                     date=run.get("date"))
        rec["networks"] = networks(rec)
        said.append(f"{rec['protocol']} {rec['method']} {rec['unit']} layers={rec['layers']} "
                    f"seq {rec['seq_len']}: {rec['rounds']} rounds (max send actions "
                    f"{max(rec['send_actions'])})")
    measured = {(r["protocol"], r["method"], r["unit"], r["seq_len"], r["population"],
                 r["layers"]): r for r in records if r["kind"] == "measured"}
    for rec in records:
        if rec["kind"] != "composed" or rec.get("composed_from_layers") != [1, 2] or \
                "composed_from_seq_lens" in rec:
            continue
        key = (rec["protocol"], rec["method"], rec["unit"], rec["seq_len"], rec["population"])
        one, two = measured.get((*key, 1)), measured.get((*key, 2))
        if one is None or two is None or "rounds" not in one or "rounds" not in two:
            continue
        fig = compose_layers(figures_of(one), figures_of(two), rec["layers"])
        rec["rounds"] = fig["rounds"]
        rec["rounds_counted"] = dict(
            setting=setting, composition="cost(1) + (N - 1) * (cost(2) - cost(1)) of the "
            "1- and 2-layer programs' counted rounds")
        rec["networks"] = networks(rec)
        said.append(f"{rec['protocol']} {rec['method']} {rec['unit']} layers={rec['layers']} "
                    f"seq {rec['seq_len']} (composed): {rec['rounds']} rounds")
    slices = {(r["protocol"], r["method"], r["entries"]): r for r in records
              if r["kind"] == "measured" and r["method"] in SEQ_FREE}
    for rec in records:  # the whole update, read off the line through two measured slices
        if rec["kind"] != "composed" or "composed_from_entries" not in rec:
            continue
        line = tuple(slices.get((rec["protocol"], rec["method"], n))
                     for n in rec["composed_from_entries"])
        if any(r is None or "rounds" not in r for r in line):
            continue
        whole = whole_update_record(line, [], rec["composition"])
        rec.update(rounds=whole["rounds"], rounds_counted=whole["rounds_counted"])
        rec["networks"] = networks(rec)
        said.append(f"{rec['protocol']} {rec['method']} {rec['unit']} {rec['entries']} entries "
                    f"(composed): {rec['rounds']} rounds")
    return said
