"""The workflow as users run it: lint, the planned DAG, config errors, a tiny end-to-end run of
all four rows, and what a config edit reruns."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from http_server import FileServer

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
WORKFLOW_FILES = ["Snakefile", "rules", "workflow", "profiles", "config.yaml", "config.demo.yaml", "envs"]


def run(args, cwd, check=True, timeout=1200, env=None):
    proc = subprocess.run(
        SNAKEMAKE + args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env=env or {**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}")
    return proc


def planned_jobs(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count} (empty when nothing is to be done)."""
    counts = {}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Job stats:"):
            for row in lines[i + 3 :]:
                m = re.match(r"^(\w+)\s+(\d+)$", row.strip())
                if not m or m.group(1) == "total":
                    break
                counts[m.group(1)] = int(m.group(2))
            break
    return counts


def planned_wildcards(output: str, rule: str) -> list[dict[str, str]]:
    """The wildcards of each job of ``rule`` that a dry run's output lists."""
    found = []
    for block in re.split(r"\n(?=rule \w+:|localrule \w+:)", output):
        if block.startswith((f"rule {rule}:", f"localrule {rule}:")):
            m = re.search(r"^\s*wildcards: (.*)$", block, re.MULTILINE)
            found.append(dict(kv.split("=", 1) for kv in m.group(1).split(", ")) if m else {})
    return found


def copy_workflow(dest: Path) -> Path:
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    shutil.copy(ROOT / "tests/smoke/config.yaml", dest / "smoke.yaml")
    return dest


