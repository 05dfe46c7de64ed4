"""How far each attention variant is from softmax at a roberta-base-shaped layer.

Random weights (no pretrained RoBERTa is reachable here), seq 128, batch 1, plaintext float32.
Two weight scales: HF's initialiser (std 0.02, which makes attention nearly uniform and so flatters
every approximation) and a "peaked" setting whose query/key weights are scaled up so that the
attention logits have a standard deviation of about 2, closer to a trained model.

For each variant the table gives the relative Frobenius error of the attention output (before
the output projection) and of the whole layer's output against the softmax layer; for rfa and
favor, the mean over 4 feature seeds, for several numbers of features M.

    python experiments/attention_error.py --out results/attention_error
"""

from __future__ import annotations

import dataclasses

import common
import jax
import numpy as np

from secfwt_jax.config import ModelConfig
from secfwt_jax.model import Layer

VARIANTS = ("softmax_puma", "2quad", "rfa", "favor")


def layer_outputs(cfg: ModelConfig, params, x, mask):
    """(attention output (B, S, H) before the output dense, layer output (B, S, H))."""
    layer = Layer(cfg, 0)
    _, state = layer.apply({"params": params}, x, mask, capture_intermediates=True)
    attn = state["intermediates"]["attention"]["__call__"][0]
    return np.asarray(attn), np.asarray(layer.apply({"params": params}, x, mask))


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@dataclasses.dataclass
class Config(common.AppConfig):
    """The measurement's settings (legacy form: --seq-len 64 --features 16 64)."""

    seq_len: int = 128
    features: list[int] = dataclasses.field(default_factory=lambda: [16, 64, 256, 1024])
    seeds: int = 4  # feature seeds averaged for rfa and favor
    out: str = "results/attention_error"


@common.hydra_app(Config, "attention_error")
def main(args) -> None:
    base = ModelConfig.preset("roberta-base")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, args.seq_len, base.hidden_size)).astype(np.float32)
    mask = np.ones((1, args.seq_len), np.int32)
    params0 = Layer(base, 0).init(jax.random.PRNGKey(0), x, mask)["params"]
    records = []
    for scale_name, qk_scale in (("init_std_0.02", 1.0), ("peaked_logit_std_2", None)):
        params = jax.tree_util.tree_map(np.asarray, params0)
        if qk_scale is None:  # scale q and k weights so the logits' std is about 2
            att = params["attention"]
            s = np.einsum("sh,hd->sd", x[0], att["query"]["kernel"])[:, :64]
            t = np.einsum("sh,hd->sd", x[0], att["key"]["kernel"])[:, :64]
            std = np.std(s @ t.T / 8.0)
            qk_scale = float(np.sqrt(2.0 / std))
            params = {**params, "attention": {
                **att,
                "query": {**att["query"], "kernel": att["query"]["kernel"] * qk_scale},
                "key": {**att["key"], "kernel": att["key"]["kernel"] * qk_scale},
            }}
        ref_attn, ref_out = layer_outputs(base, params, x, mask)
        for variant in VARIANTS:
            feature_counts = args.features if variant in ("rfa", "favor") else [None]
            for m in feature_counts:
                errs_a, errs_o = [], []
                for seed in range(args.seeds if m else 1):
                    cfg = base.replace(attention=variant, num_features=m or 64, feature_seed=seed)
                    a, o = layer_outputs(cfg, params, x, mask)
                    errs_a.append(rel(a, ref_attn))
                    errs_o.append(rel(o, ref_out))
                records.append(dict(
                    weights=scale_name, qk_weight_scale=qk_scale, variant=variant,
                    num_features=m, seeds=args.seeds if m else 1,
                    attn_rel_err=float(np.mean(errs_a)), layer_rel_err=float(np.mean(errs_o)),
                ))
                print(records[-1], flush=True)

    setting = dict(
        model="roberta-base shape, one layer, random weights", seq_len=args.seq_len, batch=1,
        backend="plaintext float32", feature_kind=base.feature_kind,
        command=common.command_line(),
    )
    lines = [
        f"Setting: {setting['model']}, seq {args.seq_len}, batch 1, plaintext float32, "
        f"{base.feature_kind} features, mean over {args.seeds} feature seeds. "
        f"Command: `{setting['command']}`",
        "",
        *common.markdown_table(
            ["weights", "variant", "M", "attention rel. err", "layer output rel. err"],
            [[r["weights"], r["variant"], r["num_features"] or "-", f"{r['attn_rel_err']:.3g}",
              f"{r['layer_rel_err']:.3g}"] for r in records]),
    ]
    common.write_outputs(args.out, "attention_error", {"setting": setting, "records": records},
                         "\n".join(lines) + "\n", cfg=args)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
