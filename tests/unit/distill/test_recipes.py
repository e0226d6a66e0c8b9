"""Distillation recipes: the variants a config runs, their losses against independent
computations, the targets each recipe gives the student, and the teacher gate."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from conftest import toy_sets

from kdinv.data.splits import save_split, write_folds
from kdinv.distill import losses
from kdinv.distill.losses import consistency_penalty, kd_loss, recipe_loss
from kdinv.distill.recipes import Variant, row_variants
from kdinv.evaluation import TeacherNotInvariant
from kdinv.io import load_tensors
from kdinv.jobs import distill_student, train_model
from kdinv.training import Batch

CPU = torch.device("cpu")
PERM = {"transform": "permute_set"}


# --- which variants run -------------------------------------------------------------------------


def test_variants_of_a_row(paper_config):
    cfg = copy.deepcopy(paper_config)
    assert [v.id("forward") for v in row_variants(cfg, cfg["rows"][3])] == ["plain"]
    cfg["recipes"] = {
        "plain": {"direction": ["forward", "reverse"]},
        "augmented": {},
        "consistency": {"lambda": [0.5, 2]},
        "mixup": {"alpha": 0.2},
    }
    ids = [v.id("forward") for v in row_variants(cfg, cfg["rows"][3])]
    assert ids == ["plain", "plain_reverse", "augmented_translation", "consistency_lambda0.5_translation",
                   "consistency_lambda2_translation", "mixup_alpha0.2"]
    # the jets row applies its own symmetry
    assert "augmented_permutation" in [v.id("forward") for v in row_variants(cfg, cfg["rows"][2])]
    # with the authors' direction as the default, the paper's runs are reverse and forward is the extra
    cfg["kd_direction"] = "reverse"
    assert [v.id("reverse") for v in row_variants(cfg, cfg["rows"][3])][:2] == ["plain", "plain_forward"]
    assert all(row_variants(cfg, row)[0].id("reverse") == "plain" for row in cfg["rows"])


def test_variant_spec_carries_what_the_job_needs():
    v = Variant("consistency", "forward", "translation", (("lambda", 0.5),))
    spec = v.spec({"transform": "shift_2d", "max_shift": 5})
    assert spec == {"recipe": "consistency", "direction": "forward", "weight": 0.5, "alpha": None,
                    "symmetry": "translation", "transform": {"transform": "shift_2d", "max_shift": 5}}
    assert Variant("plain", "forward").spec(None)["transform"] is None


# --- the losses ---------------------------------------------------------------------------------


def test_consistency_penalty_and_its_gradient_match_a_plain_formula():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    zp = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    # independent: softmax by exp / sum, squared L2 by an explicit sum, mean over the batch
    pz = torch.exp(z) / torch.exp(z).sum(1, keepdim=True)
    pp = torch.exp(zp) / torch.exp(zp).sum(1, keepdim=True)
    reference = sum(((pz[i] - pp[i]) ** 2).sum() for i in range(7)) / 7
    penalty = consistency_penalty(z.double(), zp.double())
    # consistency_penalty computes in float32; compare with a float32 tolerance
    assert penalty.item() == pytest.approx(reference.item(), rel=1e-5)
    ga = torch.autograd.grad(penalty, (z, zp))
    gb = torch.autograd.grad(reference, (z, zp))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # and against finite differences of the float64 formula
    eps = 1e-6
    for (i, j) in [(0, 0), (3, 2), (6, 4)]:
        def f(delta, i=i, j=j):
            zz = z.detach().clone()
            zz[i, j] += delta
            p1 = zz.softmax(1)
            p2 = zp.detach().softmax(1)
            return ((p1 - p2) ** 2).sum(1).mean().item()
        numeric = (f(eps) - f(-eps)) / (2 * eps)
        assert ga[0][i, j].item() == pytest.approx(numeric, rel=1e-3, abs=1e-7)
    assert consistency_penalty(z, z).item() == 0.0


def batch_of(x, targets, seed=3):
    return Batch(x, targets, torch.arange(len(x)), epoch=1, step=0, seed=seed, device=CPU)


def test_consistency_loss_is_plain_kd_plus_lambda_times_the_penalty():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = torch.randn(8, 4, 3)
    cache = torch.randn(8, 3)
    augment = lambda x, g: x.flip(1)
    spec = {"recipe": "consistency", "direction": "forward", "weight": 0.7}
    loss = recipe_loss(spec, 2.0, augment)(model, batch_of(x, cache))
    expected = kd_loss(model(x), cache, 2.0) + 0.7 * consistency_penalty(model(x), model(x.flip(1)))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    zero = recipe_loss({**spec, "weight": 0.0}, 2.0, augment)(model, batch_of(x, cache))
    assert zero.item() == pytest.approx(kd_loss(model(x), cache, 2.0).item(), rel=1e-6)


def _dropout_student():
    """A student as the ModelNet40 ones are: BatchNorm and dropout 0.5, in training mode."""
    from kdinv.models.deepsets import DeepSets

    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.BatchNorm1d(16),
                               torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))
    sets = DeepSets(in_features=3, num_classes=3, phi=[8], rho=[8], dropout=0.5)
    return [head.train(), sets.train()]


@pytest.mark.parametrize("which", [0, 1], ids=["mlp-batchnorm-dropout", "deepsets-dropout"])
def test_the_consistency_penalty_is_zero_for_the_identity_with_dropout(which):
    """Two training-mode passes with independent dropout masks differ even on the same input; the
    penalty must measure g, not the masks: exactly 0 when g is the identity."""
    model = _dropout_student()[which]
    x, cache = torch.randn(16, 4, 3), torch.randn(16, 3)
    spec = {"recipe": "consistency", "direction": "forward", "weight": 1.0}
    identity = lambda x, g: x.clone()
    # two independent passes differ: without the same masks the penalty would be above 0
    assert consistency_penalty(model(x), model(x)).item() > 1e-4
    torch.manual_seed(5)
    loss = recipe_loss(spec, 2.0, identity)(model, batch_of(x, cache))
    torch.manual_seed(5)
    plain = recipe_loss({"recipe": "plain", "direction": "forward"}, 2.0)(model, batch_of(x, cache))
    assert loss.item() == plain.item()  # exactly: the same mask, the same batch statistics
    after_consistency = torch.rand(1)
    torch.manual_seed(5)
    recipe_loss({"recipe": "plain", "direction": "forward"}, 2.0)(model, batch_of(x, cache))
    assert torch.equal(torch.rand(1), after_consistency)  # the random state moves as one pass moves it
    # and a g that moves the input still gives a penalty
    torch.manual_seed(5)
    noisy = lambda x, g: x + torch.randn(x.shape, generator=g)
    moved = recipe_loss(spec, 2.0, noisy)(model, batch_of(x, cache))
    assert moved.item() > plain.item()


def test_augmented_targets_are_the_teacher_on_the_inputs_the_student_sees(monkeypatch):
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x, cache = torch.randn(8, 4, 3), torch.randn(8, 3)
    seen = []

    def augment(x, g):
        moved = x + torch.randn(x.shape, generator=g)
        seen.append(moved)
        return moved

    spec = {"recipe": "augmented", "direction": "forward"}
    per_batch = recipe_loss(spec, 4.0, augment, teacher)(student, batch_of(x, cache))
    moved = seen[-1]
    expected = kd_loss(student(moved), teacher(moved).detach(), 4.0)
    assert per_batch.item() == pytest.approx(expected.item(), rel=1e-6)
    cached = recipe_loss(spec, 4.0, augment)(student, batch_of(x, cache))
    assert torch.equal(seen[-1], moved)  # the same step draws the same g
    assert cached.item() == pytest.approx(kd_loss(student(moved), cache, 4.0).item(), rel=1e-6)


def test_mixup_mixes_pairs_of_the_batch_and_asks_the_teacher():
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    calls = []

    class Teacher(torch.nn.Module):
        def forward(self, x):
            calls.append(x)
            return x.flatten(1)[:, :3] * 3

    x = torch.randn(16, 4, 3)
    loss = recipe_loss({"recipe": "mixup", "direction": "forward", "alpha": 0.4}, 2.0, None, Teacher())
    value = loss(student, batch_of(x, torch.zeros(16, 3)))
    mixed = calls[-1]
    assert mixed.shape == x.shape and not torch.equal(mixed, x)
    # every mixed sample lies on the segment between its own sample and another of the batch
    for i in range(16):
        ok = False
        for j in range(16):
            d = x[i] - x[j]
            if d.abs().sum() == 0:
                continue
            a = ((mixed[i] - x[j]) * d).sum() / (d * d).sum()
            if torch.allclose(mixed[i], a * x[i] + (1 - a) * x[j], atol=1e-5) and -1e-6 <= a <= 1 + 1e-6:
                ok = True
                break
        assert ok, i
    assert value.item() == pytest.approx(kd_loss(student(mixed), Teacher()(mixed), 2.0).item(), rel=1e-6)
    with pytest.raises(ValueError, match="teacher"):
        recipe_loss({"recipe": "mixup", "direction": "forward", "alpha": 0.4}, 2.0)


# --- the distillation job: targets and the gate -------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    x, y = toy_sets(240, 0)
    save_split(x, y, 2, root / "train.pt")
    save_split(*toy_sets(80, 1), 2, root / "test.pt")
    write_folds(root / "train.pt", 2, 0, [root / "fold0.pt", root / "fold1.pt"])
    out = {}
    for name, spec in {
        "deepsets": {"arch": "deepsets", "params": {"phi": [16], "rho": [16]}},  # invariant teacher
        "mlp": {"arch": "mlp", "params": {"hidden": [16]}},  # a student as teacher (s→s)
    }.items():
        spec = {**spec, "training": {"epochs": 4, "batch_size": 32, "lr": 1e-2}}
        (root / name).mkdir()
        train_model(root / "train.pt", root / "fold0.pt", spec, None, 1, "cpu", root / name / "model.pt",
                    root / name / "train_logits.pt", {"model": name, "fold": "0"})
        out[name] = root / name
    return root, out


STUDENT = {"arch": "mlp", "params": {"hidden": [8]},
           "distillation": {"epochs": 2, "batch_size": 32, "lr": 1e-2}}


def distill(root, teacher_dir, recipe, gates, out, caplog=None):
    distill_student(root / "train.pt", root / "fold0.pt", teacher_dir / "train_logits.pt",
                    teacher_dir / "model.pt", root / "test.pt", STUDENT, 4.0, recipe, 7, "cpu",
                    out / "model.pt", {"fold": "0"}, gates=gates, gate_seed=5)


AUGMENTED = {"recipe": "augmented", "direction": "forward", "weight": None, "alpha": None,
             "symmetry": "permutation", "transform": PERM}


def test_an_invariant_teacher_is_distilled_from_its_cache(trained, tmp_path, monkeypatch, caplog):
    """A teacher that passed the gate for the recipe's symmetry: its cached outputs on x equal its
    outputs on the permuted inputs within the gate's tolerance, so the cache is used and the
    teacher never runs per batch."""
    from kdinv import metrics
    from kdinv.evaluation import TEACHER_IM_MAX, transformed_copies
    from kdinv.models.checkpoint import load_model
    from kdinv.training import predict

    root, teachers = trained
    x = load_tensors(root / "train.pt")["x"]
    cache = load_tensors(teachers["deepsets"] / "train_logits.pt")["logits"]
    on_moved = predict(load_model(teachers["deepsets"] / "model.pt"), transformed_copies(x, PERM, 3), 256, CPU)
    assert metrics.invariance(cache, on_moved) <= TEACHER_IM_MAX
    calls = []
    monkeypatch.setattr(losses, "teacher_outputs", lambda t, x: calls.append(1) or t(x))
    with caplog.at_level(logging.INFO, logger="kdinv"):
        distill(root, teachers["deepsets"], AUGMENTED, {"permutation": PERM}, tmp_path)
    assert calls == [] and "cache used" in caplog.text
    assert (tmp_path / "model.pt").exists()


def test_a_non_invariant_teacher_runs_on_every_batch(trained, tmp_path, monkeypatch, caplog):
    """s→s under the augmented recipe: the teacher is a student without the invariance (no gate),
    so its outputs on the transformed batch are computed batch by batch."""
    root, teachers = trained
    calls = []
    real = losses.teacher_outputs
    monkeypatch.setattr(losses, "teacher_outputs", lambda t, x: calls.append(len(x)) or real(t, x))
    with caplog.at_level(logging.INFO, logger="kdinv"):
        distill(root, teachers["mlp"], AUGMENTED, {}, tmp_path)
    steps_per_epoch = -(-len(load_tensors(root / "fold0.pt")["train"]) // 32)
    assert len(calls) == 2 * steps_per_epoch  # every step of both epochs
    assert "runs the teacher on every batch" in caplog.text


def test_the_gate_refuses_a_teacher_that_is_not_invariant(trained, tmp_path):
    root, teachers = trained
    plain = {"recipe": "plain", "direction": "forward", "weight": None, "alpha": None, "symmetry": None,
             "transform": None}
    with pytest.raises(TeacherNotInvariant, match=r"IM under permutation \(permute_set\) is"):
        distill(root, teachers["mlp"], plain, {"permutation": PERM}, tmp_path)
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "resume.pt").exists()
    distill(root, teachers["deepsets"], plain, {"permutation": PERM}, tmp_path)  # passes the gate
    assert (tmp_path / "model.pt").exists()


class _SetSum(torch.nn.Module):
    """Sum over the set, then a linear map: permutation-invariant up to rounding. ``float32_leak``
    adds a term that depends on the first element, only when it runs in float32: a stand-in for
    DGCNN's near-ties, which float32 can flip and float64 does not."""

    def __init__(self, float32_leak: float = 0.0, leak: float = 0.0):
        super().__init__()
        self.linear = torch.nn.Linear(3, 4)
        self.float32_leak, self.leak = float32_leak, leak

    def forward(self, x):
        first = torch.nn.functional.pad(x[:, 0, :1], (0, 3))  # the first element, into one logit
        leak = self.leak + (self.float32_leak if x.dtype == torch.float32 else 0.0)
        return self.linear(x.sum(dim=1)) + leak * first


