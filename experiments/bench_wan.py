"""Measured WAN times: SPU parties in mp mode through a relay that adds latency and a bandwidth
limit on every link (experiments/wan_relay.py), against the same call with direct loopback links.

    python experiments/bench_wan.py --model tiny --protocols aby3 cheetah --repeats 3
    python experiments/bench_wan.py --model roberta-base --layers 1 --seq-len 32 --batch 1 ...
    python experiments/bench_wan.py --kernel batched_matmul_64x16x16x16 --protocols aby3
    python experiments/bench_wan.py model=roberta-large layers=1 seq_len=16 batch=1 \
        part=sft_grad 'protocols=[cheetah]' 'shapes=[10ms_1gbps]' repeats=1 direct=false

For each protocol two mp backends hold the same weights: one with direct loopback links (LAN),
one whose parties reach each other only through the relay. Every repeat runs the call once per
setting in turn (direct, then the relay at each shape), so the machine's load hits all settings
alike; medians over repeats are reported. Adds one record per (model, protocol) to
OUT/runs.json, rewritten after every repeat (`summary`: per-call wall times, the relay's counts,
SPU's bytes and send actions); experiments/wan_report.py turns runs.json files into tables.
Party count: 3 for aby3, else 2 (semi2k, cheetah).

`direct=false` starts the relayed parties only (no LAN column): for counting the rounds of a
program that two sets of parties do not fit in memory (Cheetah at roberta-large shapes);
experiments/attach_rounds.py puts those counts into bench_iteration's records of the same
program (same bytes per party, to the byte). Without direct parties there is no warm-up call:
the first call is counted, as bench_iteration measures one (a fresh backend, first-call setup
such as Cheetah's included).

How the relay gets between the parties: yacl's brpc link listens on the address a party's own
Desc gives for itself and connects to the addresses it gives for the others, and the Desc
objects of different parties need not agree. So party r is started with a Desc whose own entry
is its real listener and whose entry for party s is the relay's port for the route r -> s
(`relayed_party_main`, patched into spu_hosts for this script only; the library is unchanged).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time

import common

VIEWS_ENV = "SECFWT_WAN_VIEWS"  # json {own listen address: [address of party 0, 1, ...]}

SHAPES = {  # name: (one-way latency s, uplink bits/s or None)
    "relay0": (0.0, None),
    "1ms": (0.001, None),  # anchor: every round sleeps, as on a WAN (see wan_report.py)
    "10ms_1gbps": (0.010, 1e9),
    "40ms_200mbps": (0.040, 200e6),
    "20ms_500mbps": (0.020, 500e6),
    "80ms_100mbps": (0.080, 100e6),
}


def relayed_party_main(rank, addresses, *rest):
    """spu_party.party_main with this party's view of the addresses (VIEWS_ENV), if any."""
    from secfwt_jax.backend.spu_party import party_main

    views = json.loads(os.environ.get(VIEWS_ENV, "{}"))
    party_main(rank, views.get(addresses[rank], addresses), *rest)


def relayed_backend(protocol: str, timeout_s: float):
    """(backend whose links all pass the relay, relay)."""
    from wan_relay import Relay, free_port

    from secfwt_jax.backend import make_backend, spu_hosts

    n = 3 if protocol == "aby3" else 2
    own = [f"127.0.0.1:{free_port()}" for _ in range(n)]
    routes, views = [], json.loads(os.environ.get(VIEWS_ENV, "{}"))
    for r in range(n):
        view = list(own)
        for s in range(n):
            if s != r:
                port = free_port()
                routes.append((port, int(own[s].rsplit(":", 1)[1]), r, s))
                view[s] = f"127.0.0.1:{port}"
        views[own[r]] = view
    os.environ[VIEWS_ENV] = json.dumps(views)  # read by the spawned party processes
    spu_hosts.party_main = relayed_party_main
    relay = Relay(routes, n)
    return make_backend(protocol, mode="mp", timeout_s=timeout_s, addresses=own), relay


