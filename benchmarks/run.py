"""Step cost of the models of Figure 1's four rows: the project's training path against a naive one.

    python benchmarks/run.py [--rows ROW ...] [--scale small|paper] [--steps N] [--device auto]
                             [--threads T] [--bf16] [--epochs-table] [--csv out.csv]

Every model of ``config.yaml`` runs at its config's batch sizes, input shape and classes on
synthetic data (random inputs, labels and cached teacher logits). ``--scale small`` narrows the
models, cuts ModelNet to 128 points and its batches by 4 (about 2 minutes on 2 CPU cores);
``--scale paper`` takes the config as it is. After ``--warmup`` steps, ``--steps`` steps are timed
in up to 30 chunks (each repeated to last >= --min-chunk-ms) that alternate between what is
compared (step, distillation step, batch fetch); the fastest chunk is reported (as ``timeit``
does: other processes only ever add time), so a passing load hits all alike (CUDA: synchronised).
``steps`` in the table counts the timed steps.

Cases (``case`` / ``path`` columns):

* ``train``: a supervised step with the model's ``training`` block (Adam, cross-entropy,
  grad_clip). ``project`` is :func:`kdinv.training.fit`'s step: data held on the device, batch =
  ``x[order[i:i+b]]``, loss summed on the device. ``naive`` is the same step fed by
  ``DataLoader(TensorDataset(x, y), batch_size, shuffle=True)`` (CPU tensors, default collate,
  ``.to(device)`` per batch).
* ``distill`` (students, ``distillation`` block): ``project`` = :func:`kdinv.distill.losses.kd_loss`
  (T = --temperature) against cached teacher logits indexed like the inputs (the distill job);
  ``naive`` = teacher forward (eval, no_grad) on every batch + the KD step, DataLoader-fed. Each
  comes with its ``plain`` reference: the same student, block and path with cross-entropy, timed
  interleaved with it in the same process; ``ratio_vs_plain`` = distill / plain step time
  (project target <= 1.15; the naive ratio pays a teacher forward per step).
* ``recipe:<name>`` (students, project path, with ``--recipes``): one step of a distillation
  recipe (:func:`kdinv.distill.losses.recipe_loss` on :class:`kdinv.training.Batch`, as the distill
  job runs it), timed interleaved with the plain step of the same student: ``augmented`` (g drawn
  per step, the cached targets), ``augmented+teacher`` (the teacher run on g·x every step, as for
  s→s), ``consistency`` (two student passes), ``mixup`` (the teacher on mixed inputs every step).
  ``ratio_vs_plain`` = recipe / plain step; for ``augmented``, ``ratio_vs_aug_train`` = recipe
  step / (plain step + the per-epoch augmentation amortised per step), an augmented-training step
  of the same student (targets: augmented <= 1.15, consistency <= 2.3 x plain; the per-teacher
  ratios are reported).
* ``eval``: :func:`kdinv.training.predict` (eval mode, no grad, inputs on the CPU as in the
  evaluation jobs) over ``--eval-batches`` batches of the model's ``eval_batch_size``.

``step_ms``: a whole step, batch fetch included; ``samples_per_s`` = batch / step. ``data_ms``:
the batch fetch alone (the project's index + gather; the DataLoader's per-sample indexing, collate
and copy); ``data_share`` = data_ms / step_ms (project target <= 10 % for the small models).
``aug_ms``: the per-epoch augmentation of augmented training (``make_augmentation`` of the row's
symmetry on the whole set held by ``fit``) amortised per step, not in step_ms nor in the memory.
``peak_mem_mb``: the memory the case added (model, Adam state, its (warmup+steps)*batch synthetic
samples, activations, batches, naive teacher). CUDA: ``torch.cuda.max_memory_allocated`` growth.
CPU: each case runs in a forked child; its peak RSS (VmHWM, reset through /proc/self/clear_refs)
less file-backed pages, minus its anonymous RSS at the start. The real training set the project
holds on the device comes on top (float32: MNIST 188, ModelNet40 90, jets 92 MiB). MiB = 2**20 B.

``--epochs-table`` estimates an epoch at the paper's training-part sizes (:data:`TRAIN_SPLIT` x
(folds-1)/folds): n_train / train samples/s + n_val / eval samples/s (the validation pass of every
epoch), and the hours at the config's maximum epochs (an upper bound: early stopping ends most
runs sooner). Meaningful with ``--scale paper``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import itertools
import math
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from collections import Counter
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, TensorDataset

from kdinv.data.kinds import KINDS
from kdinv.distill.losses import (
    kd_loss,
    recipe_loss,
)
from kdinv.models import build_model
from kdinv.models.wrappers import Standardized
from kdinv.symmetry.transforms import make_augmentation
from kdinv.training import Batch, TrainConfig, pick_device, predict

RECIPE_CASES = [  # (name, recipe spec, the teacher runs every step)
    ("augmented", {"recipe": "augmented"}, False),
    ("augmented+teacher", {"recipe": "augmented"}, True),
    ("consistency", {"recipe": "consistency", "weight": 1.0}, False),
    ("mixup", {"recipe": "mixup", "alpha": 0.4}, True),
]
RECIPE_TARGETS = {"recipe:augmented": ("ratio_vs_aug_train", 1.15), "recipe:consistency": ("ratio_vs_plain", 2.3)}

# Official training splits (each kind's train_size, kdinv/data/kinds.py); the folds' training
# part is (folds - 1) / folds of it (config: 5).
TRAIN_SPLIT = {name: kind.train_size for name, kind in KINDS.items()}
_SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
DATASET_DEFAULTS = {key: spec["default"] for key, spec in
                    _SCHEMA["properties"]["datasets"]["additionalProperties"]["properties"].items()
                    if "default" in spec}
COLUMNS = ["row", "model", "role", "case", "path", "batch", "steps", "samples_per_s", "step_ms",
           "data_ms", "data_share", "aug_ms", "peak_mem_mb", "ratio_vs_plain", "ratio_vs_aug_train", "note"]
SMALL_MODELS = ("mlp", "jet-mlp", "jet-deepsets", "jet-deepsets-prime")  # the data-share targets
RATIO_TARGET, SHARE_TARGET = 1.15, 0.10
CHUNKS = 30  # timed chunks per case; the fastest is reported


# ---------------------------------------------------------------------------------------------
# What to run: the config's rows -> a list of cases


def dataset_shape(ds: dict, scale: str) -> tuple[tuple[int, ...], int]:
    """(per-sample input shape, classes) of a dataset entry of the config, as its kind declares
    them (kdinv/data/kinds.py); keys the entry leaves out take the schema's defaults."""
    kind = KINDS[ds["kind"]]
    ds = {**DATASET_DEFAULTS, **ds}
    if kind.name == "modelnet40" and scale != "paper":
        ds["num_points"] = 128
    return kind.sample_shape(ds), kind.classes


