"""What group and frame averaging cost: a backbone against its average over a finite group or
over a point cloud's PCA frame, on the CPU.

    python benchmarks/group_average.py [--reps N] [--warmup N] [--threads T] [--models resnet dgcnn ...]

About 60 s with ``--threads 1`` on a free CPU core; on a machine shared with other jobs use
``--threads 1`` (threads that wait for each other make multi-threaded timings erratic).

:class:`kdinv.models.wrappers.GroupAveraged` sends the whole orbit (B·|G| inputs) through the
backbone in one pass, so its forward and its training step should cost about |G| times the
backbone's, and its activation memory too (the weights and the optimiser state are shared, not
multiplied). Cases, on synthetic inputs and labels:

* ``resnet``: ResNet18-APS, width 16, 1×32×32 images, batch 64, averaged over ``rot90_2d`` (C4);
* ``dgcnn``: the paper's DGCNN (DGN) narrowed as ``benchmarks/run.py --scale small`` narrows it
  (k 10, edge layers [[16], [16], [32], [64]], embedding 256, head [128, 64], dropout 0.5), 256
  points, batch 16, averaged over ``rot90_z_3d`` (C4);
* ``dgcnn-so3``, ``dgcnn-so2``: the same DGCNN averaged over the PCA frame of each centred cloud
  (:class:`kdinv.models.wrappers.FrameAveraged`: 4 copies for ``so3_3d``, 2 for ``so2_z_3d``),
  which adds a float64 3×3 (2×2) eigendecomposition per cloud to the |F| copies;
* ``deepsets-so3``: the ModelNet40 students' DeepSets (phi [64, 64, 64], rho [64], as the demo's)
  on the same clouds, frame-averaged over ``so3_3d``: a cheap backbone, where the frame's own
  cost shows most.

``forward_ms``: one eval-mode forward without gradients; ``step_ms``: one training step (train
mode, cross-entropy, backward, Adam). After warm-up, plain and averaged runs alternate (so a
passing load hits both alike); the medians of ``--reps`` runs are reported with ``ratio`` =
averaged / plain, to compare with |G| (|F|), and the fastest runs with their ratio ``ratio_min`` (as
``timeit`` does: other processes only ever add time, so on a shared machine the fastest run is
the better estimate).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

import torch
import torch.nn.functional as F

from kdinv.models import build_model
from kdinv.models.wrappers import averaged as average
from kdinv.symmetry.catalog import TRANSFORM_INFO

DGCNN_SMALL = {
    "k": 10,
    "edge_layers": [[16], [16], [32], [64]],
    "embedding": 256,
    "head": [128, 64],
    "dropout": 0.5,
}
CASES = {
    # name: (arch, params, input shape, classes, batch, group)
    "resnet": ("resnet18_aps", {"width": 16}, (1, 32, 32), 10, 64, "rot90_2d"),
    "dgcnn": ("dgcnn", DGCNN_SMALL, (256, 3), 40, 16, "rot90_z_3d"),
    "dgcnn-so3": ("dgcnn", DGCNN_SMALL, (256, 3), 40, 16, "so3_3d"),
    "dgcnn-so2": ("dgcnn", DGCNN_SMALL, (256, 3), 40, 16, "so2_z_3d"),
    "deepsets-so3": ("deepsets", {"phi": [64, 64, 64], "rho": [64]}, (256, 3), 40, 16, "so3_3d"),
}


def copies(group: str) -> int:
    """|G| for a finite group, |F| (the frame's size) for a rotation group."""
    info = TRANSFORM_INFO[group]
    return info.group_order or info.frame_size


def _forward(model, x, y, opt):
    model.eval()
    with torch.no_grad():
        model(x)


def _step(model, x, y, opt):
    model.train()
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def _time(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - start) * 1e3


def bench(name: str, reps: int, warmup: int) -> list[dict]:
    arch, params, shape, classes, batch, group = CASES[name]
    torch.manual_seed(0)
    plain = build_model(arch, params, shape, classes)
    averaged = average(copy.deepcopy(plain), group)
    x = torch.randn(batch, *shape)
    y = torch.randint(0, classes, (batch,))
    models = {"plain": plain, "averaged": averaged}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in models.items()}
    rows = []
    for case, fn in (("forward_ms", _forward), ("step_ms", _step)):
        for _ in range(warmup):
            for k, m in models.items():
                fn(m, x, y, opts[k])
        times: dict[str, list[float]] = {k: [] for k in models}
        for _ in range(reps):
            for k, m in models.items():  # alternate: a passing load hits both
                times[k].append(_time(fn, m, x, y, opts[k]))
        med = {k: statistics.median(v) for k, v in times.items()}
        fastest = {k: min(v) for k, v in times.items()}
        rows.append({
            "model": name, "group": group, "order": copies(group), "batch": batch,
            "case": case, "plain": med["plain"], "averaged": med["averaged"],
            "ratio": med["averaged"] / med["plain"],
            "plain_min": fastest["plain"], "averaged_min": fastest["averaged"],
            "ratio_min": fastest["averaged"] / fastest["plain"],
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed runs per case (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per case first")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument(
        "--models", nargs="+", choices=sorted(CASES), default=list(CASES)
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, "
          f"median of {args.reps} runs after {args.warmup} warm-up")  # fmt: skip
    print(f"{'model':12s} {'group':11s} {'|G|':>3s} {'batch':>5s} {'case':11s} {'plain':>9s} "
          f"{'averaged':>9s} {'ratio':>6s} {'plain_min':>9s} {'avg_min':>9s} {'ratio_min':>9s}")
    for name in args.models:
        for r in bench(name, args.reps, args.warmup):
            print(f"{r['model']:12s} {r['group']:11s} {r['order']:3d} {r['batch']:5d} "
                  f"{r['case']:11s} {r['plain']:9.1f} {r['averaged']:9.1f} {r['ratio']:6.2f} "
                  f"{r['plain_min']:9.1f} {r['averaged_min']:9.1f} {r['ratio_min']:9.2f}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
