"""Run directories: what a run writes (the checkpoint of the optimizer state and the loop's
bookkeeping, metrics.jsonl), and the check that a rerun in the same directory is the same run.

A run directory holds `fingerprint.json`: every setting that determines the tuning trajectory
(task and the sha256 of its data files, model and its weight files, method, protocol,
optimizer and its parameters, seed, budget, popsize, intrinsic_dim, prompt_len, ...), as
built by the caller (experiments/run.py), plus the list of budgets the run was given.
`prepare_run_dir` is called before anything in the directory is written: a rerun whose
fingerprint differs is refused naming the keys that differ; only `budget` may change, and
only upwards (to continue a finished run), which is recorded in `budgets`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

from .checkpoint import load_state, save_state

FINGERPRINT = "fingerprint.json"
# Everything a run writes into its directory (the checkpoint's temporary names included).
RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "best_prompt_z.json",
             "checkpoint", "checkpoint.old", "checkpoint.tmp", FINGERPRINT)
# The one fingerprint key a resumed run may change (raise only).
BUDGET = "budget"


class RunDirError(ValueError):
    """A run directory that this run must not write into (and why)."""


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes, or "missing" when there is no such file (the
    loader then reports the missing file itself)."""
    if not os.path.isfile(path):
        return "missing"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dir_sha256(directory: str | os.PathLike) -> dict[str, str]:
    """{file name: sha256} of the regular files directly in `directory` (a tokenizer or a
    checkpoint folder); {} when it is not a directory (e.g. a hub name)."""
    if not os.path.isdir(directory):
        return {}
    return {
        name: file_sha256(os.path.join(directory, name))
        for name in sorted(os.listdir(directory))
        if os.path.isfile(os.path.join(directory, name))
    }


def _flatten(d, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def fingerprint_diff(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every (dotted) key whose value differs, sorted."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    return [
        f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]


def existing_run_files(run_dir: str) -> list[str]:
    return [n for n in RUN_FILES if os.path.exists(os.path.join(run_dir, n))]


def prepare_run_dir(run_dir: str, fingerprint: dict, resume: bool) -> dict:
    """Check `run_dir` for a run with `fingerprint` (a JSON-able dict holding `budget`) before
    anything in it is written. Returns the record to store with `write_fingerprint`:
    {"fingerprint": ..., "budgets": [first budget, ..., this one]}.

    Raises RunDirError when the directory holds a run and resume is false, when it holds run
    files but no fingerprint, when a fingerprint key other than budget differs (each named
    with its old and new value), or when the budget is lowered.
    """
    # a JSON round trip, so that tuples, numpy scalars etc. compare as they will be stored
    fingerprint = json.loads(json.dumps(fingerprint))
    present = existing_run_files(run_dir) if os.path.isdir(run_dir) else []
    if not present:
        return dict(fingerprint=fingerprint, budgets=[fingerprint[BUDGET]])
    if not resume:
        raise RunDirError(
            f"run directory {run_dir!r} already holds a run ({', '.join(present)}) and "
            "resume=false: give a new hydra.run.dir (or delete that directory) to start a new "
            "run, or resume=true to continue this one"
        )
    path = os.path.join(run_dir, FINGERPRINT)
    if not os.path.isfile(path):
        raise RunDirError(
            f"run directory {run_dir!r} holds {', '.join(present)} but no {FINGERPRINT}, so a "
            "resume cannot be checked to be the same run: give a new hydra.run.dir"
        )
    try:
        with open(path) as f:
            stored = json.load(f)
        old = stored["fingerprint"]
        if BUDGET not in old:
            raise KeyError(BUDGET)
    except (ValueError, KeyError, TypeError) as e:
        raise RunDirError(
            f"{path} is unreadable ({type(e).__name__}: {e}), so a resume cannot be checked to "
            "be the same run: give a new hydra.run.dir"
        ) from e
    diff = fingerprint_diff(
        {k: v for k, v in old.items() if k != BUDGET},
        {k: v for k, v in fingerprint.items() if k != BUDGET},
    )
    if diff:
        raise RunDirError(
            f"run directory {run_dir!r} holds a different run; resume refused (nothing in it "
            f"was changed). Settings that differ (stored -> given): {'; '.join(diff)}. Rerun "
            "with the stored settings, or give a new hydra.run.dir"
        )
    budgets = list(stored.get("budgets", [old[BUDGET]]))
    if fingerprint[BUDGET] < old[BUDGET]:
        raise RunDirError(
            f"run directory {run_dir!r} was run with budget {old[BUDGET]}; a resume may only "
            f"keep or raise the budget (given {fingerprint[BUDGET]}): give a new "
            "hydra.run.dir for a shorter run"
        )
    if fingerprint[BUDGET] > old[BUDGET]:
        budgets.append(fingerprint[BUDGET])
    return dict(fingerprint=fingerprint, budgets=budgets)


def write_fingerprint(run_dir: str, record: dict) -> None:
    """Store the record of `prepare_run_dir` as run_dir/fingerprint.json (atomically)."""
    os.makedirs(run_dir, exist_ok=True)
    tmp = os.path.join(run_dir, FINGERPRINT + ".tmp")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(run_dir, FINGERPRINT))


def save_run(directory: str, state, loop: dict) -> None:
    """Write the optimizer state and the loop's bookkeeping atomically: into a fresh folder,
    then renamed over the old one, so a kill mid-write leaves the previous checkpoint whole."""
    tmp = directory + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    save_state(os.path.join(tmp, "optimizer.npz"), state)
    with open(os.path.join(tmp, "loop.json"), "w") as f:
        json.dump(loop, f)
    old = directory + ".old"
    if os.path.exists(directory):
        os.replace(directory, old)
    os.replace(tmp, directory)
    if os.path.exists(old):
        shutil.rmtree(old)


def load_run(directory: str, like):
    """(optimizer state, loop bookkeeping) of a checkpoint written by `save_run`."""
    if not os.path.exists(os.path.join(directory, "loop.json")) and os.path.exists(
        directory + ".old"
    ):
        directory += ".old"  # killed between the two renames
    state = load_state(os.path.join(directory, "optimizer.npz"), like=like)
    with open(os.path.join(directory, "loop.json")) as f:
        return state, json.load(f)


def append_jsonl(path, rec):
    """Append `rec` as one JSON line to `path` (metrics.jsonl); nothing when path is None."""
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")


def truncate_jsonl(path, generation: int):
    """Drop metric lines written after the checkpoint, so a resumed run's file equals an
    uninterrupted run's."""
    if not path or not os.path.exists(path):
        return
    with open(path) as f:
        keep = [line for line in f if json.loads(line)["generation"] <= generation]
    with open(path, "w") as f:
        f.writelines(keep)