@pytest.mark.parametrize("case", ["invariant", "float32 near-ties", "not invariant"])
def test_the_gate_decides_in_float64_only_where_float32_does_not_pass(case, caplog):
    from kdinv.evaluation import TEACHER_IM_MAX, teacher_gate

    torch.manual_seed(0)
    model = {"invariant": _SetSum(), "float32 near-ties": _SetSum(float32_leak=1.0),
             "not invariant": _SetSum(leak=1.0)}[case]
    x = torch.randn(64, 6, 3, generator=torch.Generator().manual_seed(1))
    with caplog.at_level(logging.INFO, logger="kdinv"):
        if case == "not invariant":
            with pytest.raises(TeacherNotInvariant, match=r"IM under permutation \(permute_set\) is .* in float64"):
                teacher_gate(model, x, {"permutation": PERM}, 3, 16, torch.device("cpu"), "t")
        else:
            found = teacher_gate(model, x, {"permutation": PERM}, 3, 16, torch.device("cpu"), "t")
            assert found["permutation"] <= TEACHER_IM_MAX
    float32_lines = [r for r in caplog.messages if "IM (float32)" in r]
    float64_lines = [r for r in caplog.messages if "IM (float64)" in r]
    assert len(float32_lines) == 1
    assert len(float64_lines) == (0 if case == "invariant" else 1), caplog.messages