def test_lint_is_clean():
    proc = run(["--lint", "--configfile", "config.demo.yaml"], cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefmt_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules"],
        cwd=ROOT, capture_output=True, text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_paper_scale_dag(tmp_path):
    """The default config plans the paper's four rows: 14 distinct trainings (each shared by every
    row that needs it) x 5 folds, 16 distinct distillations x 4 temperatures x 5 folds, one
    evaluation per dataset and fold of its trainings and per dataset, fold and temperature of its
    distillations, and one fetch and preparation per dataset."""
    workdir = copy_workflow(tmp_path)
    out = run(["-n"], cwd=workdir).stdout
    assert planned_jobs(out) == {
        "fetch_mnist": 1,
        "fetch_modelnet40": 1,
        "fetch_jets": 1,
        "prepare_mnist": 1,
        "prepare_modelnet40": 1,
        "prepare_jets": 1,
        "make_folds": 3,
        "train_model": 70,
        "distill_student": 320,
        "evaluate_trained": 15,  # one per dataset and fold
        "evaluate_distilled": 60,  # one per dataset, fold and temperature (one recipe: plain)
        "collect_metrics": 1,
        "plot_figure1": 1,
        "plot_tradeoff": 1,
        "plot_measures": 1,
        "write_findings": 1,
        "plot_curves": 1,
        "write_row_tables": 1,
        "write_run_settings": 1,
        "all": 1,
    }
    # DGN and DGN' serve both ModelNet40 rows: each is trained once per fold, not once per row
    for teacher in ("dgcnn", "dgcnn-prime"):
        outputs = re.findall(rf"output: results/modelnet40/train/{teacher}/plain/fold(\d)/model.pt", out)
        assert sorted(outputs) == ["0", "1", "2", "3", "4"], teacher
    cache = "results/modelnet40/train/dgcnn/plain/fold0/train_logits.pt"
    producers = re.findall(rf"output: [^\n]*{cache}", out)
    readers = re.findall(rf"input: [^\n]*{cache}", out)
    assert len(producers) == 1  # one teacher cache per fold ...
    assert len(readers) == 2 * 4  # ... read by dsinv and dsequiv at 4 temperatures


# The runs whose job counts README.md states ("What each run plans"), by the names it gives them.
SCENARIOS = ("paper", "demo", "overlay", "demo overlay")


def readme_job_counts() -> dict[str, tuple[list[str], int]]:
    """README.md's table "What each run plans": run -> (its --configfile files, jobs planned)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### What each run plans\n", 1)[1].split("\n#", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"[\d,]+", cells[2]):
            configs = cells[1].strip("`").split() if cells[1].startswith("`") else []
            table[cells[0]] = (configs, int(cells[2].replace(",", "")))
    return table


def test_the_readme_states_the_job_counts_of_the_named_scenarios():
    table = readme_job_counts()
    assert sorted(table) == sorted(SCENARIOS), table
    assert table["paper"][0] == [] and table["demo"][0] == ["config.demo.yaml"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_readme_job_counts_are_the_dags(scenario, tmp_path):
    """A dry run of each run README.md names plans the number of jobs README.md states (the total
    of Snakemake's job stats, the target rule `all` included), so the page cannot go stale."""
    configs, stated = readme_job_counts()[scenario]
    workdir = copy_workflow(tmp_path)
    for name in configs:
        shutil.copy(ROOT / name, workdir / name)
    out = run(["-n", *(["--configfile", *configs] if configs else [])], cwd=workdir).stdout
    planned = planned_jobs(out)
    assert "all" in planned
    assert sum(planned.values()) == stated, (
        f"README.md says the {scenario} run plans {stated} jobs; snakemake -n plans "
        f"{sum(planned.values())}: {planned}"
    )


def planned_resources(output: str) -> dict[tuple[str, str], dict[str, str]]:
    """(rule, the model it trains or evaluates) -> that job's resources, from `snakemake -n`
    output (the last job of each pair wins; all jobs of a pair ask for the same)."""
    found = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        head = re.match(r"(?:local)?rule (\w+):", block)
        wildcards = re.search(r"wildcards: (.*)", block)
        resources = re.search(r"resources: (.*)", block)
        if not (head and wildcards and resources):
            continue
        w = dict(kv.split("=", 1) for kv in wildcards.group(1).split(", "))
        model = w.get("student") or w.get("model")
        found[(head.group(1), model)] = dict(
            kv.split("=", 1) for kv in resources.group(1).split(", ") if "=" in kv
        )
    return found


def test_small_jobs_share_a_gpu(tmp_path):
    """On a GPU config each training, distillation and evaluation asks for 100 / jobs_per_gpu of
    the local gpu_percent cap, and a whole GPU (--gpus=1) unless the cluster has shards
    (job_resources.gpu_shards), where a shared job asks for its share of shards instead."""
    workdir = copy_workflow(tmp_path)
    base = {"device": "auto", "temperatures": [4], "folds": 2}
    (workdir / "gpu.yaml").write_text(yaml.safe_dump(base))
    (workdir / "shards.yaml").write_text(yaml.safe_dump({**base, "job_resources": {"gpu_shards": 8}}))
    (workdir / "cpu.yaml").write_text(yaml.safe_dump({**base, "device": "cpu"}))
    plain = planned_resources(run(["-n", "--configfile", "gpu.yaml"], cwd=workdir).stdout)
    shards = planned_resources(run(["-n", "--configfile", "shards.yaml"], cwd=workdir).stdout)
    cpu = planned_resources(run(["-n", "--configfile", "cpu.yaml"], cwd=workdir).stdout)

    def gpu(res):
        return res["gpu"], res.get("gres", ""), res["gpu_percent"]

    # config.yaml: ResNet and DGCNN 1 job per GPU, the MNIST MLP and ModelNet DeepSets 2,
    # the jet models 4, evaluations 4
    assert gpu(plain[("train_model", "resnet")]) == ("1", "", "100")
    assert gpu(plain[("train_model", "dgcnn")]) == ("1", "", "100")
    assert gpu(plain[("train_model", "mlp")]) == ("1", "", "50")
    assert gpu(plain[("distill_student", "deepsets-inv")]) == ("1", "", "50")
    assert gpu(plain[("distill_student", "jet-mlp")]) == ("1", "", "25")
    assert gpu(plain[("evaluate_trained", None)]) == ("1", "", "25")
    assert gpu(shards[("train_model", "resnet")]) == ("1", "", "100")
    assert gpu(shards[("train_model", "mlp")]) == ("0", "shard:4", "50")
    assert gpu(shards[("distill_student", "jet-mlp")]) == ("0", "shard:2", "25")
    assert gpu(shards[("evaluate_distilled", None)]) == ("0", "shard:2", "25")
    assert {gpu(r) for r in cpu.values() if "gpu" in r} == {("0", "", "0")}
    assert len(cpu) >= 23  # every (rule, model) pair was parsed (evaluations: one per rule)


def test_a_run_on_a_machine_with_two_gpus_lets_jobs_use_both(tmp_path):
    """With two GPUs visible, a local run raises the default profile's cap of one GPU
    (gpu_percent=100) to two, and its jobs learn the GPU ids (kdinv/launch/gpus.py places each); with
    local_gpus: 1, or under the CPU, it stays at one."""
    workdir = copy_workflow(tmp_path)
    for name, cfg in {"two": {"device": "cuda"}, "one": {"device": "cuda", "local_gpus": 1},
                      "cpu": {"device": "cpu"}}.items():
        (workdir / f"{name}.yaml").write_text(yaml.safe_dump({**cfg, "temperatures": [4], "folds": 2}))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}

    def log(name):
        proc = subprocess.run(SNAKEMAKE + ["-n", "--configfile", f"{name}.yaml"], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    assert "local run on 2 GPUs (0, 1): gpu_percent cap 200" in log("two")
    assert "gpu_percent cap" not in log("one") and "gpu_percent cap" not in log("cpu")


def test_a_retry_asks_for_more_time_and_memory_up_to_the_cap(tmp_path):
    """What each attempt of a training or distillation asks the scheduler for. A dry run plans
    attempt 1; ``--attempt n`` plans attempt n, as Snakemake does for a retry (it evaluates the
    rules' resource functions with the attempt, and passes --attempt to the cluster job). The time
    grows with the attempt up to job_resources.max_runtime, the memory by mem_growth per retry,
    and SIGTERM comes signal_seconds before the limit, at most a quarter of it."""
    workdir = copy_workflow(tmp_path)
    (workdir / "caps.yaml").write_text(yaml.safe_dump({
        "temperatures": [4], "folds": 2,
        "job_resources": {"runtime": 240, "max_runtime": 600, "mem_mb": 8000, "mem_growth": 1.5},
    }))
    (workdir / "short.yaml").write_text(yaml.safe_dump({
        "temperatures": [4], "folds": 2, "job_resources": {"runtime": 1, "mem_mb": 1000, "mem_growth": 1.0},
    }))

    def asked(configfile, attempt):
        plan = planned_resources(run(["-n", "--configfile", configfile, "--attempt", str(attempt)], cwd=workdir).stdout)
        rules = {rule: res for (rule, model), res in plan.items() if model in ("mlp", None)}
        return {
            rule: (int(rules[rule]["runtime"]), int(rules[rule]["mem_mb"]), rules[rule].get("slurm_extra", ""))
            for rule in ("train_model", "distill_student", "evaluate_trained")
        }

    for attempt, runtime, mem in [(1, 240, 8000), (3, 600, 18000), (4, 600, 27000)]:  # 3 x 240 > 600
        plan = asked("caps.yaml", attempt)
        assert plan["train_model"] == plan["distill_student"] == (runtime, mem, "--signal=TERM@180"), attempt
        # evaluations: sized to their runs (1 + 1 minute per model: 4 or 6 models) times the
        # attempt, up to the cap, and the same memory growth; no early signal
        assert plan["evaluate_trained"] in ((min(5 * attempt, 600), mem, ""), (min(7 * attempt, 600), mem, ""))
    for attempt in (1, 2):
        plan = asked("short.yaml", attempt)
        assert plan["train_model"] == (attempt, 1000, f"--signal=TERM@{15 * attempt}"), attempt


def test_slurm_plugin_submits_shared_jobs_as_shards():
    """What snakemake-executor-plugin-slurm makes of those resources: a whole GPU as --gpus=1, a
    shared job as --gres=shard:N and no --gpus."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    def submit(**resources):
        return set_gres_string(SimpleNamespace(resources=Resources(resources))).split()

    assert submit(gpu=1, gres="", gpu_percent=100) == ["--gpus=1"]
    assert submit(gpu=0, gres="shard:4", gpu_percent=50) == ["--gres=shard:4"]
    assert submit(gpu=0, gres="", gpu_percent=0) == []


def test_the_slurm_profile_is_accepted_by_the_pinned_plugin(tmp_path):
    """Every key of profiles/slurm is an option of this Snakemake and the pinned plugin (a dry run
    reads them all), and the sbatch options the rules pass in slurm_extra are ones the plugin
    lets through: a plugin that manages --signal itself (its feat/slurm_signals work) would
    refuse ours, and this test names the option (docs/cluster.md says what to do then)."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

    workdir = copy_workflow(tmp_path)
    (workdir / "gpu.yaml").write_text(yaml.safe_dump({"device": "auto", "temperatures": [4], "folds": 2}))
    out = run(["-n", "--workflow-profile", "profiles/slurm", "--configfile", "gpu.yaml",
               "--set-resources", "train_model:slurm_partition=gpu", "distill_student:slurm_partition=gpu"],
              cwd=workdir).stdout
    plan = planned_resources(out)
    extras = {res.get("slurm_extra", "") for res in plan.values()}
    assert "--signal=TERM@180" in extras
    for extra in extras:
        validate_slurm_extra(SimpleNamespace(resources=SimpleNamespace(slurm_extra=extra)))
    # submissions stay under the sustained rate of SLURM's default RPC rate limiting (2 a second
    # per user, shared with the status checks)
    profile = yaml.safe_load((workdir / "profiles/slurm/config.yaml").read_text())
    jobs, seconds = re.fullmatch(r"(\d+)/(\d+)s", profile["max-jobs-per-timespan"]).groups()
    assert int(jobs) / int(seconds) <= 1


def _slurm_run(workdir, *args, env=None):
    """A SLURM run of the fold split through profiles/slurm; the checks below stop it in its
    onstart handler, after the DAG and before any sbatch (this machine need not have SLURM)."""
    return run(["--workflow-profile", "profiles/slurm", "--configfile", "smoke.yaml", "--jobs", "2", *args],
               cwd=workdir, check=False, timeout=300, env=env)


def test_a_slurm_run_refuses_gpu_jobs_without_a_partition_before_any_submission(tmp_path):
    workdir = copy_workflow(tmp_path)
    proc = _slurm_run(workdir, "--config", "device=auto")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "not submitting any job: these jobs ask for a GPU but name no partition" in out, out[-3000:]
    assert "train_model (" in out and "evaluate_trained (" in out and "gpus_in_default_partition" in out
    assert not (workdir / ".snakemake/slurm_logs").exists()  # nothing was submitted


def test_a_slurm_run_refuses_array_jobs_for_trainings(tmp_path):
    """Array tasks run without srun: the early SIGTERM would reach nothing (docs/cluster.md)."""
    workdir = copy_workflow(tmp_path)
    proc = _slurm_run(workdir, "--slurm-array-jobs", "prepare_mnist,train_model")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "not submitting any job: --slurm-array-jobs must not include train_model" in out, out[-3000:]
    assert not (workdir / ".snakemake/slurm_logs").exists()


def test_a_slurm_run_with_untested_plugin_versions_stops_before_any_submission(tmp_path):
    """The workflow patches the plugin's status query (kdinv/launch/slurm.py); with a plugin version
    it was not tested with, the run stops naming the versions instead of risking runs that wait
    forever. The installed version is faked as 2.9.0 (a sitecustomize in the run's path)."""
    workdir = copy_workflow(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import importlib.metadata as m\n"
        "_version = m.version\n"
        "m.version = lambda name: '2.9.0' if name == 'snakemake-executor-plugin-slurm' else _version(name)\n"
    )
    proc = _slurm_run(workdir, env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(site)})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "not submitting any job: the workflow's fix of SLURM job states" in out, out[-3000:]
    assert "snakemake-executor-plugin-slurm 2.9.0 (tested: 2.8.0)" in out
    assert not (workdir / ".snakemake/slurm_logs").exists()


def test_config_error_stops_before_any_job(tmp_path):
    workdir = copy_workflow(tmp_path)
    (workdir / "bad.yaml").write_text(yaml.safe_dump({"temperatures": [1, -4], "folds": 1}))
    proc = run(["--cores", "1", "--configfile", "bad.yaml"], cwd=workdir, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "temperatures[1]" in out and "folds" in out
    assert not (workdir / "results").exists() and not (workdir / "resources").exists()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The whole MNIST row at a tiny scale, once for the tests below."""
    workdir = copy_workflow(tmp_path_factory.mktemp("smoke"))
    run(["--cores", "2", "--configfile", "smoke.yaml"], cwd=workdir)
    return workdir


ROWS = yaml.safe_load((ROOT / "config.yaml").read_text())["rows"]


@pytest.mark.e2e
def test_smoke_run_metric_table(smoke_run):
    table = pd.read_parquet(smoke_run / "results/metrics.parquet")
    trained = table[table["kind"] == "train"]
    distilled = table[table["kind"] == "distill"]
    expected_trained, expected_distilled = set(), set()
    for row in ROWS:
        d, s, t, tp, sym = row["dataset"], row["student"], row["teacher"], row["teacher_prime"], row["symmetry"]
        expected_trained |= {(d, s, "plain"), (d, s, sym), (d, t, "plain"), (d, tp, "plain")}
        expected_distilled |= {(d, s, "plain", s), (d, s, sym, s), (d, t, "plain", s), (d, tp, "plain", s)}
    assert set(map(tuple, trained[["dataset", "model", "augment"]].drop_duplicates().values)) == expected_trained
    assert set(map(tuple, distilled[["dataset", "teacher", "teacher_augment", "model"]].drop_duplicates().values)) == (
        expected_distilled
    )
    # one row per training and fold; per distillation, recipe variant (the paper's and plain
    # reverse), temperature and fold, s' twice (vs t' and t)
    assert len(trained) == 2 * len(expected_trained)
    assert len(distilled) == 2 * 2 * 2 * (len(expected_distilled) + len(ROWS))
    assert set(distilled["recipe"]) == {"plain", "plain_reverse"}
    assert set(distilled.loc[distilled["recipe"] == "plain_reverse", "kd_direction"]) == {"reverse"}
    assert trained["recipe"].isna().all()
    assert table["val_im"].notna().all() and table["val_accuracy"].between(0, 1).all()
    assert set(table["fold"]) == {0, 1}
    assert set(distilled["temperature"]) == {1.0, 4.0}
    for row in ROWS:
        sprime = distilled[(distilled["teacher"] == row["teacher_prime"]) & (distilled["model"] == row["student"])]
        assert sorted(sprime["reference"].unique()) == sorted(
            [f"{row['teacher_prime']}/plain", f"{row['teacher']}/plain"]
        )
    for col in ["accuracy", "nll", "ece", "im"]:
        assert table[col].notna().all() and (table[col] >= 0).all()
    assert distilled[["agreement", "kl"]].notna().all().all()
    assert trained[["agreement", "kl"]].isna().all().all()
    assert (table[["accuracy", "ece", "agreement"]].dropna() <= 1).all().all()
    # the structurally invariant teachers are invariant (IM <= 1e-4), the students are not
    for row in ROWS:
        mine = trained[(trained["dataset"] == row["dataset"]) & (trained["symmetry"] == row["symmetry"])]
        teachers = mine[mine["model"].isin([row["teacher"], row["teacher_prime"]])]
        assert len(teachers) == 4 and (teachers["im"] <= 1e-4).all(), row["name"]
        assert (mine[mine["model"] == row["student"]]["im"] > 1e-4).all(), row["name"]
    # learned something on the offline digits even at this scale
    plain_mlp = trained[(trained["model"] == "mlp") & (trained["augment"] == "plain")]
    assert plain_mlp["accuracy"].min() > 0.5


@pytest.mark.e2e
def test_smoke_run_figure_and_logs(smoke_run):
    png = smoke_run / "results/figures/figure1.png"
    pdf = smoke_run / "results/figures/figure1.pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    from PIL import Image

    with Image.open(png) as img:
        width, height = img.size
        pixels = img.convert("RGB").resize((200, 40)).tobytes()  # once: not per pixel
        colours = len({pixels[i : i + 3] for i in range(0, len(pixels), 3)})
    assert 1.2 * height < width < 2 * height  # four rows of six panels
    assert colours > 20  # drawn, not blank
    logs = list((smoke_run / "logs/train_model").rglob("*.log"))
    assert len(logs) == 28
    assert all("epoch 1/" in log.read_text() for log in logs)


@pytest.mark.e2e
def test_nothing_to_do_after_a_complete_run(smoke_run):
    assert planned_jobs(run(["-n", "--configfile", "smoke.yaml"], cwd=smoke_run).stdout) == {}


@pytest.mark.e2e
def test_adding_a_temperature_plans_only_its_jobs(smoke_run):
    cfg = yaml.safe_load((smoke_run / "smoke.yaml").read_text())
    cfg["temperatures"] = [1, 4, 8]
    (smoke_run / "more.yaml").write_text(yaml.safe_dump(cfg))
    proc = run(["-n", "--configfile", "more.yaml"], cwd=smoke_run)
    assert planned_jobs(proc.stdout) == {
        "distill_student": 64,  # 16 distillations x 2 recipe variants x 2 folds, at T = 8 only
        "evaluate_distilled": 12,  # 3 datasets x 2 variants x 2 folds, at T = 8 only
        **FINAL,
    }
    assert "/T8/" in proc.stdout and "/T1/" not in proc.stdout.replace("T1/fold", "")


def test_download_rule_refuses_a_corrupted_mirror(tmp_path):
    """The fetch rule against a mirror whose files are not the official ones: the job fails with
    the file and both md5s in its log, and leaves no raw file behind."""
    from kdinv.data.mnist import MNIST_FILES
    from kdinv.data.offline.mnist import write_offline_mnist

    www = tmp_path / "www"
    write_offline_mnist(www)  # valid IDX files, but not MNIST's: every md5 differs
    mirror = FileServer({f"/{path.name}": path.read_bytes() for path in www.iterdir()})
    (tmp_path / "wf").mkdir()
    workdir = copy_workflow(tmp_path / "wf")
    (workdir / "mirror.yaml").write_text(
        yaml.safe_dump({"datasets": {"mnist": {"source": "download", "url": f"{mirror.url}/", "retries": 1}}})
    )
    env_clean = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    with mirror:
        proc = subprocess.run(
            SNAKEMAKE + ["results/mnist/data/train.pt", "--cores", "1", "--configfile", "mirror.yaml"],
            cwd=workdir, capture_output=True, text=True, timeout=300, env=env_clean,
            check=False,
        )
    assert mirror.counts(), "the rule never asked the mirror"
    assert proc.returncode != 0
    log = (workdir / "logs/fetch_mnist/mnist.log").read_text()
    first = next(iter(MNIST_FILES))
    assert first in log and MNIST_FILES[first] in log and "md5" in log
    raw = workdir / "resources/mnist/raw"
    assert not raw.exists() or not any(raw.iterdir())
    assert not (workdir / "results/mnist/data/train.pt").exists()


@pytest.mark.e2e
def test_killed_workflow_unlocked_and_rerun_gives_bit_identical_metrics(smoke_run, tmp_path):
    """A second run from scratch in another folder is SIGKILLed as a whole part-way (Snakemake and
    its jobs: the process group), as docs/running.md ("Resume and troubleshooting") describes; the
    same command then refuses the locked directory, `snakemake --unlock` clears it, and the rerun ends
    with the first run's metric tables, bit for bit. To keep CI short it redoes fold 0 at T = 4 of
    every row (every architecture, training, augmentation, recipe, distillation and evaluation kind)
    rather than the whole grid."""
    import signal
    import time

    (tmp_path / "again").mkdir()
    again = copy_workflow(tmp_path / "again")
    targets = sorted(
        str(p.relative_to(smoke_run))
        for p in (smoke_run / "results").glob("*/evaluation/fold0/*.parquet")
        if p.name in ("trained.parquet", "distill-T4.parquet", "distill-plain_reverse-T4.parquet")
    )
    assert len(targets) == 3 * 3  # every dataset: its trainings, its distillations of both recipes at T = 4
    cmd = SNAKEMAKE + ["--cores", "2", "--configfile", "smoke.yaml", "--", *targets]
    proc = subprocess.Popen(cmd, cwd=again, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while len(list((again / "results").glob("*/train/*/*/fold0/model.pt"))) < 6:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no training finished within 10 minutes"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and every job it started
    proc.wait(timeout=60)
    time.sleep(1)
    locked = run(["--cores", "2", "--configfile", "smoke.yaml", "--", *targets], cwd=again, check=False)
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr
    run(["--unlock", "--configfile", "smoke.yaml"], cwd=again)
    run(["--cores", "2", "--configfile", "smoke.yaml", "--", *targets], cwd=again)
    for target in targets:
        first = pd.read_parquet(smoke_run / target)
        second = pd.read_parquet(again / target)
        pd.testing.assert_frame_equal(first, second, check_exact=True, obj=target)


@pytest.mark.slow
def test_every_bad_config_stops_snakemake_before_any_job(tmp_path):
    """Each invalid config of tests/bad_configs.py, written as config.yaml: Snakemake exits non-zero
    with a message naming the key, and nothing is fetched or computed."""
    from concurrent.futures import ThreadPoolExecutor

    from bad_configs import BAD, apply_change

    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    base["datasets"]["mnist"]["source"] = "offline"  # were a bad config accepted, jobs would run
    assert len(BAD) >= 20

    def check(i_case):
        i, (path, value, expected) = i_case
        (tmp_path / f"case{i}").mkdir()
        workdir = copy_workflow(tmp_path / f"case{i}")
        (workdir / "config.yaml").write_text(yaml.safe_dump(apply_change(base, path, value)))
        proc = run(["results/mnist/folds/fold0.pt", "--cores", "1"], cwd=workdir, check=False)
        out = proc.stdout + proc.stderr
        ran = (workdir / "results").exists() or (workdir / "resources").exists()
        if proc.returncode == 0 or expected not in out or ran:
            return f"{path}={value!r}: rc {proc.returncode}, ran jobs: {ran}\n{out[-800:]}"
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:  # each Snakemake start is mostly imports
        failures = [f for f in pool.map(check, enumerate(BAD)) if f]
    assert not failures, "\n\n".join(failures)


def _write_merged(smoke_run: Path, change: dict, name: str) -> str:
    """Writes the smoke run's config with ``change`` merged into it as ``name``; returns the name."""
    from conftest import deep_merge

    cfg = deep_merge(yaml.safe_load((smoke_run / "smoke.yaml").read_text()), change)
    (smoke_run / name).write_text(yaml.safe_dump(cfg))
    return name


def _plan_with(smoke_run: Path, change: dict, name: str) -> dict[str, int]:
    """The dry-run job counts on the completed smoke run after merging ``change`` into its config."""
    config = _write_merged(smoke_run, change, name)
    return planned_jobs(run(["-n", "--configfile", config], cwd=smoke_run).stdout)


# What any new result reruns at the end; a config edit also rewrites the run settings.
AFTER_RESULTS = {"collect_metrics": 1, "plot_figure1": 1, "plot_tradeoff": 1, "plot_measures": 1, "write_findings": 1,
                 "plot_curves": 1, "write_row_tables": 1, "all": 1}
FINAL = {**AFTER_RESULTS, "write_run_settings": 1}


@pytest.mark.e2e
def test_student_training_change_reruns_only_its_trainings_and_dependants(smoke_run):
    jobs = _plan_with(smoke_run, {"models": {"mlp": {"training": {"lr": 2.0e-3}}}}, "student.yaml")
    # s and s_aug on 2 folds, the evaluations of MNIST's 2 folds, the self-distillations from them
    # (2 T x 2 folds) and the evaluations of MNIST's distillations at those (fold, T)
    assert jobs == {
        "train_model": 4, "evaluate_trained": 2, "distill_student": 16, "evaluate_distilled": 8, **FINAL,
    }


@pytest.mark.e2e
def test_student_distillation_change_reruns_only_distillations(smoke_run):
    jobs = _plan_with(smoke_run, {"models": {"mlp": {"distillation": {"lr": 2.0e-3}}}}, "kd.yaml")
    assert jobs == {"distill_student": 32, "evaluate_distilled": 8, **FINAL}


@pytest.mark.e2e
def test_teacher_change_reruns_the_teacher_its_distillations_and_their_evaluations(smoke_run):
    jobs = _plan_with(smoke_run, {"models": {"resnet": {"training": {"lr": 2.0e-3}}}}, "teacher.yaml")
    # t on 2 folds; t->s at 2 T x 2 folds; the evaluations of MNIST's folds (trained, and
    # distilled at each T: they hold t->s and s', which is compared with t)
    assert jobs == {
        "train_model": 2, "evaluate_trained": 2, "distill_student": 8, "evaluate_distilled": 8, **FINAL,
    }


@pytest.mark.e2e
def test_settings_that_cannot_change_a_cpu_result_rerun_no_job(smoke_run):
    """The smoke config runs on the CPU, where bf16 autocast never acts; resume_every and
    resume_minutes only decide how often a resume state is saved; jobs_per_gpu and
    job_resources only what jobs ask the scheduler for. Editing them rewrites the run settings
    only."""
    change = {
        "precision": "float32",
        "resume_every": 5,
        "resume_minutes": 0,
        "evaluation": {"jobs_per_gpu": 2},
        "models": {"mlp": {"jobs_per_gpu": 4}},
        "job_resources": {"gpu_shards": 8, "mem_mb": 700, "mem_growth": 2, "runtime": 7, "max_runtime": 60,
                          "signal_seconds": 30},
    }
    jobs = _plan_with(smoke_run, change, "settings.yaml")
    assert jobs == {"write_run_settings": 1, "all": 1}


@pytest.mark.e2e
def test_deleted_checkpoint_is_redone_with_its_dependants_on_request(smoke_run, tmp_path):
    """Snakemake regenerates a deleted intermediate file only when something downstream needs it,
    so deleting a checkpoint alone plans nothing; naming it with -R (--forcerun) plans exactly it
    and everything that depends on it (docs/configuration.md, "What reruns")."""
    target = "results/mnist/train/resnet/plain/fold0/model.pt"
    shutil.move(smoke_run / target, tmp_path / "model.pt")
    try:
        alone = planned_jobs(run(["-n", "--configfile", "smoke.yaml"], cwd=smoke_run).stdout)
        forced = planned_jobs(run(["-n", "--configfile", "smoke.yaml", "-R", target], cwd=smoke_run).stdout)
    finally:
        shutil.move(tmp_path / "model.pt", smoke_run / target)
    assert alone == {}
    # t on fold 0, the evaluation of MNIST's fold 0, t->s on fold 0 at 2 T and the evaluations of
    # MNIST's fold 0 at those T (they hold s', compared with t)
    assert forced == {
        "train_model": 1, "evaluate_trained": 1, "distill_student": 4, "evaluate_distilled": 4, **AFTER_RESULTS,
    }


@pytest.mark.e2e
def test_html_report_renders_in_a_headless_browser(smoke_run, tmp_path):
    """snakemake --report builds the HTML report; headless Chromium renders it with Figure 1, the
    findings, the curves, the per-row tables and the run settings."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    report = smoke_run / "report.html"
    run(["--configfile", "smoke.yaml", "--report", str(report)], cwd=smoke_run)
    html = report.read_text()
    for category in ["Figure 1", "Findings", "Training curves", "Per-row tables", "Run settings"]:
        assert category in html, category
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000"]
    dom = subprocess.run(
        common + ["--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=180, check=False
    )
    assert dom.returncode == 0, dom.stderr[-3000:]
    # the rendered page (after its scripts ran) lists the result categories and the workflow description
    for text in ["Figure 1", "Findings", "Per-row tables", "resnet-mlp", "dgcnn-dsinv"]:
        assert text in dom.stdout, text
    # the front page lists the rows as a list, one item per row (not one run-on line)
    rendered = re.sub(r"<script\b.*?</script>", "", dom.stdout, flags=re.DOTALL)  # the page also keeps it in a script
    items = re.findall(r"<li><strong>([a-z0-9-]+)</strong>", rendered)
    assert items == [row["name"] for row in ROWS], items
    shot = tmp_path / "report.png"
    proc = subprocess.run(common + [f"--screenshot={shot}", "--window-size=1400,1000", report.as_uri()],
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-3000:]
    from PIL import Image

    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # a rendered page, not a blank one


@pytest.mark.e2e
def test_readme_commands_need_only_requirements_txt(smoke_run, tmp_path):
    """The report, the demo and the benchmark scripts, run as the README gives them, with every
    package that only requirements-test.txt installs made unimportable: they must not need one
    (pygments came only with pytest, and the report failed after the README's install)."""
    from runtime_only import modules_of_test_requirements, runtime_only_env

    env = runtime_only_env(tmp_path)
    assert "pytest" in modules_of_test_requirements()
    blocked = subprocess.run(
        [sys.executable, "-c", "import pytest"], env=env, capture_output=True, text=True, check=False
    )
    assert blocked.returncode != 0 and "requirements-test.txt only" in blocked.stderr

    report = smoke_run / "report-runtime-only.html"
    proc = subprocess.run(SNAKEMAKE + ["--configfile", "smoke.yaml", "--report", str(report)], cwd=smoke_run,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0 and report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    (tmp_path / "demo").mkdir()
    demo = subprocess.run(
        SNAKEMAKE + ["-n", "--cores", "2", "--configfile", "config.demo.yaml"],
        cwd=copy_workflow(tmp_path / "demo"),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        proc = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr[-2000:]}"


@pytest.mark.e2e
def test_adding_a_recipe_plans_only_its_jobs(smoke_run):
    """A new recipe plans its distillations (every role, temperature and fold) and their
    evaluations, plus the summaries; no training, nothing of the recipes already run."""
    smoke = yaml.safe_load((smoke_run / "smoke.yaml").read_text())
    jobs = _plan_with(smoke_run, {"recipes": {**smoke["recipes"], "augmented": {}}}, "recipe.yaml")
    # 16 distillations x 2 T x 2 folds; 3 datasets x 2 T x 2 folds evaluations
    assert jobs == {"distill_student": 64, "evaluate_distilled": 12, **FINAL}


@pytest.mark.e2e
def test_removing_a_recipe_reruns_only_the_summaries(smoke_run):
    """The smoke run ran plain reverse; without it nothing is trained, distilled or evaluated: only
    the collected table, figures, findings and tables are written again (without that recipe)."""
    from conftest import deep_merge

    cfg = deep_merge(yaml.safe_load((smoke_run / "smoke.yaml").read_text()), {})
    cfg["recipes"] = {}
    (smoke_run / "no-recipe.yaml").write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(run(["-n", "--configfile", "no-recipe.yaml"], cwd=smoke_run).stdout)
    assert jobs == FINAL


@pytest.mark.e2e
def test_a_group_averaged_row_added_to_a_finished_run_retrains_nothing_of_its_rows(smoke_run):
    """The overlay's kind of change on the completed smoke run: MNIST gains the rotation symmetry
    and a row with a C4-averaged ResNet teacher. Only the new teachers train; the distillations
    are the new row's; the MNIST evaluations of the trained models rerun once (to add IM under
    rotation), and no training or distillation of the smoke run's rows reruns."""
    smoke = yaml.safe_load((smoke_run / "smoke.yaml").read_text())
    small = smoke["models"]["resnet"]
    rows = smoke.get("rows") or yaml.safe_load((ROOT / "config.yaml").read_text())["rows"]
    change = {
        "datasets": {"mnist": {"symmetries": {"rotation": {"transform": "rot90_2d", "augment_identity_prob": 0.25}}}},
        "models": {"resnet-c4": small, "resnet-c4-prime": smoke["models"]["resnet-prime"]},
        "rows": rows + [{"name": "resnet-c4-mlp", "dataset": "mnist", "symmetry": "rotation",
                         "teacher": "resnet-c4", "teacher_prime": "resnet-c4-prime", "student": "mlp"}],
    }
    out = run(["-n", "--configfile", _write_merged(smoke_run, change, "groups.yaml")], cwd=smoke_run).stdout
    jobs = planned_jobs(out)
    # trainings: the two averaged teachers and the MLP augmented by rotation, per fold (2)
    assert jobs["train_model"] == 3 * 2, jobs
    trained = {(w["model"], w["augment"]) for w in planned_wildcards(out, "train_model")}
    assert trained == {("resnet-c4", "plain"), ("resnet-c4-prime", "plain"), ("mlp", "rotation")}, trained
    distilled = {(w["teacher"], w["teacher_augment"]) for w in planned_wildcards(out, "distill_student")}
    # the new row's roles: t, t', s_aug→s (mlp/rotation) and s→s (mlp/plain, for the recipes of the
    # smoke run that name the row's symmetry; nothing of the paper's teachers)
    assert {("resnet-c4", "plain"), ("resnet-c4-prime", "plain"), ("mlp", "rotation")} <= distilled, distilled
    assert not {t for t, _ in distilled} & {"resnet", "resnet-prime", "dgcnn", "dgcnn-prime", "jet-deepsets",
                                            "jet-deepsets-prime"}, distilled
    assert jobs["evaluate_trained"] == 2, jobs  # MNIST's two folds, now with IM under rotation


@pytest.mark.e2e
def test_frame_averaged_rows_added_to_a_finished_run_train_only_their_models(smoke_run):
    """config.extended.yaml's continuous-rotation rows on the completed smoke run: ModelNet40 gains
    the so3 and so2 symmetries and two rows with frame-averaged DGCNN teachers. Only their
    teachers and the DeepSets augmented under the new symmetries train; the distillations are the
    new rows'; the ModelNet40 evaluations of the trained models rerun once (to add IM under the
    rotations), and no training or distillation of the smoke run's rows reruns."""
    smoke = yaml.safe_load((smoke_run / "smoke.yaml").read_text())
    small, small_prime = smoke["models"]["dgcnn"], smoke["models"]["dgcnn-prime"]
    rows = smoke.get("rows") or yaml.safe_load((ROOT / "config.yaml").read_text())["rows"]
    new_rows = [{"name": f"dgcnn-{g}-dsinv", "dataset": "modelnet40", "symmetry": g, "teacher": f"dgcnn-{g}",
                 "teacher_prime": f"dgcnn-{g}-prime", "student": "deepsets-inv"} for g in ("so3", "so2")]
    change = {
        "datasets": {"modelnet40": {"symmetries": {"so3": {"transform": "so3_3d"}, "so2": {"transform": "so2_z_3d"}}}},
        # config.yaml defines the four frame-averaged models (arch, group_average); the smoke run's sizes
        "models": {
            "dgcnn-so3": small,
            "dgcnn-so3-prime": small_prime,
            "dgcnn-so2": small,
            "dgcnn-so2-prime": small_prime,
        },
        "rows": rows + new_rows,
    }
    out = run(["-n", "--configfile", _write_merged(smoke_run, change, "frames.yaml")], cwd=smoke_run).stdout
    jobs = planned_jobs(out)
    new = {("dgcnn-so3", "plain"), ("dgcnn-so3-prime", "plain"), ("dgcnn-so2", "plain"), ("dgcnn-so2-prime", "plain"),
           ("deepsets-inv", "so3"), ("deepsets-inv", "so2")}
    assert jobs["train_model"] == len(new) * 2, jobs  # per fold (2)
    assert {(w["model"], w["augment"]) for w in planned_wildcards(out, "train_model")} == new
    distilled = {(w["teacher"], w["teacher_augment"]) for w in planned_wildcards(out, "distill_student")}
    assert new <= distilled, distilled
    assert not {t for t, _ in distilled} & {"resnet", "resnet-prime", "dgcnn", "dgcnn-prime", "jet-deepsets",
                                            "jet-deepsets-prime"}, distilled
    assert jobs["evaluate_trained"] == 2, jobs  # ModelNet40's two folds, now with IM under so3 and so2


@pytest.mark.e2e
def test_the_gpu_acceptance_script_runs_its_checks_on_the_cpu(tmp_path):
    """benchmarks/gpu_acceptance.py's CPU path (the quick demo on the CPU twice, compared, in bf16,
    a SIGKILLed training resumed bit-identically, the sharing and epoch-time measurements): every
    check passes and the CSV and summary are written, so the script a GPU machine runs cannot rot."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gpu_acceptance.py"), "--device", "cpu", "--quick",
         "--cores", "2", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=1500, cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "out/acceptance-cpu.csv")
    assert table["ok"].all()
    checks = set(table["check"])
    assert {"demo", "demo_cpu", "cpu_vs_device", "bf16", "bf16_vs_float32", "resume", "sharing", "epochs"} <= checks
    resumed = table[table["check"] == "resume"]
    assert resumed["value"].astype(str).eq("True").all() and len(resumed) == 3
    assert (tmp_path / "out/acceptance-cpu.md").read_text().startswith("# GPU acceptance on cpu")
