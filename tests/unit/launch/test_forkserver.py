"""The fork server (kdinv.launch.forkserver) through its client, kdinv.launch.start.run_job, as a rule's
script calls it: each job is a client process started here. Compared with a direct run
(KDINV_FORKSERVER=0): the same outputs bit for bit, the same exit status and traceback, the
same working directory, environment and streams; signals reach the child, a killed client takes
its child with it, a server is reused and exits when idle.

The servers these tests start live in a private folder (KDINV_FORKSERVER_DIR) and are stopped at
the end."""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from conftest import toy_image_folds

from kdinv.io import load_tensors
from kdinv.launch import forkserver
from kdinv.launch.start import plain

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS = ROOT / "workflow/scripts"

CLIENT = """
import json, sys
sys.path[:0] = [{scripts!r}, {tests!r}]
from kdinv.launch.start import run_job
target, log, threads, kwargs = json.loads(sys.argv[1])
run_job(target, log, threads, kwargs)
"""

SPEC = {"arch": "mlp", "params": {"hidden": [256, 256]},
        "training": {"epochs": 6, "batch_size": 8, "lr": 1e-3}}
SYMMETRY = {"transform": "shift_2d", "max_shift": 2, "background": -1.0, "augment_identity_prob": 0.2}


@pytest.fixture(scope="module")
def home():
    """A short folder (unix socket paths are limited to ~107 bytes) for the servers and the
    client script; the servers started in it are stopped afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="kdfs-", dir="/tmp"))
    (folder / "client.py").write_text(CLIENT.format(scripts=str(SCRIPTS), tests=str(ROOT / "tests")))
    yield folder
    for log in folder.rglob("*.log"):
        for pid in set(re.findall(r"fork server (\d+): listening", log.read_text())):
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
    shutil.rmtree(folder, ignore_errors=True)


def environ(home: Path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KDINV_FORKSERVER", "SLURM_"))}
    return {**env, "KDINV_FORKSERVER_DIR": str(home / "servers"), "KDINV_FORKSERVER_IDLE": "60", **extra}


def client(home: Path, target: str, log: Path, kwargs: dict, threads: int | None = 1, env=None, cwd=None,
           **popen) -> subprocess.Popen:
    args = json.dumps([target, str(log), threads, kwargs])
    return subprocess.Popen([sys.executable, str(home / "client.py"), args], cwd=cwd or home,
                            env=env or environ(home), text=True, **popen)


def run(home: Path, target: str, log: Path, kwargs: dict, **options) -> subprocess.CompletedProcess:
    proc = client(home, target, log, kwargs, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                  **options)
    out, err = proc.communicate("", timeout=300)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    result.pid = proc.pid
    return result


def direct(home: Path, **extra) -> dict[str, str]:
    return environ(home, KDINV_FORKSERVER="0", **extra)


def child_pid(log: Path) -> tuple[int, int] | None:
    """(child, server) from the job's log, or None for a job that ran in its client."""
    m = re.search(r"running in child (\d+) of the fork server (\d+)", log.read_text())
    return (int(m.group(1)), int(m.group(2))) if m else None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return toy_image_folds(tmp_path_factory.mktemp("data"))


def training(data: Path, out: Path) -> dict:
    """The keyword arguments of a training job (kdinv.jobs:train_model, as the rule's
    script passes them): a few seconds of an augmented MLP, resume state after every epoch."""
    out.mkdir(parents=True, exist_ok=True)
    return dict(train_split=str(data / "train.pt"), fold_file=str(data / "fold0.pt"), model_spec=SPEC,
                symmetry=SYMMETRY, seed=7, device="cpu", precision="float32", out_model=str(out / "model.pt"),
                out_logits=str(out / "train_logits.pt"), wildcards={"model": "mlp", "fold": "0"}, resume_every=1)


def assert_same_run(a: Path, b: Path) -> None:
    assert (a / "train_logits.pt").read_bytes() == (b / "train_logits.pt").read_bytes()
    ckpt_a, ckpt_b = load_tensors(a / "model.pt"), load_tensors(b / "model.pt")
    assert ckpt_a.keys() == ckpt_b.keys()
    for key, value in ckpt_a["state_dict"].items():
        assert torch.equal(ckpt_b["state_dict"][key], value), key
    def strip(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]
    assert strip(ckpt_a["history"]) == strip(ckpt_b["history"])
    assert {k: v for k, v in ckpt_a.items() if k not in ("state_dict", "history")} == {
        k: v for k, v in ckpt_b.items() if k not in ("state_dict", "history")}