def test_the_evaluation_records_the_gates_number_for_the_teachers_it_gates(tmp_path, monkeypatch):
    """A teacher that passes the gate only in float64 (float32 near-ties) has that float64 IM in the
    metric table, so claim (a) decides with the gate's rule on the gate's number; a model the gate
    does not check keeps its float32 IM."""
    from kdinv import evaluation
    from kdinv.evaluation import TEACHER_IM_MAX, evaluate_runs, teacher_gate

    g = torch.Generator().manual_seed(2)
    x_train, x_test = torch.randn(40, 6, 3, generator=g), torch.randn(32, 6, 3, generator=g)
    save_split(x_train, torch.arange(40) % 2, 2, tmp_path / "train.pt")
    save_split(x_test, torch.arange(32) % 2, 2, tmp_path / "test.pt")
    write_folds(tmp_path / "train.pt", 2, 0, [tmp_path / "fold0.pt", tmp_path / "fold1.pt"])
    torch.manual_seed(0)
    model = _SetSum(float32_leak=1.0)
    monkeypatch.setattr(evaluation, "load_model", lambda path: model)
    ids = {"dataset": "toy", "fold": 0, "kind": "train", "augment": "plain"}
    runs = [{"dir": str(tmp_path / "t"), "identifiers": {**ids, "model": "t"}, "references": [],
             "gated": ["permutation"]},
            {"dir": str(tmp_path / "s"), "identifiers": {**ids, "model": "s"}, "references": []}]
    table = evaluate_runs(runs, tmp_path / "test.pt", tmp_path / "train.pt", tmp_path / "fold0.pt",
                          {"permutation": PERM}, 11, 12, "cpu", 16, tmp_path / "m.parquet").set_index("model")
    gate = teacher_gate(model, x_test, {"permutation": PERM}, 11, 16, CPU, "t")["permutation"]
    assert table.loc["t", "im_dtype"] == "float64" and table.loc["t", "im"] == gate <= TEACHER_IM_MAX
    assert table.loc["s", "im_dtype"] == "float32" and table.loc["s", "im"] > TEACHER_IM_MAX


