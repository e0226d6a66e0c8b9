"""CPU cost of a training step of the ModelNet models (DGN, DGN', dsinv, dsequiv).

Each model runs in a fresh Python process, so that its peak resident memory (``ru_maxrss``) is its
own: build the model, draw random clouds (B, 1000, 3) in [-1, 1]³ and 40-class labels, run one
warm-up step and then ``steps`` timed steps of forward + cross-entropy + backward + Adam, in
train mode, with ``torch.set_num_threads(threads)``.

    python benchmarks/set_models.py            # the table
    python benchmarks/set_models.py --one DGN  # one model, one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"

MODELS: dict[str, tuple[str, dict, int]] = {
    # name: (arch, params, batch size of the authors' config)
    "DGN": ("dgcnn", {}, 32),
    "DGN'": (
        "dgcnn",
        {
            "edge_layers": [[64, 64, 64], [128]],
            "embedding": 512,
            "embedding_norm": False,
            "head_norm": False,
            "head_activation": "relu",
        },
        32,
    ),
    "dsinv": (
        "deepsets",
        {"phi": [256] * 3, "rho": [256], "activation": "tanh", "pool": "max", "dropout": 0.5},
        64,
    ),
    "dsequiv": (
        "deepsets",
        {
            "phi": [256] * 3,
            "rho": [256],
            "activation": "tanh",
            "pool": "max",
            "dropout": 0.5,
            "equivariant": True,
        },
        64,
    ),
}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench_one(name: str, points: int = 1000, steps: int = 5, threads: int = 2) -> dict:
    """Time ``steps`` training steps of one model after a warm-up step, in this process."""
    import torch

    sys.path.insert(0, str(SCRIPTS))
    from kdinv.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    arch, params, batch = MODELS[name]
    model = build_model(arch, params, (points, 3), 40).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, points, 3) * 2 - 1
    y = torch.randint(0, 40, (batch,))
    rss_before = _peak_rss_mib()

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimiser.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "batch": batch,
        "points": points,
        "threads": threads,
        "s_per_step": seconds,
        "ms_per_cloud": 1000 * seconds / batch,
        "peak_rss_mib": _peak_rss_mib(),
        "rss_before_steps_mib": rss_before,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--one", choices=sorted(MODELS), help="benchmark one model, print JSON")
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(bench_one(args.one, args.points, args.steps, args.threads)))
        return

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SCRIPTS), env.get("PYTHONPATH")]))
    header = (
        f"{'model':8} {'params':>10} {'batch':>5} {'points':>6} {'s/step':>8} "
        f"{'ms/cloud':>9} {'peak RSS MiB':>13} {'(before steps)':>15}"
    )
    print(header)
    for name in MODELS:
        cmd = [sys.executable, __file__, "--one", name,
               "--points", str(args.points), "--steps", str(args.steps),
               "--threads", str(args.threads)]  # fmt: skip
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{r['model']:8} {r['params']:>10,} {r['batch']:>5} {r['points']:>6} "
            f"{r['s_per_step']:>8.2f} {r['ms_per_cloud']:>9.1f} {r['peak_rss_mib']:>13.0f} "
            f"{r['rss_before_steps_mib']:>15.0f}"
        )


if __name__ == "__main__":
    main()
