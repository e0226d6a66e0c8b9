"""Per-epoch cost of each job kind at the paper's MNIST shapes, on synthetic inputs.

    python benchmarks/mnist_epochs.py [--device auto] [--n-train 48000] [--out timings.csv]

It runs the workflow's own code paths
(:func:`kdinv.training.fit`, :func:`kdinv.training.predict`, the KD loss on cached logits,
the per-epoch shift augmentation) for one epoch each and prints the seconds per epoch, the
training samples per second and the peak GPU memory, so the GPU-hours of the whole grid can be
estimated from the config's epoch counts.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

import torch
import torch.nn.functional as F

from kdinv.distill.losses import kd_loss
from kdinv.models import build_model
from kdinv.symmetry.transforms import make_augmentation
from kdinv.training import TrainConfig, fit, outputs_loss, pick_device, predict

SHAPE = (1, 32, 32)
MODELS = {
    "resnet": ("resnet18_aps", {"width": 64}),
    "mlp": ("mlp", {"hidden": [2048, 2048, 2048, 2048]}),
}
SHIFT = {"transform": "shift_2d", "max_shift": 5, "background": -1.0, "augment_identity_prob": 1 / 6}


def synthetic(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Digit-like images: background -1 with a bright block inside the 20x20 centre."""
    x = torch.full((n, *SHAPE), -1.0)
    x[:, :, 8:24, 10:22] = torch.rand(n, 1, 16, 12, generator=generator) * 2 - 1
    return x, torch.randint(0, 10, (n,), generator=generator)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_epoch(name, arch, params, x, y, xv, yv, device, loss_fn=F.cross_entropy, targets=None, augment=None):
    model = build_model(arch, params, SHAPE, 10)
    cfg = TrainConfig(epochs=1, batch_size=64, lr=1e-3, eval_batch_size=4096)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    start = time.perf_counter()
    fit(
        model,
        x,
        y if targets is None else targets,
        xv,
        yv,
        outputs_loss(loss_fn),
        cfg,
        torch.Generator().manual_seed(0),
        device,
        augment=augment,
        name=name,
    )
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return model, {"job": name, "epoch_s": seconds, "samples_per_s": len(x) / seconds, "peak_mib": peak}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n-train", type=int, default=48000)
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    g = torch.Generator().manual_seed(0)
    x, y = synthetic(args.n_train, g)
    xv, yv = synthetic(args.n_train // 4, g)
    xt, _ = synthetic(args.n_test, g)
    rows = []
    # warm-up (CUDA context, kernels) so the first timed row is not inflated
    time_epoch("warmup", "mlp", {"hidden": [64]}, x[:512], y[:512], xv[:256], yv[:256], device)
    teacher, row = time_epoch("train resnet", *MODELS["resnet"], x, y, xv, yv, device)
    rows.append(row)
    rows.append(time_epoch("train mlp", *MODELS["mlp"], x, y, xv, yv, device)[1])
    rows.append(
        time_epoch("train mlp augmented", *MODELS["mlp"], x, y, xv, yv, device, augment=make_augmentation(SHIFT))[1]
    )
    start = time.perf_counter()
    logits = predict(teacher, x, 4096, device)
    rows.append({"job": "teacher logits (cache)", "epoch_s": time.perf_counter() - start,
                 "samples_per_s": len(x) / (time.perf_counter() - start), "peak_mib": float("nan")})
    rows.append(
        time_epoch("distill mlp (cached logits)", *MODELS["mlp"], x, y, xv, yv, device,
                   loss_fn=partial(kd_loss, temperature=4.0), targets=logits)[1]
    )
    for name in ("resnet", "mlp"):
        model = build_model(*MODELS[name], SHAPE, 10).to(device)
        _sync(device)
        start = time.perf_counter()
        predict(model, xt, 4096, device)
        predict(model, xt, 4096, device)  # the transformed copies for IM
        _sync(device)
        seconds = time.perf_counter() - start
        rows.append({"job": f"evaluate {name}", "epoch_s": seconds, "samples_per_s": 2 * len(xt) / seconds,
                     "peak_mib": float("nan")})
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, "
          f"torch {torch.__version__}, n_train {args.n_train}")
    print(f"{'job':32s} {'s/epoch':>9s} {'samples/s':>11s} {'peak MiB':>9s}")
    for r in rows:
        print(f"{r['job']:32s} {r['epoch_s']:9.2f} {r['samples_per_s']:11.0f} {r['peak_mib']:9.0f}")
    if args.out:
        import csv

        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows


if __name__ == "__main__":
    main()