@pytest.fixture(scope="module")
def reference(home, data):
    """The training run directly, in its client's process."""
    out = home / "reference"
    proc = run(home, "kdinv.jobs:train_model", out / "job.log", training(data, out), env=direct(home))
    assert proc.returncode == 0, proc.stderr
    assert child_pid(out / "job.log") is None
    assert "running in this process (KDINV_FORKSERVER=0)" in (out / "job.log").read_text()
    return out


def wait_for_epoch(resume: Path, epoch: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the job ended before it could be interrupted"
        try:
            if resume.exists() and load_tensors(resume)["epoch"] >= epoch:
                return
        except ValueError:
            pass  # being replaced
        time.sleep(0.05)
    raise AssertionError(f"{resume} never reached epoch {epoch}")


# --- results ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_training_through_the_server_is_bit_identical_to_a_direct_run(home, data, reference):
    out = home / "served"
    proc = run(home, "kdinv.jobs:train_model", out / "job.log", training(data, out))
    assert proc.returncode == 0, proc.stderr + (out / "job.log").read_text()
    child, server = child_pid(out / "job.log")
    assert len({child, server, proc.pid}) == 3
    assert_same_run(reference, out)
    log = (out / "job.log").read_text()
    assert "seed 7" in log and "epoch 6/6" in log
    assert not (out / "resume.pt").exists()


@pytest.mark.slow
def test_the_job_sees_its_clients_cwd_environment_streams_and_a_fresh_random_state(home, tmp_path):
    """Run from another folder with extra variables, a umask and stdin: the child's view equals
    that of the same job run directly, except for its process ids and the random seeds a new
    process draws."""
    views = {}
    for mode in ("server", "direct", "server again"):
        work = tmp_path / "work"
        work.mkdir(exist_ok=True)
        env = {**(direct(home) if mode == "direct" else environ(home)), "KDINV_TEST_VALUE": "forty two"}
        out, log = tmp_path / f"{mode}.json", tmp_path / f"{mode}.log"
        proc = client(home, "forkserver_targets:describe", log, {"out": str(out)}, threads=1, env=env, cwd=work,
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      preexec_fn=lambda: os.umask(0o027))
        stdout, stderr = proc.communicate("some input", timeout=120)
        assert proc.returncode == 0, stderr + log.read_text()
        assert stdout == "a line to stdout\n" and stderr == ""
        assert "a line to stderr" in log.read_text()
        views[mode] = {**json.loads(out.read_text()), "client": proc.pid, "served": child_pid(log)}
    served, plain_run, again = views["server"], views["direct"], views["server again"]
    assert plain_run["pid"] == plain_run["client"] and plain_run["served"] is None
    assert served["pid"] != served["client"] and served["ppid"] == served["served"][1]
    plain_run["environ"].pop("KDINV_FORKSERVER")  # the switch itself
    for key in ("cwd", "environ", "umask", "affinity", "torch_threads", "stdin", "cuda_bad_fork"):
        assert served[key] == plain_run[key], key
    assert served["cwd"] == str(tmp_path / "work") and served["environ"]["KDINV_TEST_VALUE"] == "forty two"
    # torch.set_num_threads(1) of start_job took (torch's default here is the machine's cores)
    assert served["umask"] == 0o027 and served["stdin"] == "some input" and served["torch_threads"] == 1
    assert served["argv"][0] == plain_run["argv"][0] == str(home / "client.py")
    assert served["sys_path"] == plain_run["sys_path"]
    assert served["cuda_bad_fork"] is False  # CUDA was never asked anything before the fork
    # a new process's random state: two children do not share their seeds
    assert served["torch_seed"] != again["torch_seed"] and served["numpy_draw"] != again["numpy_draw"]
    # one server for both: a second client reuses it
    assert served["served"][1] == again["served"][1]


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["server", "direct"])
def test_a_failing_job_exits_1_with_its_traceback_in_the_log(home, tmp_path, mode):
    env = environ(home) if mode == "server" else direct(home)
    log = tmp_path / "job.log"
    proc = run(home, "forkserver_targets:fail", log, {"message": "no such data"}, env=env)
    assert proc.returncode == 1
    text = log.read_text()
    assert (child_pid(log) is not None) == (mode == "server")
    tail = text[text.index("Traceback (most recent call last):"):]
    assert tail.rstrip().endswith("ValueError: no such data")
    assert 'forkserver_targets.py", line' in tail and "in fail" in tail
    assert "forkserver.py" not in tail  # the traceback starts in the job's code
    assert proc.stderr == ""  # after start_job, stderr is the log


