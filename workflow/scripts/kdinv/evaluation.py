"""Evaluation of trained and distilled models: the paper's metrics on the held-out test split,
the invariance on the fold's validation part (to choose a temperature or λ without the test
split), and the teacher gate.

One evaluation job evaluates a group of runs of one dataset's fold (:data:`kdinv.paths.EVALUATION`):
the transformed copies that IM compares with are drawn once per symmetry from a seeded generator
and are the same for every model of the fold, so models are compared on identical inputs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import NamedTuple

import torch

from kdinv import metrics
from kdinv.data.splits import load_fold, load_split
from kdinv.io import load_tensors, save_tensors
from kdinv.models.checkpoint import load_model
from kdinv.symmetry.catalog import TEACHER_IM_MAX
from kdinv.symmetry.transforms import make_transform
from kdinv.training import describe_device, pick_device, predict

log = logging.getLogger(__name__)


class TeacherNotInvariant(RuntimeError):
    """A teacher failed the gate: distilling it would test nothing (a bug, not a result)."""


def transformed_copies(x: torch.Tensor, spec: dict, seed: int) -> torch.Tensor:
    """One transformed copy per sample of ``x``, drawn from a generator seeded with ``seed``."""
    return make_transform(spec)(x, torch.Generator().manual_seed(seed))


@torch.no_grad()
def logits_in(model: torch.nn.Module, x: torch.Tensor, batch_size: int, device: torch.device,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Logits [N, C] of ``model`` on ``x`` in eval mode, computed in ``dtype`` (float64 for the
    gate: float32 can flip DGCNN's nearest neighbours on near-ties). Like :func:`predict`, it
    puts the model on ``device``, where it stays (in float32)."""
    if dtype == torch.float32:
        return predict(model, x, batch_size, device)
    model.to(device=device, dtype=dtype).eval()
    try:
        out = [model(x[i : i + batch_size].to(device=device, dtype=dtype)) for i in range(0, len(x), batch_size)]
    finally:
        model.float()
    return torch.cat(out).cpu()


def gate_im(model: torch.nn.Module, x: torch.Tensor, copies: dict[str, torch.Tensor], batch_size: int,
            device: torch.device, name: str, plain32: torch.Tensor | None = None) -> dict[str, tuple[float, str]]:
    """The teacher gate's number: symmetry -> (IM of ``model`` between ``x`` and ``copies[sym]``,
    the dtype it was computed in). float32 first, which is several times faster on a CPU (a
    group-averaged teacher runs |G| forward passes per input); float64 only for the symmetries
    where float32 does not pass :data:`TEACHER_IM_MAX`: float32 can flip DGCNN's nearest
    neighbours on near-ties, which raises IM without the teacher being any less invariant, while a
    teacher that lacks the invariance has an IM far above the limit in both. ``plain32``: the
    float32 logits on ``x`` if already computed."""
    def ims(dtype: torch.dtype, names, plain=None) -> dict[str, float]:
        plain = logits_in(model, x, batch_size, device, dtype) if plain is None else plain
        out = {}
        for sym in names:
            moved = logits_in(model, copies[sym], batch_size, device, dtype)
            out[sym] = metrics.invariance(plain, moved)
            log.info("%s: teacher gate, IM (%s) under %s = %.3g (limit %g)", name, str(dtype)[6:], sym,
                     out[sym], TEACHER_IM_MAX)
        return out

    found = {sym: (im, "float32") for sym, im in ims(torch.float32, copies, plain32).items()}
    unsure = [sym for sym, (im, _) in found.items() if not im <= TEACHER_IM_MAX]
    if unsure:  # only the symmetries float32 did not pass are computed again, in float64
        found.update({sym: (im, "float64") for sym, im in ims(torch.float64, unsure).items()})
    return found


def teacher_gate(model: torch.nn.Module, x: torch.Tensor, symmetries: dict[str, dict], seed: int,
                 batch_size: int, device: torch.device, name: str) -> dict[str, float]:
    """IM of a teacher on ``x`` and one transformed copy per sample, for each symmetry; raises
    :class:`TeacherNotInvariant` naming the teacher, the symmetry and the value when one exceeds
    :data:`TEACHER_IM_MAX` by :func:`gate_im`'s rule (float64 where float32 does not pass).
    Returns symmetry -> IM. The evaluation records the same number for the teachers it gates, so
    that claim (a) and the gate agree."""
    copies = {sym: transformed_copies(x, spec, seed) for sym, spec in symmetries.items()}
    found = {sym: im for sym, (im, _) in gate_im(model, x, copies, batch_size, device, name).items()}
    for sym in symmetries:
        if not found[sym] <= TEACHER_IM_MAX:
            raise TeacherNotInvariant(
                f"{name}: the teacher's IM under {sym} ({symmetries[sym]['transform']}) is {found[sym]:.3g} "
                f"in float64 on the test split, above {TEACHER_IM_MAX:g}: it is not invariant, so nothing is "
                "distilled from it (a teacher that fails this is a bug, not a result; docs/method.md, "
                "\"The teacher gate\")"
            )
    return found


