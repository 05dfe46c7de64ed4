"""experiments/: one toolkit (common.py), no script importing another, every script a Hydra
app whose documented legacy command lines still parse, protocol configs on one base."""

import ast
import pathlib
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import common  # noqa: E402


def imported_modules(path: pathlib.Path) -> set[str]:
    """Top-level names of every module `path` imports (absolute imports, anywhere in it)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def has_main_entry(path: pathlib.Path) -> bool:
    """Whether `path` has a top-level `if __name__ == "__main__":` block (a script)."""
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = {getattr(n, "id", None) for n in [node.test.left, *node.test.comparators]}
            values = {getattr(n, "value", None) for n in node.test.comparators}
            if "__name__" in names and "__main__" in values:
                return True
    return False


def test_no_experiments_file_imports_another_script():
    """A script is an experiments/*.py file with a `__main__` entry; the files without one are
    toolkit modules (common.py, wan_relay.py, callbacks.py), which any file may import. No file
    imports a script: what two scripts share lives in a toolkit module or the library."""
    files = sorted(EXPERIMENTS.glob("*.py"))
    scripts = {p.stem for p in files if has_main_entry(p)}
    toolkit = {p.stem for p in files} - scripts
    assert {"common", "wan_relay"} <= toolkit and "bench_wan" in scripts
    offenders = {p.name: sorted(imported_modules(p) & scripts) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_toolkit_scripts_do_not_edit_sys_path():
    # `python experiments/x.py` puts experiments/ on sys.path; secfwt_jax is installed
    users = [p for p in EXPERIMENTS.glob("*.py") if "common" in imported_modules(p)]
    assert len(users) >= 10
    assert [p.name for p in users if "sys.path" in p.read_text()] == []


@pytest.mark.parametrize("command, expected", [
    # the project brief's command, and others from README.md and results/ records
    ("bench_simulation.py --model roberta-large", "model: roberta-large"),
    ("bench_simulation.py --model tiny --cases tuning --out results/simulation/end_to_end",
     "out: results/simulation/end_to_end"),
    ("bench_optimizer.py --threads 1 --generations 20 --repeats 5 --quality-dims",
     "quality_dims: []"),
    ("bench_public_mask.py --model roberta-base --layers 1 --seq 128", "seq: 128"),
    ("bench_attention.py cell --attention softmax_puma --protocol cheetah --seq-len 512 "
     "--head-chunks 3", "head_chunks: 3"),
    ("bench_attention.py trig --protocols aby3 --n 196608", "'n': 196608"),
    ("bench_forward.py model=roberta-base layers=1 'protocols=[aby3,semi2k]'", "- semi2k"),
    ("attention_error.py", "seq_len: 128"),
    ("attention_grid.py --force --seq-lens 64 128", "force: true"),
    ("attention_report.py", "records: null"),
    ("bench_tls.py --protocol aby3", "repeats: 5"),
    ("probe_dealers.py", "out: results/dealer"),
    ("probe_eigh_threads.py", "rounds: 3"),
    ("relabel_dealer.py 'dirs=[results/batching]'", "- results/batching"),
    ("bench_iteration.py model=roberta-base 'compose_from=[1,2]' seq_len=128 batch=1 "
     "population=20 'protocols=[aby3]' "
     "'methods=[fot_secfwt,fot_secfwt_fused,fot_secfwt_even,fot_secfwt_lean]' generation=skip "
     "timeout_s=7200 out_dir=results/iteration/quiet/lean_query", "- fot_secfwt_lean"),
    ("bench_iteration.py model=tiny layers=2 'compose_from=[1,2]' seq_len=16 prompt_len=4 "
     "population=4 out_dir=results/iteration/validation_tiny_composed_L2", "population: 4"),
    ("bench_wan.py --model roberta-base --layers 1 --seq-len 32 --prompt-len 8 --batch 1 "
     "--protocols aby3 --repeats 3 --timeout-s 600 --out results/wan/roberta-base-layer",
     "timeout_s: 600.0"),
    ("bench_wan.py --kernel mul_1e5 --protocols aby3 cheetah --shapes 1ms", "- cheetah"),
    ("bench_wan.py model=roberta-large layers=1 seq_len=32 prompt_len=12 batch=1 "
     "'protocols=[cheetah]' 'shapes=[10ms_1gbps]' repeats=1 direct=false timeout_s=3600 "
     "out=results/wan/rounds/cheetah_fot", "direct: false"),
    ("bench_wan.py model=roberta-large seq_len=128 batch=1 part=sft_update update_slice=256 "
     "'protocols=[cheetah]' 'shapes=[10ms_1gbps]' repeats=1 direct=false timeout_s=3600 "
     "out=results/wan/rounds/cheetah_sft", "update_slice: 256"),
    ("attach_rounds.py 'records=[results/iteration/quiet/cheetah/fot_seq32/iteration.json,"
     "results/iteration/quiet/cheetah/fot_seq64/iteration.json]' "
     "'runs=[results/wan/rounds/cheetah_fot/runs.json]'",
     "- results/wan/rounds/cheetah_fot/runs.json"),
    pytest.param("bench_wan.py model=roberta-base layers=1 seq_len=128 prompt_len=0 batch=1 "
                 "method=fot attention=rfa 'protocols=[cheetah]' 'shapes=[10ms_1gbps]' "
                 "repeats=1 timeout_s=3600 out=results/wan/cheetah_layer_seq128 "
                 "\"machine='the 2-core machine'\"", "attention: rfa",
                 marks=pytest.mark.slow),
    pytest.param("bench_optimizer.py threads=1 generations=20 repeats=5 'quality_dims=[100]' "
                 "\"machine='the 2-core machine with nothing else running'\"",
                 "- cmaes_cholesky", marks=pytest.mark.slow),
    pytest.param("attention_report.py out=results/attention/quiet "
                 "\"machine='a quiet machine'\"", "machine: a quiet machine",
                 marks=pytest.mark.slow),
    ("ablate_runtime.py 'variants=[default]' repeats=2 activation=gelu_even rfa_lean=true "
     "out=results/runtime_ablation/gelu_fusion/gelu_even_lean", "rfa_lean: true"),
    ("wan_report.py --runs results/wan/runs.json results/wan/v2/runs.json",
     "- results/wan/v2/runs.json"),
    ("approx_real.py --n-test 128 --n-attn 8 --backends plaintext plaintext_fxp --variants "
     "exact gelu_puma gelu_even 'secfwt (rfa M=64 normalize_qk + gelu_puma)' "
     "'secfwt with gelu_even (rfa M=64 normalize_qk + gelu_even)' --name approx_real_gelu_even",
     "- secfwt with gelu_even (rfa M=64 normalize_qk + gelu_even)"),
    ("real_aby3_check.py --out results/real_tuning/aby3_check.json", "n_train: 8"),
    ("real_tuning_table.py --runs results/real_tuning/runs", "runs: results/real_tuning/runs"),
])
def test_documented_command_composes_its_config(command, expected):
    import shlex

    script, *args = shlex.split(command)
    out = subprocess.run([sys.executable, str(EXPERIMENTS / script), *args, "--cfg", "job"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert expected in out.stdout.splitlines()


def test_legacy_arguments_become_hydra_overrides():
    import dataclasses

    @dataclasses.dataclass
    class Config(common.AppConfig):
        seq_len: int = 1
        fast: bool = False
        dims: list[int] = dataclasses.field(default_factory=list)
        name: str | None = None

    got = common.legacy_overrides(
        ["--seq-len", "4", "--fast", "--dims", "1", "2", "--name=a b", "x=1", "--cfg", "job"],
        Config)
    assert got == ["seq_len=4", "fast=true", "dims=[1,2]", "name='a b'", "x=1", "--cfg", "job"]
    assert common.legacy_overrides(["--dims", "--fast"], Config) == ["dims=[]", "fast=true"]
    assert common.legacy_overrides(["--dims", "3,4"], Config) == ["dims=[3,4]"]
    with pytest.raises(SystemExit, match="unknown argument '--bogus'; accepted: .*seq_len"):
        common.legacy_overrides(["--bogus", "1"], Config)


def test_a_config_that_retypes_hydra_settings_is_refused():
    import dataclasses

    @dataclasses.dataclass
    class Config(common.AppConfig):
        hydra: dict = dataclasses.field(default_factory=common.hydra_settings("x"))

    with pytest.raises(TypeError, match="declare `defaults: list\\[Any\\]` and `hydra: Any`"):
        common.hydra_app(Config, "retyped")


def test_command_line_is_the_line_as_typed():
    assert common.command_line(["experiments/x.py", "--a", "b c"]) == \
        "python experiments/x.py --a 'b c'"


def test_markdown_table_renders_header_rule_and_rows():
    assert common.markdown_table(["a", "b"], [[1, "x"], [2.5, None]]) == [
        "| a | b |", "|---|---|", "| 1 | x |", "| 2.5 | None |"]


def test_record_choice_median_and_latest_ok():
    assert common.median_item([3.0, 1.0, 2.0], key=float) == 2.0
    recs = [dict(k=1, status="ok", unix_time=1, v="old"),
            dict(k=1, status="not_run", unix_time=2, v="failed rerun"),
            dict(k=2, status="not_run", unix_time=1, v="only")]
    latest = common.latest_per_key(recs, key=lambda r: r["k"])
    assert (latest[1]["v"], latest[2]["v"]) == ("old", "only")


def test_protocol_configs_share_one_base():
    # base.yaml: what every protocol has; spu_base.yaml (extends base): the SPU protocols'
    # links (tls, cluster); a protocol file adds its name and its own keys only
    protocols = EXPERIMENTS / "conf" / "protocol"
    bases = {name: yaml.safe_load((protocols / f"{name}.yaml").read_text())
             for name in ("base", "spu_base")}
    assert bases["spu_base"]["defaults"] == ["base", "_self_"]
    inherited = {"base": set(bases["base"]) - {"name"},
                 "spu_base": (set(bases["base"]) | set(bases["spu_base"])) - {"name", "defaults"}}
    seen = set()
    for path in protocols.glob("*.yaml"):
        if path.stem in bases:
            continue
        cfg = yaml.safe_load(path.read_text())
        parent = cfg["defaults"][0]
        assert cfg["defaults"] == [parent, "_self_"] and parent in bases, path.name
        assert cfg["name"] == path.stem
        assert not set(cfg) & inherited[parent], f"{path.name} repeats base keys"
        seen.add((path.stem, parent))
    assert {("aby3", "spu_base"), ("plaintext", "base")} <= seen


@pytest.mark.slow
@pytest.mark.spu
def test_ablate_runtime_runs_on_the_tiny_model(tmp_path):
    """The runtime/activation ablation end to end (tiny model, one round): its record holds the
    bytes and the error against plaintext, and the fused GeLU sends fewer bytes than PUMA's."""
    import json

    bytes_ = {}
    for act in ("gelu_puma", "gelu_puma_fused"):
        out = subprocess.run(
            [sys.executable, str(EXPERIMENTS / "ablate_runtime.py"), "model=tiny", "repeats=1",
             "variants=[default]", f"activation={act}", f"out={tmp_path / act}"],
            capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-3000:]
        rec = json.loads((tmp_path / act / "options_tiny_L1_aby3.json").read_text())
        (row,) = rec["summary"]
        assert f"activation={act}" in rec["setting"]["method"]
        assert row["max_abs_err"] < 1e-2
        bytes_[act] = row["bytes_total"]
    assert bytes_["gelu_puma_fused"] < bytes_["gelu_puma"]


@pytest.mark.slow
@pytest.mark.spu
def test_rounds_counted_on_the_relay_go_into_the_iteration_records(tmp_path):
    """bench_wan with the relayed parties only (direct=false) runs bench_iteration's SecFwT query
    and its SFT forward + backward (part=sft_grad) (the same bytes and send actions in all),
    and attach_rounds puts each one's relay depth into its record, whose WAN time then charges
    those rounds (the layer composition of counted rounds: tests/test_costs.py)."""
    import json

    def script(name, *args):
        out = subprocess.run([sys.executable, str(EXPERIMENTS / name), *args],
                             capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    shape = ["model=tiny", "layers=1", "seq_len=16", "prompt_len=4", "batch=1"]
    script("bench_iteration.py", *shape, "methods=[fot_secfwt,sft_grad]", "generation=skip",
           f"out_dir={tmp_path / 'it'}", f"hydra.run.dir={tmp_path / 'h'}")
    relayed = [*shape, "protocols=[aby3]", "shapes=[10ms_1gbps]", "repeats=1", "direct=false",
               f"out={tmp_path / 'wan'}"]
    script("bench_wan.py", *relayed)
    script("bench_wan.py", *relayed, "part=sft_grad")  # the SFT step's forward + backward
    runs = json.loads((tmp_path / "wan" / "runs.json").read_text())
    assert [sorted(r["runs"]) for r in runs] == [["10ms_1gbps"]] * 2  # no LAN run
    records = str(tmp_path / "it" / "iteration.json")
    said = script("attach_rounds.py", f"records=[{records}]",
                  f"runs=[{tmp_path / 'wan' / 'runs.json'}]")
    recs = {r["method"]: r for r in json.loads(open(records).read())}
    for method, run in zip(("fot_secfwt", "sft_grad"), runs):
        rec = recs[method]
        depth = run["runs"]["10ms_1gbps"][0]["relay"]["depth"]
        assert rec["rounds"] == depth > 100 and f"{method} " in said and f"{depth} rounds" in said
        assert sum(run["cost"]["bytes_sent"]) == rec["bytes_total"]  # ABY3: to the byte
        assert rec["networks"]["wan100"]["latency_s"] == pytest.approx(depth * 0.080)
    assert recs["sft_grad"]["rounds"] != recs["fot_secfwt"]["rounds"]
    assert "(rounds counted)" in (tmp_path / "it" / "iteration.md").read_text()


def test_bench_iteration_fot_methods_are_run_py_methods():
    """Each forward-only benchmark method is its run.py method config's layers; fot_secfwt_fused
    and fot_secfwt_even are fot_secfwt with another GeLU and nothing else."""
    import bench_iteration as bi  # experiments/ is on sys.path (conftest.py)

    secfwt = bi.fot_variant("fot_secfwt")
    assert secfwt["activation"] == "gelu_puma"
    for method, act in (("fot_secfwt_fused", "gelu_puma_fused"), ("fot_secfwt_even", "gelu_even")):
        other = bi.fot_variant(method)
        assert other["activation"] == act
        assert {k: v for k, v in other.items() if k != "activation"} == {
            k: v for k, v in secfwt.items() if k != "activation"}
    assert bi.fot_variant("fot_rfa")["attention"] == "rfa"


def test_bench_wan_refuses_an_unknown_part_naming_the_accepted_ones():
    out = subprocess.run([sys.executable, str(EXPERIMENTS / "bench_wan.py"), "part=sft_step"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode != 0
    assert "unknown part 'sft_step'; accepted: sft_grad, sft_update" in out.stderr