def layer_overrides(args) -> dict:
    """The layer variants set on the command line (attention=, activation=, rfa_trig=)."""
    return {k: getattr(args, k) for k in ("attention", "activation", "rfa_trig")
            if getattr(args, k)}


def model_and_inputs(args):
    """(cfg, config, params, words, inputs): the query of `args.method` (default secfwt: rfa
    attention with the masked cos/sin, gelu_puma, normalize_qk; fot_puma: the exact forward with
    PUMA's softmax and GeLU) with random weights, built as bench_forward builds its query
    (common.variant_model, common.query_inputs)."""
    from omegaconf import OmegaConf

    conf = common.CONF_DIR
    model = OmegaConf.load(os.path.join(conf, "model", f"{args.model}.yaml"))
    method = OmegaConf.load(os.path.join(conf, "method", f"{args.method}.yaml"))
    cfg = OmegaConf.create(dict(
        model=model, layers=args.layers, seed=0, batch=args.batch, prompts=args.prompts,
        prompt_len=args.prompt_len, seq_len=args.seq_len, num_labels=2,
        num_features=method.get("num_features", 64),
        normalize_qk=method.get("normalize_qk", False),
    ))
    variant = dict(attention=method.attention, activation=method.activation,
                   rfa_trig=method.get("rfa_trig", "builtin"))
    variant.update(layer_overrides(args))
    config, params, _ = common.variant_model(cfg, variant)
    words, inputs = common.query_inputs(cfg, config, params)
    return cfg, config, params, words, inputs


def model_setup(args):
    """(record fields, setup(backend) -> call): one SecFwT query of the model."""
    cfg, config, params, words, inputs = model_and_inputs(args)

    def setup(be):
        secure, extra, _, _ = common.query_functions(config, words, be, cfg)
        fn = be.compile(secure)
        handle = be.put(params, owner="model")
        fn.precompile(handle, *inputs, *extra)
        return lambda: fn(handle, *inputs, *extra)

    meta = dict(model=args.model, layers=config.num_hidden_layers, hidden=config.hidden_size,
                seq_len=args.seq_len, prompt_len=args.prompt_len, batch=args.batch,
                prompts=args.prompts, method=args.method,
                **layer_overrides(args))
    return meta, setup


def iteration_cfg(args):
    """bench_iteration's settings for the SFT part `args.part` of the model (its defaults,
    common.ITERATION_DEFAULTS, otherwise), so that the relayed run is bench_iteration's
    program, byte for byte (attach_rounds refuses a run that is not)."""
    from omegaconf import OmegaConf

    model = OmegaConf.merge(OmegaConf.structured(common.ModelGroup), OmegaConf.load(
        os.path.join(common.CONF_DIR, "model", f"{args.model}.yaml")))
    return OmegaConf.create(dict(common.ITERATION_DEFAULTS, model=model, seq_len=args.seq_len,
                                 batch=args.batch, layers=args.layers))


def part_setup(args):
    """(record fields, setup(backend) -> call): one call of the SFT part `args.part` as
    bench_iteration measures it: sft_grad (forward + backward) on a model of `args.layers`
    encoder layers, or sft_update (Adam) on the first 1/update_slice of every trainable
    parameter of the whole model (common.sft_grad_program / sft_update_program)."""
    cfg = iteration_cfg(args)
    config = common.iteration_model_config(cfg, args.layers)
    meta = dict(model=args.model, layers=config.num_hidden_layers, hidden=config.hidden_size,
                seq_len=args.seq_len, prompt_len=0, batch=args.batch, prompts=1,
                method=args.part, part=args.part)
    if args.part == "sft_grad":
        def program(be):
            return common.sft_grad_program(cfg, be, args.layers)
    else:  # sft_update: a record of the whole model's layers, one slice of its parameters
        whole = common.sft_trainable(cfg)
        trainable = common.param_slices(whole, int(args.update_slice))
        meta.update(slice_divisor=int(args.update_slice), entries=common.n_entries(trainable),
                    entries_full=common.n_entries(whole))

        def program(be):
            return common.sft_update_program(cfg, be, trainable)

    def setup(be):
        fn, call_args = program(be)
        fn.precompile(*call_args)
        return lambda: fn(*call_args, reveal=False)

    return meta, setup


