"""A SLURM job that was given a GPU it cannot use fails at once (kdinv.launch.start.require_visible_gpu)
instead of training on the CPU until its time limit."""

from __future__ import annotations

import pytest

from kdinv.launch.start import asked_for_gpu, require_visible_gpu


@pytest.mark.parametrize(
    "resources, asked",
    [
        ({"gpu": 1, "gres": ""}, True),
        ({"gpu": 0, "gres": "shard:4"}, True),
        ({"gpu": 0, "gres": ""}, False),
        ({}, False),
    ],
)
def test_what_asks_for_a_gpu(resources, asked):
    assert asked_for_gpu(resources) is asked


def test_a_slurm_job_given_a_gpu_it_cannot_see_fails_at_once(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURMD_NODENAME", "gpu07")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with pytest.raises(RuntimeError) as err:
        require_visible_gpu("auto", True, "train_model dataset=jets model=jet-mlp fold=0")
    message = str(err.value)
    assert "train_model dataset=jets model=jet-mlp fold=0" in message
    assert "SLURM job 4242 on gpu07" in message and "CUDA_VISIBLE_DEVICES='1'" in message
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.raises(RuntimeError, match="CUDA_VISIBLE_DEVICES=unset"):
        require_visible_gpu("cuda", True, "distill_student")
    # asked for no GPU, or told to use the CPU: nothing to check
    require_visible_gpu("auto", False, "evaluate_trained")
    require_visible_gpu("cpu", True, "train_model")


def test_outside_slurm_auto_still_falls_back_to_the_cpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    require_visible_gpu("auto", True, "train_model")