@pytest.mark.slow
def test_exit_status_and_errors_before_the_job_starts(home, tmp_path):
    proc = run(home, "forkserver_targets:exit_with", tmp_path / "a.log", {"code": 3})
    assert proc.returncode == 3
    proc = run(home, "forkserver_targets:no_such_function", tmp_path / "b.log", {})
    assert proc.returncode == 1 and "AttributeError" in proc.stderr and "no_such_function" in proc.stderr
    proc = run(home, "forkserver_targets:exit_with", tmp_path / "no/such/folder/c.log", {"code": 0})
    assert proc.returncode == 1 and "FileNotFoundError" in proc.stderr


# --- signals and killed clients ---------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_to_the_client_reaches_the_training_which_saves_and_resumes(home, data, reference):
    out = home / "sigterm"
    proc = client(home, "kdinv.jobs:train_model", out / "job.log", training(data, out),
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_epoch(out / "resume.pt", 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    log = (out / "job.log").read_text()
    assert "TrainingInterrupted" in log and "SIGTERM" in log and child_pid(out / "job.log")
    saved = load_tensors(out / "resume.pt")
    assert not (out / "model.pt").exists()
    proc = run(home, "kdinv.jobs:train_model", out / "job.log", training(data, out))
    assert proc.returncode == 0, proc.stderr
    assert f"resuming at epoch {saved['epoch']}, batch {saved['batch']}" in (out / "job.log").read_text()
    assert_same_run(reference, out)


@pytest.mark.slow
def test_a_killed_client_takes_its_child_with_it(home, data):
    """SIGKILL of the client (as of Snakemake's whole process group): the child dies at once and
    writes nothing more; rerun, the job resumes from its last saved epoch."""
    out = home / "sigkill"
    proc = client(home, "kdinv.jobs:train_model", out / "job.log", training(data, out),
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_epoch(out / "resume.pt", 2, proc)
    child, server = child_pid(out / "job.log")
    assert alive(child)
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(child), "the child outlived its client"
    assert alive(server)  # the server goes on serving
    saved = (out / "resume.pt").stat().st_mtime_ns
    time.sleep(1.5)
    assert (out / "resume.pt").stat().st_mtime_ns == saved and not (out / "model.pt").exists()
    proc = run(home, "kdinv.jobs:train_model", out / "job.log", training(data, out))
    assert proc.returncode == 0 and "resuming at epoch" in (out / "job.log").read_text()
    assert (out / "model.pt").exists() and not (out / "resume.pt").exists()


@pytest.mark.parametrize("signum, to", [(signal.SIGHUP, "client"), (signal.SIGKILL, "child")])
def test_a_signal_that_kills_the_child_kills_the_client_alike(home, tmp_path, signum, to):
    """A signal sent to the client (forwarded) or to the child itself (the OOM killer's SIGKILL):
    the client dies of the signal that killed the child, as the job's own process would have."""
    # SIGHUP as a terminal's hangup would send it, even where the tests run under nohup (which
    # ignores it, and an ignored signal is not forwarded: the job would run its 30 s)
    proc = client(home, "forkserver_targets:sleep_then_write", tmp_path / "job.log",
                  {"seconds": 30, "out": str(tmp_path / "out")}, stderr=subprocess.PIPE,
                  preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not ((tmp_path / "job.log").exists() and child_pid(tmp_path / "job.log")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    child, _ = child_pid(tmp_path / "job.log")
    os.kill(proc.pid if to == "client" else child, signum)
    proc.wait(timeout=10)
    assert proc.returncode == -signum
    assert not alive(child) and not (tmp_path / "out").exists()


# --- when the server is not used --------------------------------------------------------------


@pytest.mark.parametrize("variable, reason", [
    ({"KDINV_FORKSERVER": "0"}, "KDINV_FORKSERVER=0"),
    ({"SLURM_JOB_ID": "123"}, "SLURM_JOB_ID is set: each job is its own allocation"),
])
@pytest.mark.slow
def test_direct_runs(home, tmp_path, variable, reason):
    out = tmp_path / "view.json"
    proc = run(home, "forkserver_targets:describe", tmp_path / "job.log", {"out": str(out)},
               env=environ(home, **variable))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["pid"] == proc.pid
    assert child_pid(tmp_path / "job.log") is None
    assert f"INFO kdinv: running in this process ({reason})" in (tmp_path / "job.log").read_text()


@pytest.mark.slow
def test_an_unusable_server_folder_runs_the_job_here_and_says_why(home, tmp_path):
    (tmp_path / "a file").write_text("")
    out = tmp_path / "view.json"
    proc = run(home, "forkserver_targets:describe", tmp_path / "job.log", {"out": str(out)},
               env=environ(home, KDINV_FORKSERVER_DIR=str(tmp_path / "a file" / "servers")))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["pid"] == proc.pid
    log = (tmp_path / "job.log").read_text()
    assert "WARNING kdinv: running in this process (the fork server is unavailable: cannot use" in log


# --- the server's lifetime --------------------------------------------------------------------


@pytest.mark.slow
def test_clients_starting_together_share_one_server_which_exits_when_idle(home, tmp_path):
    """Three clients of a new key at once: one starts the server, all three use it. With
    threads=None the jobs keep torch's default thread count, which a new process takes from
    OMP_NUM_THREADS (Snakemake sets it to the job's threads), as a direct run does. With one
    thread for OpenMP and BLAS, as Snakemake sets for a one-thread job, the server has started no
    thread pool: its only threads are its own and jemalloc's (pyarrow's allocator)."""
    env = environ(home, KDINV_FORKSERVER_IDLE="1", OMP_NUM_THREADS="1",
                  OPENBLAS_NUM_THREADS="1")  # another key: a server of its own
    procs = [client(home, "forkserver_targets:describe", tmp_path / f"{i}.log", {"out": str(tmp_path / f"{i}.json")},
                    threads=None, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL) for i in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    servers = {child_pid(tmp_path / f"{i}.log")[1] for i in range(3)}
    assert len(servers) == 1
    server = servers.pop()
    log = next(p for p in (home / "servers").glob("*.log") if f"fork server {server}: listening" in p.read_text())
    sock = Path(re.search(rf"fork server {server}: listening on (\S+)", log.read_text()).group(1))
    deadline = time.monotonic() + 15
    while alive(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(server) and not sock.exists()
    assert f"fork server {server}: idle, exiting after 3 jobs" in log.read_text()
    threads = ast.literal_eval(re.search(rf"fork server {server}: ready in .* s; threads (\[.*\])",
                                         log.read_text()).group(1))
    assert len([t for t in threads if t != "jemalloc_bg_thd"]) == 1, threads
    assert {json.loads((tmp_path / f"{i}.json").read_text())["torch_threads"] for i in range(3)} == {1}
    direct_run = run(home, "forkserver_targets:describe", tmp_path / "d.log", {"out": str(tmp_path / "d.json")},
                     threads=None, env={**env, "KDINV_FORKSERVER": "0"})
    assert direct_run.returncode == 0 and json.loads((tmp_path / "d.json").read_text())["torch_threads"] == 1


@pytest.mark.slow
def test_the_server_refuses_to_serve_when_cuda_was_asked_before_the_fork():
    """What the server checks after preloading: a probe child must not find torch's CUDA fork
    guard set (asking CUDA anything, even whether it is available, sets it)."""
    code = ("import torch; from kdinv.launch import forkserver; assert forkserver._probe() is None; "
            "torch.cuda.is_available(); print(forkserver._probe())")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=SCRIPTS, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "CUDA was initialised before the fork" in proc.stdout


def test_the_key_follows_the_sources_and_the_environment(tmp_path):
    base = {"HOME": "/root", "PATH": "/usr/bin"}
    key = forkserver.server_key(base)
    assert forkserver.server_key({**base, "PATH": "/bin", "SNAKEMAKE_X": "1", "KDINV_FORKSERVER": "1"}) == key
    for change in ({"OMP_NUM_THREADS": "4"}, {"CUDA_VISIBLE_DEVICES": "1"}, {"PYTHONHASHSEED": "0"}):
        assert forkserver.server_key({**base, **change}) != key, change
    assert len(str(forkserver.server_paths({"KDINV_FORKSERVER_DIR": str(tmp_path / "s")})["sock"])) < 108


# --- the rule scripts -------------------------------------------------------------------------


def script_calls() -> dict[str, ast.Call]:
    calls = {}
    for path in sorted(SCRIPTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run_job":
                calls[path.name] = node
    return calls


def test_the_torch_heavy_scripts_hand_their_job_to_run_job_with_matching_arguments():
    calls = script_calls()
    for name in ["train_model.py", "distill_student.py", "evaluate_models.py", "make_folds.py", "prepare_dataset.py",
                 "plot_curves.py"]:
        assert name in calls, name
    for name, call in calls.items():
        target = ast.literal_eval(call.args[0])
        function = forkserver.resolve(target)
        kwargs = call.args[3]
        assert isinstance(kwargs, ast.Call) and kwargs.func.id == "dict", name
        names = [k.arg for k in kwargs.keywords]
        inspect.signature(function).bind(**dict.fromkeys(names))  # no unknown or missing argument
        # a rule's script names a library function, never a module of the launch machinery
        assert not target.startswith("kdinv.launch"), name
        gpu = {k.arg: k.value for k in call.keywords}.get("gpu")
        if target in ("kdinv.jobs:train_model", "kdinv.jobs:distill_student", "kdinv.evaluation:evaluate_runs"):
            # a job that may use a GPU hands run_job its GPU request: a SLURM job given a GPU it
            # cannot see stops, and a workstation's job runs on the GPU the ledger gives it
            assert isinstance(gpu, ast.Call) and gpu.func.id == "gpu_request", name
        else:
            assert gpu is None, name


def test_the_scripts_import_nothing_heavy():
    """A script is the fork server's client: what it imports must not import torch (nor pandas or
    matplotlib), or every job would pay for it again."""
    modules = set()
    for path in SCRIPTS.glob("*.py"):
        if path.name in script_calls():
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    modules.add(node.module)
                elif isinstance(node, ast.Import):
                    modules.update(a.name for a in node.names)
    code = (f"import sys; sys.path.insert(0, {str(SCRIPTS)!r})\n"
            f"for m in {sorted(modules)!r}: __import__(m)\n"
            "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_plain_values():
    class Name(str):
        pass

    class Names(list):
        pass

    value = plain({"a": Names([Name("x"), 1, 2.5, None, True]), "b": (Path("/p"),)})
    assert value == {"a": ["x", 1, 2.5, None, True], "b": ("/p",)}
    assert type(value["a"]) is list and type(value["a"][0]) is str
    with pytest.raises(TypeError, match=r"kwargs\['b'\]"):
        plain({"b": object()})


def test_each_script_names_the_rules_that_run_it():
    """A script's docstring starts with "Rule <name>:" or "Rules <a> and <b>:" (rules made per
    dataset kind: "Rules fetch_<kind> (fetch_mnist, ...)"), and those are the rules of
    rules/*.smk whose script it is, so an old rule name cannot linger there."""
    from kdinv.data.kinds import KINDS

    text = "\n".join(p.read_text() for p in sorted((ROOT / "rules").glob("*.smk")))
    runs = {}
    for block in re.split(r"\n(?=[ \t]*rule\b)", text):
        script = re.search(r'script:\s*\n\s*"([^"]+)"', block)
        if not script or not re.match(r"\s*rule\b", block):
            continue
        named = re.match(r"\s*rule (\w+):", block)
        if named:
            rules = {named.group(1)}
        else:  # one rule per dataset kind, named f"<prefix>_{_kind.name}"
            prefix = re.search(r'name:\s*\n\s*f"(\w+)_\{_kind\.name\}"', block).group(1)
            rules = {f"{prefix}_{kind}" for kind in KINDS}
        runs.setdefault(Path(script.group(1)).name, set()).update(rules)
    assert len(runs) >= 12
    for path in sorted(SCRIPTS.glob("*.py")):
        first = ast.get_docstring(ast.parse(path.read_text())).split(":")[0]
        words = re.sub(r"\w+<kind>|^Rules? ", "", first)
        named = set(re.findall(r"\b[a-z][a-z0-9_]+\b", words)) - {"and"}
        assert first.startswith("Rule") and named == runs.get(path.name), (path.name, first, runs.get(path.name))