def evaluate_runs(
    runs: list[dict],
    test_split: str | Path,
    train_split: str | Path,
    fold_file: str | Path,
    symmetries: dict[str, dict],
    im_seed: int,
    val_seed: int,
    device: str,
    batch_size: int,
    out_metrics: str | Path,
    reference_logits: str | Path | None = None,
    out_logits: str | Path | None = None,
    measures: dict | None = None,
):
    """Evaluate a group of runs of one dataset's fold; one table row per (run, symmetry, reference).

    Args:
        runs: ``{"dir": run folder, "identifiers": columns copied into its rows, "references":
            [keys of reference_logits], "gated": [symmetries]}``; a run without references gets
            NaN fidelity. ``gated``: the symmetries under which the run is a teacher that the
            teacher gate checks (:func:`kdinv.config.teacher_gates`); its ``im`` under them is the
            gate's number (:func:`gate_im`: float64 where float32 does not pass), so claim (a)
            decides with the gate's rule on the gate's number.
        symmetries: name -> transform entry; IM on the test split, and ``val_im`` on the fold's
            validation part, for each (copies seeded with ``im_seed`` and ``val_seed``).
        reference_logits: a file of {key: test logits} of the teachers (the trained group's).
        out_logits: where to write {key: test logits} of these runs, keyed
            ``<model>/<augment>`` (the trained group writes it: the references of fidelity).
        measures: ``{"input_kind", "samples", "seed"}``: the orbit gap of every finite group that
            acts on the input kind and the Lie derivative of every symmetry, with their random
            controls, on the first ``samples`` test samples (:func:`kdinv.symmetry.measures.measures`);
            None or 0 samples leaves them out.

    Columns: the identifiers, symmetry, reference, accuracy, nll, ece, n_test, im, im_dtype
    (float32, or float64 where the gate's rule recomputed it), agreement, kl, val_accuracy, val_im;
    with ``measures`` also im_random (IM's control, on the measures' samples), lie, lie_random,
    and orbit_gap_<group>, orbit_gap_<group>_random per group.
    """
    import pandas as pd  # only evaluation jobs need pandas; training jobs start faster without it

    dev = pick_device(device)
    log.info("evaluating %d runs on %s", len(runs), describe_device(dev))
    x, y, _ = load_split(test_split)
    x_train, y_train, _ = load_split(train_split)
    _, val_idx = load_fold(fold_file, len(y_train))
    x_val = x_train[val_idx]
    test = _Split(x, y, {s: transformed_copies(x, spec, im_seed) for s, spec in symmetries.items()})
    val = _Split(
        x_val, y_train[val_idx], {s: transformed_copies(x_val, spec, val_seed) for s, spec in symmetries.items()}
    )
    references = load_tensors(reference_logits)["logits"] if reference_logits else {}
    rows, written = [], {}
    for run in runs:
        model = load_model(Path(run["dir"]) / "model.pt").to(dev)
        run_rows, logits = _evaluate_run(model, run, test, val, references, symmetries, batch_size, dev, measures)
        rows += run_rows
        ids = run["identifiers"]
        written[f"{ids['model']}/{ids['augment']}"] = logits
    table = pd.DataFrame(rows)
    if out_logits is not None:
        save_tensors({"logits": written}, out_logits)
    out_metrics = Path(out_metrics)
    out_metrics.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_metrics.with_suffix(".tmp.parquet")
    table.to_parquet(tmp, index=False)
    tmp.replace(out_metrics)
    log.info("%d rows for %d runs", len(table), len(runs))
    return table


class _Split(NamedTuple):
    """The inputs, labels and transformed copies (symmetry -> inputs) a model is evaluated on."""

    x: torch.Tensor
    y: torch.Tensor
    copies: dict[str, torch.Tensor]


def _evaluate_run(model, run: dict, test: _Split, val: _Split, references: dict, symmetries: dict[str, dict],
                  batch_size: int, dev: torch.device, measures: dict | None) -> tuple[list[dict], torch.Tensor]:
    """The table rows of one run of :func:`evaluate_runs` (a row per symmetry and reference), and
    its test logits."""
    from kdinv.symmetry.measures import im_random
    from kdinv.symmetry.measures import measures as invariance_measures

    x, y, copies = test
    logits = predict(model, x, batch_size, dev)
    val_logits = predict(model, val.x, batch_size, dev)
    base = {
        "accuracy": metrics.accuracy(logits, y), "nll": metrics.nll(logits, y), "ece": metrics.ece(logits, y),
        "n_test": len(y), "val_accuracy": metrics.accuracy(val_logits, val.y),
    }  # fmt: skip
    fidelity = {None: {"agreement": math.nan, "kl": math.nan}}
    if run.get("references"):
        fidelity = {
            ref: {"agreement": metrics.agreement(logits, references[ref]),
                  "kl": metrics.kl_divergence(references[ref], logits)}
            for ref in run["references"]
        }  # fmt: skip
    gated = [sym for sym in run.get("gated", ()) if sym in symmetries]
    by_gate = gate_im(model, x, {s: copies[s] for s in gated}, batch_size, dev, run["dir"], logits) if gated else {}
    sampled = bool(measures and measures["samples"])
    extra = {"runs": {}, "symmetries": {}}
    if sampled:
        extra = invariance_measures(model, x[: measures["samples"]], symmetries, measures["input_kind"],
                                    batch_size, dev, measures["seed"])
    rows = []
    for sym in symmetries:
        if sym in by_gate:
            im, dtype = by_gate[sym]
        else:
            im, dtype = metrics.invariance(logits, predict(model, copies[sym], batch_size, dev)), "float32"
        val_im = metrics.invariance(val_logits, predict(model, val.copies[sym], batch_size, dev))
        more = {}
        if sampled:
            control = torch.Generator().manual_seed(measures["seed"])
            n = measures["samples"]
            more = {"im_random": im_random(model, x[:n], copies[sym][:n], batch_size, dev, control),
                    **extra["symmetries"][sym], **extra["runs"]}
        for ref, fid in fidelity.items():
            rows.append({**run["identifiers"], "symmetry": sym, "reference": ref, **base, "im": im,
                         "im_dtype": dtype, **fid, "val_im": val_im, **more})  # fmt: skip
    log.info(
        "%s: accuracy %.4f, IM %s",
        run["dir"],
        base["accuracy"],
        ", ".join(f"{r['symmetry']} {r['im']:.3g}" for r in rows),
    )
    return rows, logits