# --- a new recipe is one object -----------------------------------------------------------------


def _sharpened(values, kd, augment, teacher):
    """A toy recipe's loss: the student on g·x against the teacher on g·x, its logits times
    ``gain``; it records what it was given."""

    def batch_loss(model, batch):
        moved = augment(batch.inputs, batch.generator)
        _SHARPENED_CALLS.append((values["gain"], teacher is not None))
        return kd(batch.forward(model, moved), losses.teacher_outputs(teacher, moved) * values["gain"])

    return batch_loss


_SHARPENED_CALLS: list = []
_SHARPENED_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["gain"],
    "properties": {
        "direction": {"$ref": "#/$defs/directions"},
        "symmetry": {"$ref": "#/$defs/recipe_symmetry"},
        "gain": {"oneOf": [{"type": "number", "exclusiveMinimum": 0},
                           {"type": "array", "minItems": 1,
                            "items": {"type": "number", "exclusiveMinimum": 0}}]},
    },
}


def test_a_recipe_registered_here_runs_without_a_change_elsewhere(paper_config, schema, trained, tmp_path,
                                                                  monkeypatch, caplog):
    """A recipe declared and registered in this test only (its object, and its entry in a copy of
    the schema) goes through the config checks, the variants, the run folders, the job params,
    the metric table's columns and a distillation that runs the teacher on every batch: no other
    module names it."""
    from kdinv.config import ConfigError, distillations, validate_config, variants_by_id
    from kdinv.distill import recipes
    from kdinv.paths import DISTILL, method_of, parse_run_dir

    toy = recipes.Recipe("sharpened", _sharpened, (recipes.Param("gain"),), needs_symmetry=True,
                         teacher_every_batch="always")
    monkeypatch.setitem(recipes.RECIPES, toy.name, toy)
    schema = copy.deepcopy(schema)
    schema["properties"]["recipes"]["properties"][toy.name] = _SHARPENED_SCHEMA
    cfg = copy.deepcopy(paper_config)
    cfg["recipes"] = {"sharpened": {"gain": [2, 0.5], "direction": ["forward", "reverse"]}}
    validate_config(cfg, schema)
    for change, key in [({"gain": [2, 2.0]}, r"recipes\.sharpened\.gain: \[2, 2\.0\] repeats a value"),
                        ({"gain": 1, "symmetry": "rotation"}, r"recipes\.sharpened\.symmetry: 'rotation'")]:
        bad = copy.deepcopy(paper_config)
        bad["recipes"] = {"sharpened": change}
        with pytest.raises(ConfigError, match=key):
            validate_config(bad, schema)

    jets = cfg["rows"][2]
    assert jets["symmetry"] == "permutation"
    ids = [v.id("forward") for v in row_variants(cfg, jets)]
    assert ids == ["plain", "sharpened_gain2_permutation", "sharpened_gain0.5_permutation",
                   "sharpened_reverse_gain2_permutation", "sharpened_reverse_gain0.5_permutation"]
    assert (jets["dataset"], jets["teacher"], "plain", jets["student"], ids[1]) in distillations(cfg)
    variant, paper = variants_by_id(cfg)[ids[1]], variants_by_id(cfg)["plain"]
    run = DISTILL.directory(dataset="jets", method=ids[1], teacher="t", teacher_augment="plain", student="s",
                            temperature=4.0, fold=0)
    assert run == f"results/jets/{method_of(ids[1])}/t/plain/s/T4/fold0"
    assert method_of(ids[1]) == f"distill-{ids[1]}"
    assert parse_run_dir(run)["recipe"] == ids[1]
    spec = variant.spec(PERM)
    assert spec == {"recipe": "sharpened", "direction": "forward", "gain": 2, "weight": None, "alpha": None,
                    "symmetry": "permutation", "transform": PERM}
    # the paper's job params and table columns are those of a config without the new recipe
    assert "gain" not in paper.spec(None) and "recipe_gain" not in recipes.variant_attributes(paper)
    assert recipes.variant_attributes(variant)["recipe_gain"] == 2

    _SHARPENED_CALLS.clear()
    root, teachers = trained
    with caplog.at_level(logging.INFO, logger="kdinv"):
        distill(root, teachers["mlp"], spec, {}, tmp_path)
    steps_per_epoch = -(-len(load_tensors(root / "fold0.pt")["train"]) // 32)
    assert _SHARPENED_CALLS == [(2, True)] * (2 * steps_per_epoch)
    assert "recipe sharpened runs the teacher on every batch" in caplog.text
    assert (tmp_path / "model.pt").exists()