def shrink(model: dict, kind: str) -> dict:
    """The small-scale version of a model entry: narrower layers, smaller batches."""
    m = copy.deepcopy(model)
    p, narrow = m["params"], (lambda ws, d: [max(8, w // d) for w in ws])
    if m["arch"] == "resnet18_aps":
        p["width"] = max(4, p.get("width", 64) // 8)
    elif m["arch"] == "mlp":
        p["hidden"] = [min(w, 256) for w in p["hidden"]]
    elif m["arch"] == "dgcnn":
        p["k"] = min(p.get("k", 20), 10)
        p["edge_layers"] = [narrow(w, 4) for w in p.get("edge_layers", [[64], [64], [128], [256]])]
        p["embedding"] = p.get("embedding", 1024) // 4
        p["head"] = narrow(p.get("head", [512, 256]), 4)
    elif m["arch"] == "deepsets" and kind == "modelnet40":
        p["phi"], p["rho"] = narrow(p["phi"], 4), narrow(p["rho"], 4)
    for block in (m[k] for k in ("training", "distillation") if k in m):
        if kind == "modelnet40":
            block["batch_size"] = max(4, block["batch_size"] // 4)
            block["eval_batch_size"] = min(block.get("eval_batch_size", 1024), 128)
        elif kind == "mnist":
            block["eval_batch_size"] = min(block.get("eval_batch_size", 1024), 1024)
    return m


def plan(config: dict, rows: list[str] | None, scale: str) -> list[dict]:
    """One dict per case; each model's train/eval cases appear once (under its first row)."""
    cases, seen = [], set()
    for row in config["rows"]:
        if rows and row["name"] not in rows:
            continue
        ds = config["datasets"][row["dataset"]]
        shape, classes = dataset_shape(ds, scale)
        keys = (row["teacher"], row["teacher_prime"], row["student"])
        models = {k: config["models"][k] for k in keys}
        if scale == "small":
            models = {k: shrink(m, ds["kind"]) for k, m in models.items()}
        base = {"row": row["name"], "kind": ds["kind"], "shape": shape, "classes": classes,
                "symmetry": ds["symmetries"][row["symmetry"]]}
        for role, key in (("teacher", row["teacher"]), ("teacher'", row["teacher_prime"]),
                          ("student", row["student"])):
            m = models[key]
            common = {**base, "model": key, "role": role, "spec": m}
            if key not in seen:
                seen.add(key)
                cases += [{**common, "case": "train", "path": p, "cfg": m["training"]}
                          for p in ("project", "naive")]
                cases.append({**common, "case": "eval", "path": "project", "cfg": m["training"]})
            if role == "student" and "distillation" in m:
                cases += [{**common, "case": "distill", "path": p, "cfg": m["distillation"],
                           "teacher": models[row["teacher"]]} for p in ("project", "naive")]
    return cases


# ---------------------------------------------------------------------------------------------
# Measuring one case


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _status_kib(*fields: str) -> int:
    with open("/proc/self/status") as f:
        values = {line.split(":")[0]: int(line.split()[1]) for line in f if line.startswith(fields)}
    return sum(values[k] for k in fields)


class PeakMemory:
    """Peak memory added since construction: CUDA allocator stats, or the CPU's peak RSS.

    On the CPU the peak resident set (VmHWM) is reset through /proc/self/clear_refs; the file-
    backed pages (torch's libraries, paged in by a forked child's first ops and kept) are taken
    off, so the number is the peak growth of anonymous memory (tensors, allocator, threads).
    """

    def __init__(self, dev: torch.device):
        self.dev = dev
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            self.base = torch.cuda.memory_allocated(dev)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
            self.base = _status_kib("RssAnon")
        except OSError:
            self.base = None

    def mb(self) -> float:
        if self.dev.type == "cuda":
            return (torch.cuda.max_memory_allocated(self.dev) - self.base) / 2**20
        if self.base is None:
            return float("nan")
        return (_status_kib("VmHWM") - _status_kib("RssFile", "RssShmem") - self.base) / 1024


def make_model(spec: dict, shape, classes: int, kind: str) -> torch.nn.Module:
    model = build_model(spec["arch"], spec["params"], shape, classes)
    if kind == "jets":  # the workflow wraps jet models in the fold's robust scaling
        model = Standardized(model, torch.zeros(shape[-1]), torch.ones(shape[-1]))
    return model


def synthetic(n: int, shape, classes: int, kind: str, g: torch.Generator):
    """Random inputs (jets: standard normal features; images and clouds: uniform in [-1, 1])."""
    if kind == "jets":
        x = torch.randn(n, *shape, generator=g)
    else:
        x = torch.rand(n, *shape, generator=g) * 2 - 1
    return x, torch.randint(0, classes, (n,), generator=g)


def _interleaved(variants: dict, steps: int, dev: torch.device, min_chunk_s: float) -> dict:
    """(seconds per step in the fastest chunk, timed steps) of each ``name: (batches, fn)``
    (warmed up before), over up to CHUNKS chunks that alternate between the variants in an
    A B B A order. A chunk runs ``steps / chunks`` steps, repeated until it lasted min_chunk_s."""
    chunks = min(CHUNKS, steps)
    per, counts = steps // chunks, dict.fromkeys(variants, 0)
    times = {name: [] for name in variants}
    for chunk in range(chunks):
        order = list(variants.items())
        for name, (it, fn) in order if chunk % 2 == 0 else order[::-1]:  # ABBA: no position bias
            _sync(dev)
            start, done, elapsed = time.perf_counter(), 0, 0.0
            while done == 0 or elapsed < min_chunk_s:
                for _ in range(per):
                    fn(*next(it))
                _sync(dev)
                done, elapsed = done + per, time.perf_counter() - start
            times[name].append(elapsed / done)
            counts[name] += done
    return {name: (min(t), counts[name]) for name, t in times.items()}


def _warm(it, fn, warmup: int):
    for _ in range(warmup):
        fn(*next(it))
    return it, fn


def run_case(c: dict) -> list[dict]:
    """Measure one case in this process; returns its table rows' measured columns (a distill
    case also returns its plain reference, timed interleaved with it on the same model)."""
    dev, steps, warmup = torch.device(c["device"]), c["steps"], c["warmup"]
    torch.set_num_threads(c["threads"])
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    amp = (partial(torch.autocast, dev.type, dtype=torch.bfloat16) if c["bf16"]
           else contextlib.nullcontext)
    memory = PeakMemory(dev)
    cfg = TrainConfig.from_dict(c["cfg"])
    model = make_model(c["spec"], c["shape"], c["classes"], c["kind"]).to(dev)
    if c["case"] == "eval":
        b = cfg.eval_batch_size
        x, _ = synthetic(b * c["eval_batches"], c["shape"], c["classes"], c["kind"], g)
        with amp():
            predict(model, x[:b], b, dev)  # warm-up
            _sync(dev)
            start = time.perf_counter()
            predict(model, x, b, dev)
            _sync(dev)
        seconds = (time.perf_counter() - start) / c["eval_batches"]
        return [{"batch": b, "steps": c["eval_batches"], "samples_per_s": b / seconds,
                 "step_ms": 1e3 * seconds, "peak_mem_mb": memory.mb()}]

    b = cfg.batch_size
    n = (warmup + steps) * b
    x, y = synthetic(n, c["shape"], c["classes"], c["kind"], g)
    kd = partial(kd_loss, temperature=c["temperature"])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()

    def optimise(loss):  # the rest of kdinv.training.fit's batch loop
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        return loss.detach()

    def update(xb, tb, loss_fn):  # the body of kdinv.training.fit's batch loop, one forward
        with amp():
            out = model(xb)
        return optimise(loss_fn(out.float(), tb))

    aug_ms, distill = float("nan"), c["case"] == "distill"
    if c["path"] == "project":
        logits = torch.randn(n, c["classes"], generator=g)  # the teacher's cached logits
        x, y, logits = x.to(dev), y.to(dev), logits.to(dev)
        order = torch.randperm(n, generator=g).to(dev)
        total = torch.zeros((), device=dev)

        def batches(targets):  # endless: epochs over the same order
            while True:
                for i in range(0, n, b):
                    idx = order[i : i + b]
                    yield x[idx], targets[idx]

        def plain_step(xb, tb):
            total.add_(update(xb, tb, F.cross_entropy) * len(xb))

        def distill_step(xb, tb):
            total.add_(update(xb, tb, kd) * len(xb))

        plain_batches, teacher_batches = partial(batches, y), partial(batches, logits)
        plain = _warm(plain_batches(), plain_step, warmup)
    else:
        loader = DataLoader(TensorDataset(x, y), batch_size=b, shuffle=True, generator=g)

        def batches():  # endless: a new shuffled epoch when one ends
            while True:
                for xb, yb in loader:
                    yield xb.to(dev), yb.to(dev)

        plain_batches = teacher_batches = batches
        plain = _warm(batches(), partial(update, loss_fn=F.cross_entropy), warmup)
        if distill:
            teacher = make_model(c["teacher"], c["shape"], c["classes"], c["kind"]).to(dev).eval()

            def distill_step(xb, yb):
                with torch.no_grad(), amp():
                    logits = teacher(xb)
                update(xb, logits, kd)

    plain_peak = memory.mb()
    variants = {"plain": plain}
    if distill:
        variants["distill"] = _warm(teacher_batches(), distill_step, warmup)
    recipe_names = []
    if distill and c["path"] == "project" and c.get("recipes"):
        augment = make_augmentation(c["symmetry"])
        teacher = make_model(c["teacher"], c["shape"], c["classes"], c["kind"]).to(dev).eval()
        precision = "bf16" if c["bf16"] else "float32"
        for name, spec, with_teacher in RECIPE_CASES:
            loss_fn = recipe_loss({"direction": "forward", **spec}, c["temperature"], augment,
                                  teacher if with_teacher else None)
            counter = itertools.count()

            def recipe_step(xb, tb, loss_fn=loss_fn, counter=counter):
                step = next(counter)
                batch = Batch(xb, tb, None, 1, step, step, dev, precision)
                total.add_(optimise(loss_fn(model, batch)) * len(xb))

            variants[f"recipe:{name}"] = _warm(teacher_batches(), recipe_step, warmup)
            recipe_names.append(f"recipe:{name}")
    fetch = teacher_batches() if distill else plain_batches()
    variants["data"] = _warm(fetch, lambda *batch: None, warmup)  # the batch fetch alone
    timings = _interleaved(variants, steps, dev, c["min_chunk_s"])
    peak, (data, _) = memory.mb(), timings.pop("data")
    seconds = {name: t for name, (t, _) in timings.items()}
    if c["path"] == "project" and (c["case"] == "train" or recipe_names):  # not in the memory reading
        augment = make_augmentation(c["symmetry"])
        _sync(dev)
        start = time.perf_counter()
        augment(x, g)
        _sync(dev)
        aug_ms = 1e3 * (time.perf_counter() - start) / (n / b)
    rows = []
    for name, s in seconds.items():
        rows.append({"case": c["case"] if name == "plain" and not distill else name, "batch": b,
                     "steps": timings[name][1], "samples_per_s": b / s, "step_ms": 1e3 * s,
                     "data_ms": 1e3 * data, "data_share": data / s, "aug_ms": aug_ms,
                     "peak_mem_mb": plain_peak if distill and name == "plain" else peak})
    if distill:
        rows[0]["note"] = "timed with distill (interleaved)"
        rows[1]["ratio_vs_plain"] = seconds["distill"] / seconds["plain"]
        for r in rows[2:]:
            r["ratio_vs_plain"] = seconds[r["case"]] / seconds["plain"]
            r["aug_ms"] = float("nan")
            if r["case"] == "recipe:augmented":
                r["ratio_vs_aug_train"] = seconds[r["case"]] / (seconds["plain"] + aug_ms / 1e3)
    return rows


def _child(conn, case: dict) -> None:
    try:
        conn.send(run_case(case))
    except BaseException:  # noqa: BLE001 - reported as the case's note
        conn.send([{"note": "error: " + traceback.format_exc().strip().splitlines()[-1]}])
    finally:
        conn.close()


def run_here(case: dict) -> list[dict]:
    """Run a (CUDA) case in this process; its memory is measured by the allocator's stats."""
    try:
        return run_case(case)
    except Exception as error:  # noqa: BLE001 - reported as the case's note, e.g. out of memory
        return [{"note": f"error: {type(error).__name__}: {str(error).splitlines()[0][:120]}"}]
    finally:
        torch.cuda.empty_cache()


def prewarm() -> None:
    """One tiny single-threaded step of each kind in the parent before any fork: the lazy imports
    of the first Adam step (torch._dynamo, sympy: ~80 MB) and first DataLoader use then happen
    here, not inside every child's memory figure. One thread: no OpenMP pool exists at fork."""
    torch.set_num_threads(1)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), weight_decay=1e-7)
    for xb, yb in DataLoader(TensorDataset(torch.randn(4, 4), torch.randint(0, 3, (4,))), 2):
        logits = model(xb)
        (F.cross_entropy(logits, yb) + kd_loss(logits, logits.detach(), 4.0)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
    predict(model, torch.randn(4, 4), 2, torch.device("cpu"))


def run_isolated(case: dict) -> list[dict]:
    """Run a CPU case in a forked child (torch already imported, no threads started yet here)."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, case))
    proc.start()
    send.close()
    try:
        result = recv.recv()
    except EOFError:
        result = [{"note": f"child died (exit code {proc.exitcode}; out of memory?)"}]
    except BaseException:  # interrupted: do not leave the child running
        proc.kill()
        raise
    proc.join()
    return result


# ---------------------------------------------------------------------------------------------
# Tables


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def print_table(rows: list[dict], columns: list[str]) -> None:
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for line in cells:
        print("  ".join(v.rjust(w) if v[:1].isdigit() or v == "-" else v.ljust(w)
                        for v, w in zip(line, widths)).rstrip())


def print_checks(results: list[dict]) -> None:
    print(f"\nchecks (project targets: distill/plain <= {RATIO_TARGET:.2f}, data share <= {100 * SHARE_TARGET:.0f} %):")
    by = {(r["row"], r["model"], r["case"], r["path"]): r for r in results}
    for r in results:
        if r["case"] == "distill" and r["path"] == "project" and "ratio_vs_plain" in r:
            naive = by.get((r["row"], r["model"], "distill", "naive"), {})
            ok = "ok" if r["ratio_vs_plain"] <= RATIO_TARGET else "MISSED"
            print(f"  {r['row']:14s} {r['model']:16s} distill/plain: project "
                  f"{r['ratio_vs_plain']:.2f} ({ok}), naive "
                  f"{_fmt(naive.get('ratio_vs_plain', math.nan))}")
    for r in results:
        if r["case"].startswith("recipe:") and "ratio_vs_plain" in r:
            key, target = RECIPE_TARGETS.get(r["case"], ("ratio_vs_plain", None))
            verdict = "" if target is None else (" (ok)" if r[key] <= target else " (MISSED)") + f", target {target}"
            extra = f", vs augmented training {r['ratio_vs_aug_train']:.2f}" if "ratio_vs_aug_train" in r else ""
            print(f"  {r['row']:14s} {r['model']:16s} {r['case']}: {key} {r[key]:.2f}{verdict}"
                  f"{extra} (vs plain {r['ratio_vs_plain']:.2f})")
    for r in results:
        if r["model"] in SMALL_MODELS and r["path"] == "project" and "data_share" in r:
            naive = by.get((r["row"], r["model"], r["case"], "naive"), {})
            ok = "ok" if r["data_share"] <= SHARE_TARGET else "MISSED"
            print(f"  {r['row']:14s} {r['model']:16s} {r['case']:7s} data share: project "
                  f"{100 * r['data_share']:.1f} % ({ok}), naive "
                  f"{100 * naive.get('data_share', math.nan):.1f} %")


def epochs_table(results: list[dict], config: dict, scale: str) -> None:
    """Estimated seconds per epoch and hours at the maximum epochs, at the paper's data sizes."""
    folds = config["folds"]
    evals = {r["model"]: r for r in results if r["case"] == "eval" and "samples_per_s" in r}
    rows = []
    for r in results:
        if r["case"] not in ("train", "distill") or "samples_per_s" not in r:
            continue
        ds = next(x["dataset"] for x in config["rows"] if x["name"] == r["row"])
        split = TRAIN_SPLIT[config["datasets"][ds]["kind"]]
        n_train, n_val = split * (folds - 1) / folds, split / folds
        val_s = n_val / evals[r["model"]]["samples_per_s"] if r["model"] in evals else math.nan
        epoch_s = n_train / r["samples_per_s"] + val_s
        block = config["models"][r["model"]]
        block = block["distillation"] if r["case"] == "distill" else block["training"]
        rows.append({"row": r["row"], "model": r["model"], "case": r["case"], "path": r["path"],
                     "n_train": int(n_train), "epoch_s": epoch_s, "val_s": val_s,
                     "max_epochs": block["epochs"], "max_h": epoch_s * block["epochs"] / 3600})
    print(f"\nepoch-time estimates at the paper's training-set sizes ({folds - 1}/{folds} of the "
          f"official splits, validation pass included)"
          + ("" if scale == "paper" else " -- WARNING: --scale small, not the paper's models"))
    print_table(rows, ["row", "model", "case", "path", "n_train", "epoch_s", "val_s", "max_epochs",
                       "max_h"])
    grid_estimate(rows, config)


def grid_estimate(rows: list[dict], config: dict, typical_epochs: tuple[int, ...] = (50, 100)) -> list[dict]:
    """GPU-hours of the whole grid of ``config`` from the epoch estimates: for each model and case,
    the number of its jobs in the grid (kdinv.config.trained_runs / distillations x folds, x
    temperatures for distillations) x epoch_s x epochs, at the maximum epochs (an upper bound) and
    with every run stopped early after ``typical_epochs`` epochs (or its maximum, if lower).
    Evaluations and job start-up are not included. Returns and prints one line per (model, case)."""
    from kdinv.config import distillations, trained_runs

    folds, temps = config["folds"], len(config["temperatures"])
    # runs per (dataset, model, case) in one fold at one temperature
    runs = Counter((d, m, "train") for d, m, _ in trained_runs(config))
    runs.update((d, s, "distill") for d, _, _, s, _ in distillations(config))
    row_dataset = {r["name"]: r["dataset"] for r in config["rows"]}
    seen, lines = set(), []
    for r in rows:
        key = (row_dataset[r["row"]], r["model"], r["case"])
        if r["path"] != "project" or key in seen or not math.isfinite(r["epoch_s"]):
            continue
        seen.add(key)
        ds, model, case = key
        jobs = folds * runs[key] * (temps if case == "distill" else 1)
        line = {"dataset": ds, "model": model, "case": case, "jobs": jobs, "epoch_s": r["epoch_s"],
                "max_epochs": r["max_epochs"], "gpu_h_max": jobs * r["epoch_s"] * r["max_epochs"] / 3600}
        for n in typical_epochs:
            line[f"gpu_h_{n}ep"] = jobs * r["epoch_s"] * min(n, r["max_epochs"]) / 3600
        lines.append(line)
    columns = ["dataset", "model", "case", "jobs", "epoch_s", "max_epochs", "gpu_h_max",
               *(f"gpu_h_{n}ep" for n in typical_epochs)]
    print("\nhours of the whole grid at these step times, GPU-hours when measured on a GPU (an "
          "ESTIMATE: synthetic-data step times x job counts x epochs; evaluations and job start-up "
          "not included)")
    print_table(lines, columns)
    totals = {c: sum(x[c] for x in lines) for c in columns if c.startswith("gpu_h")}
    print("  total: " + ", ".join(f"{c} {v:.1f}" for c, v in totals.items())
          + f" ({sum(x['jobs'] for x in lines)} training and distillation jobs)")
    return lines


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def measure_all(cases: list[dict], results: list[dict], dev: torch.device) -> None:
    """Run the cases one by one (CPU: each in a forked child), appending their table lines."""
    for k, c in enumerate(cases, 1):
        start = time.perf_counter()
        out = run_isolated(c) if dev.type == "cpu" else run_here(c)
        labels = {key: c[key] for key in ("row", "model", "role", "case", "path")}
        results += [{**labels, **r} for r in out]
        print(f"[{k}/{len(cases)}] {c['model']} {c['case']} {c['path']}: "
              + ", ".join(f"{r.get('case', c['case'])} {_fmt(r.get('step_ms', math.nan))} ms "
                          f"{r.get('note', '')}" for r in out)
              + f" ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--rows", nargs="+", help="row names of the config (default: all)")
    parser.add_argument("--models", nargs="+", help="only these model keys (default: all)")
    parser.add_argument("--scale", choices=("paper", "small"), default="small")
    parser.add_argument("--steps", type=int, help="timed steps, at least (default 30)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--min-chunk-ms", type=float, default=20.0,
                        help="each timed chunk lasts at least this long (more steps)")
    parser.add_argument("--eval-batches", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, help="torch threads (default: min(config, cores))")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA; CPU works "
                        "too but is slow without AMX/AVX512-BF16)")
    parser.add_argument("--epochs-table", action="store_true")
    parser.add_argument("--recipes", action="store_true",
                        help="time each distillation recipe's step against the plain step too")
    parser.add_argument("--csv", help="default: benchmarks/results-<device>-<scale>.csv")
    args = parser.parse_args(argv)
    config = yaml.safe_load(Path(args.config).read_text())
    dev = pick_device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU visible to torch")
    known = [r["name"] for r in config["rows"]]
    if args.rows and set(args.rows) - set(known):
        parser.error(f"unknown rows {sorted(set(args.rows) - set(known))}; known: {known}")
    threads = args.threads or min(config.get("threads", 4), os.cpu_count() or 1)
    steps = args.steps or 30
    cases = [c for c in plan(config, args.rows, args.scale)
             if not args.models or c["model"] in args.models]
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if dev.type == "cpu" and load > cores - threads + 0.5:
        print(f"# WARNING: load average {load:.1f} on {cores} cores: other processes compete for "
              "the CPU; multi-threaded timings of small ops suffer most (try --threads 1)",
              file=sys.stderr)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({threads} threads)"
    print(f"# {name}, torch {torch.__version__}, scale {args.scale}, {steps} steps after "
          f"{args.warmup} warm-up, {'bf16 autocast' if args.bf16 else 'float32'}, "
          f"{len(cases)} cases", flush=True)
    for c in cases:
        c.update(device=str(dev), steps=steps, warmup=args.warmup, eval_batches=args.eval_batches,
                 threads=threads, bf16=args.bf16, temperature=args.temperature,
                 min_chunk_s=args.min_chunk_ms / 1e3, recipes=args.recipes)
    if dev.type == "cpu":
        prewarm()
    results = []
    signal.signal(signal.SIGTERM, _interrupt)  # `timeout`: still print what was measured
    try:
        measure_all(cases, results, dev)
    except KeyboardInterrupt:
        print(f"# INTERRUPTED: {len(results)} table lines measured", flush=True)
    print_table(results, COLUMNS)
    print_checks(results)
    if args.epochs_table:
        epochs_table(results, config, args.scale)
    out_csv = Path(args.csv or ROOT / "benchmarks" / f"results-{dev.type}-{args.scale}.csv")
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: f"{v:.5g}" if isinstance(v, float) else v for k, v in r.items()}
                         for r in results)
    print(f"\nwritten: {out_csv}")
    return results


if __name__ == "__main__":
    main()