PARTS = ("sft_grad", "sft_update")  # part=: the SFT step's two programs (bench_iteration)

KERNELS = {  # name: (function, input shapes); probes of what one send action costs
    "mul_1e5": (lambda x, y: x * y, [(100_000,), (100_000,)]),
    "matmul_256x64x64": (lambda x, y: x @ y, [(256, 64), (64, 64)]),
    "batched_matmul_64x16x16x16": (lambda x, y: x @ y, [(64, 16, 16), (64, 16, 16)]),
}


def kernel_setup(name: str):
    import numpy as np

    f, shapes = KERNELS[name]
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]

    def setup(be):
        fn = be.compile(f)
        fn.precompile(*xs)
        return lambda: fn(*xs)

    return dict(model=f"kernel {name}", layers=0, hidden=0, seq_len=0, prompt_len=0,
                batch=0, method="-"), setup


def delta(after: dict, before: dict) -> dict:
    return {
        "flights": [a["flights"] - b["flights"] for a, b in zip(after["parties"],
                                                                before["parties"])],
        "data_bytes": [a["data_bytes_sent"] - b["data_bytes_sent"]
                       for a, b in zip(after["parties"], before["parties"])],
        "data_chunks": [a["data_chunks_sent"] - b["data_chunks_sent"]
                        for a, b in zip(after["parties"], before["parties"])],
        "ack_bytes": [a["ack_bytes_sent"] - b["ack_bytes_sent"]
                      for a, b in zip(after["parties"], before["parties"])],
        "copied_bytes": after["copied_bytes"] - before["copied_bytes"],
        "depth": after["depth"] - before["depth"],
    }


def run_protocol(protocol: str, args, shapes: list[str], meta: dict, setup, save) -> dict:
    """Repeats of the call on every setting; save(record) after each repeat (a run cut short
    keeps the repeats it finished)."""
    from wan_relay import Shape

    from secfwt_jax.backend import make_backend

    # direct=False: the relayed parties only (counting the rounds of a program too large for
    # two sets of parties in memory); its records have no LAN run and validate nothing
    direct = make_backend(protocol, mode="mp", timeout_s=args.timeout_s) if args.direct else None
    relayed, relay = relayed_backend(protocol, args.timeout_s)
    runs = {name: [] for name in ["lan"] * bool(direct) + shapes}
    cost_rec = None
    try:
        calls = {"relay": setup(relayed)}
        if direct is not None:  # warm-up (first-call effects) on both
            calls["direct"] = setup(direct)
            calls["direct"]()
            calls["relay"]()
        # else no warm-up: the first call is counted, as bench_iteration measures a program (on
        # a fresh backend, first-call setup included), so that the two send the same bytes
        for rep in range(args.repeats):
            for name in runs:
                if name == "lan":
                    _, cost = calls["direct"]()
                    rel = None
                else:
                    lat, bw = SHAPES[name]
                    relay.set_shape(Shape(name, lat, bw))
                    before = relay.stats()
                    _, cost = calls["relay"]()
                    rel = delta(relay.stats(), before)
                    relay.set_shape(Shape("direct"))
                runs[name].append(dict(wall_s=cost.wall_s, relay=rel))
                if cost_rec is None:
                    cost_rec = dict(
                        bytes_sent=list(cost.bytes_sent), send_actions=list(cost.send_actions),
                        recv_actions=list(cost.recv_actions), exec_s=list(cost.exec_s),
                        ops={k: [s.count, s.send_bytes, s.send_actions]
                             for k, s in cost.ops.items() if s.send_bytes})
                extra = f" flights {rel['flights']} depth {rel['depth']}" if rel else ""
                print(f"{protocol} rep {rep} {name}: wall {cost.wall_s:.2f} s{extra}", flush=True)
            save(summary(protocol, meta, args, shapes, cost_rec, runs, rep + 1))
    finally:
        if direct is not None:
            direct.close()
        relayed.close()
        relay.close()
    return summary(protocol, meta, args, shapes, cost_rec, runs, args.repeats)


def summary(protocol, meta, args, shapes, cost_rec, runs, repeats) -> dict:
    return dict(
        protocol=protocol, **meta, repeats=repeats,
        shapes={k: dict(latency_s=SHAPES[k][0], bandwidth_bps=SHAPES[k][1]) for k in shapes},
        cost=cost_rec, runs={k: v[:repeats] for k, v in runs.items()},
        median_wall_s={k: statistics.median(r["wall_s"] for r in v[:repeats])
                       for k, v in runs.items()},
    )


@dataclasses.dataclass
class Config(common.AppConfig):
    """The benchmark's settings (legacy form: --model tiny --protocols aby3 cheetah)."""

    model: str = "tiny"  # a conf/model/*.yaml preset
    layers: int | None = None  # override the preset's encoder layers
    seq_len: int = 16
    prompt_len: int = 4
    batch: int = 4
    prompts: int = 1  # candidate prompts in one call
    method: str = "secfwt"  # a conf/method/*.yaml
    # override the method's layer, e.g. the bench_forward rows: method=fot attention=rfa
    attention: str | None = None
    activation: str | None = None
    rfa_trig: str | None = None
    kernel: str | None = None  # time this small kernel (KERNELS) instead of the model's query
    # or one part of an SFT step instead of the query (bench_iteration's programs, to count
    # their rounds): sft_grad (layers=, seq_len=) | sft_update (update_slice=)
    part: str | None = None
    update_slice: int = 512  # part=sft_update: the first 1/update_slice of every parameter
    protocols: list[str] = dataclasses.field(default_factory=lambda: ["aby3", "cheetah"])
    shapes: list[str] = dataclasses.field(
        default_factory=lambda: ["1ms", "10ms_1gbps", "40ms_200mbps"])  # SHAPES
    repeats: int = 3
    # false: no direct (LAN) parties, only the relayed ones, to count the rounds of a program
    # that two sets of parties do not fit in memory (experiments/attach_rounds.py reads them)
    direct: bool = True
    timeout_s: float = 300.0
    out: str = "results/wan"
    machine: str = "one shared 2-core machine"  # how the machine was used (into each record)


@common.hydra_app(Config, "bench_wan")
def main(args) -> None:
    bad = [s for s in args.shapes if s not in SHAPES]
    if bad:
        raise ValueError(f"unknown shapes {bad}; accepted: {', '.join(SHAPES)}")
    if args.kernel is not None and args.kernel not in KERNELS:
        raise ValueError(f"unknown kernel {args.kernel!r}; accepted: {', '.join(sorted(KERNELS))}")
    if args.part is not None and args.part not in PARTS:
        raise ValueError(f"unknown part {args.part!r}; accepted: {', '.join(PARTS)}")
    command = common.command_line()
    meta, setup = (kernel_setup(args.kernel) if args.kernel else
                   part_setup(args) if args.part else model_setup(args))
    path = os.path.join(args.out, "runs.json")
    old = common.read_json(path, [])
    for protocol in args.protocols:
        t = time.perf_counter()

        def save(rec, t=t):
            rec.update(command=command, elapsed_s=time.perf_counter() - t,
                       machine=f"{args.machine}; mp mode, one process per party, relay in "
                               "the controller process",
                       date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
            common.write_json(path, old + [rec])

        rec = run_protocol(protocol, args, list(args.shapes), meta, setup, save)
        save(rec)
        old.append(rec)
        print(json.dumps(rec["median_wall_s"]), flush=True)


if __name__ == "__main__":
    main()
