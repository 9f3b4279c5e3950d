"""The quality benchmark's protocol (benchmarks/quality): the plain loop's per-image D4 flips,
hpa_as_plain against the plain loop's ingredients, the report's pairing of runs at equal
optimizer steps, its cross-fitted selection on validation and its verdict on test, on
hand-made records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from benchmarks.common import train_config
from benchmarks.quality import plain
from benchmarks.quality import run as driver
from benchmarks.quality.plain import FLIPS, PlainOptions, flip_batch
from benchmarks.quality.record import Record, RunKey, record_path
from benchmarks.quality.report import (
    SELECTION_POLICIES,
    choice_line,
    choose_defaults,
    choose_on_validation,
    confirmation,
    cross_fitted_decisions,
    equal_step_pairs,
    evaluate_all,
    macro_f1,
    pooled_selection,
    print_report,
    score_run,
    selection_f1,
    validation_curves,
    validation_halves,
    verdict,
)
from hpa.core.labels import HPA2018
from hpa.evaluation.thresholds import binarize, decision_thresholds

C = HPA2018.num_classes
DATASET = "toy-n12-s8"


def _symmetries(image: torch.Tensor) -> list[torch.Tensor]:
    """The 8 symmetries of a (C, S, S) image: h^a v^b t^c."""
    found = []
    for h in (False, True):
        for v in (False, True):
            for t in (False, True):
                out = image.flip(2) if h else image
                out = out.flip(1) if v else out
                found.append(out.transpose(1, 2) if t else out)
    return found


def _which_symmetry(image: torch.Tensor, out: torch.Tensor) -> int:
    matches = [k for k, s in enumerate(_symmetries(image)) if torch.equal(s, out)]
    assert len(matches) == 1, matches  # random images: the 8 symmetries are distinct
    return matches[0]


def test_plain_loop_draws_one_of_the_eight_symmetries_per_image():
    images = torch.randint(0, 256, (400, 2, 5, 5), generator=torch.Generator().manual_seed(0))
    out = flip_batch(images, "image", torch.Generator().manual_seed(3))
    drawn = [_which_symmetry(image, flipped) for image, flipped in zip(images, out, strict=True)]
    assert len(set(drawn[:32])) > 1  # one batch of 32: different symmetries across its images
    counts = np.bincount(drawn, minlength=8)
    assert counts.min() > 25 and counts.max() < 75  # all 8, about 50 each (uniform)
    again = flip_batch(images, "image", torch.Generator().manual_seed(3))
    assert torch.equal(again, out)  # seeded: reproducible
    other = flip_batch(images, "image", torch.Generator().manual_seed(4))
    assert not torch.equal(other, out)


@pytest.mark.parametrize("flips, allowed", [("batch", {0, 2, 4, 6}), ("batch_d4", set(range(8)))])
def test_batch_flips_give_every_image_of_a_batch_the_same_symmetry(flips, allowed):
    images = torch.randint(0, 256, (6, 2, 5, 5), generator=torch.Generator().manual_seed(0))
    seen = set()
    for seed in range(40):
        out = flip_batch(images, flips, torch.Generator().manual_seed(seed))
        drawn = {
            _which_symmetry(image, flipped) for image, flipped in zip(images, out, strict=True)
        }
        assert len(drawn) == 1
        seen |= drawn
    assert seen == allowed  # batch: no transpose, the 4 flips of h and v


def test_plain_flips_are_checked(capsys):
    assert PlainOptions().flips == "image" and FLIPS == ("image", "batch", "batch_d4")
    with pytest.raises(ValueError, match="choose one of image, batch, batch_d4"):
        PlainOptions(flips="dihedral")
    with pytest.raises(ValueError, match="choose one of"):
        flip_batch(torch.zeros(2, 1, 3, 3), "per_image", torch.Generator())
    with pytest.raises(SystemExit) as exit_:
        plain.main(["root", "split.csv", "record.npz", "--flips", "dihedral"])
    assert exit_.value.code == 2
    assert "--flips: invalid choice: 'dihedral'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plain.main(["root", "split.csv", "record.npz", "--dihedral"])  # the former flag is gone


def test_plain_variants_name_their_flips():
    assert driver.VARIANTS["plain"] == (driver.PLAIN, ())
    assert driver.VARIANTS["plain_batch_flips"] == (driver.PLAIN, ("--flips", "batch"))
    assert driver.VARIANTS["plain_batch_d4"] == (driver.PLAIN, ("--flips", "batch_d4"))
    assert "plain_d4" not in driver.VARIANTS


def test_hpa_as_plain_has_every_ingredient_of_the_plain_loop():
    cfg = train_config("data=hpa", "data.root=/nowhere", *driver.VARIANTS["hpa_as_plain"][1])
    options = PlainOptions()
    assert cfg.optimizer._target_ == "torch.optim.AdamW"
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (1e-3, 1e-4)
    assert cfg.data.batch_size == options.batch_size == 32
    assert cfg.loss._target_.endswith("BCEWithLogitsLoss") and cfg.loss.pos_weight is None
    assert list(cfg.data.normalize.mean) == [0] * 4 and list(cfg.data.normalize.std) == [1] * 4
    assert cfg.scheduler is None and not options.cosine
    assert cfg.model.channels_last is False and not options.channels_last
    assert cfg.model.drop_rate == options.drop_rate == 0.0
    assert cfg.model.name == "resnet18" and cfg.model.pretrained is False
    assert cfg.data.oversample is False and cfg.data.load_size is None
    assert cfg.callbacks.early_stopping is None and "weight_averaging" not in cfg.callbacks
    augment = OmegaConf.to_container(cfg.augment)
    assert augment == {"dihedral": {"_target_": "hpa.data.transforms.D4", "p": 1.0}}
    assert options.flips == "image"  # the plain loop's D4 per image, as hpa's augment=flips


# hand-made records -------------------------------------------------------------------------


def _labels(rows: int, classes: int) -> np.ndarray:
    """Row i holds class i % classes."""
    targets = np.zeros((rows, C), dtype=np.uint8)
    targets[np.arange(rows), np.arange(rows) % classes] = 1
    return targets


def _perfect(targets: np.ndarray) -> np.ndarray:
    return np.where(targets == 1, 0.9, 0.1)


def _record(val_classes: int, test_classes: int, steps: int | None = None, seed: int = 0):
    """One epoch. Val: 12 rows, classes 0..val_classes-1 (two positives each), positives at
    0.4 and negatives spread below 0.35, a train label rate of 0.5 for those classes: val macro
    F1 is 0 at 0.5, val_classes / 2 / 28 at rate (6 rows predicted a class, 2 of them right) and
    val_classes / 28 at tuned thresholds, cross-fitted or not. Test: 28 rows, test_classes
    classes perfectly separated at 0.9 / 0.1, test macro F1 test_classes / 28 at any policy."""
    val_targets = _labels(12, val_classes)
    noise = np.random.default_rng(seed).uniform(0.05, 0.35, val_targets.shape)
    val = np.where(val_targets == 1, 0.4, noise)
    test_targets = _labels(28, test_classes)
    rate = np.zeros(C)
    rate[:val_classes] = 0.5
    record = Record(val_targets, test_targets, rate)
    if steps is not None:
        record.meta["steps_per_epoch"] = steps
    record.add_epoch(0, 1.0, 0.5, val, _perfect(test_targets))
    return record


def test_hand_made_record_scores_as_designed():
    record = _record(6, 10)
    rows = {(row["rule"], row["policy"]): row["macro_f1"] for row in score_run(KEY, record)}
    for policy in ("0.5", "tuned", "rate", "tuned_0.05"):
        assert rows["val_f1", policy] == pytest.approx(10 / C)
    assert selection_f1(record, 0, "0.5") == 0.0
    assert selection_f1(record, 0, "rate") == pytest.approx(6 * 0.5 / C)
    assert selection_f1(record, 0, "tuned") == pytest.approx(6 / C)


KEY = RunKey(DATASET, 32, "hpa", 0, 12)


def _write(out: Path, variant: str, seed: int, epochs: int, record: Record) -> None:
    record.save(record_path(out, RunKey(DATASET, 32, variant, seed, epochs)))


def test_equal_step_pairs_pair_runs_of_equal_optimizer_steps(tmp_path: Path, capsys):
    # plain and hpa: 10 steps an epoch; the recipe's epochs are 1.5 times longer (15 steps), so
    # at 12 epochs (180 steps) it pairs with plain and hpa at 18 epochs (180), not at 12 (120)
    for seed, (plain_f1, hpa_f1, recipe_f1) in enumerate([(4, 5, 8), (6, 5, 9)]):
        for epochs in (12, 18):
            _write(tmp_path, "plain", seed, epochs, _record(3, plain_f1 + epochs // 18, 10))
            _write(tmp_path, "hpa", seed, epochs, _record(3, hpa_f1 + epochs // 18, 10))
        _write(tmp_path, "hpa_recipe_invfreq_ema", seed, 12, _record(3, recipe_f1, 15))
    _write(tmp_path, "hpa_recipe_invfreq_ema", 2, 12, _record(3, 7, 15))  # no partner: seed 2
    _write(tmp_path, "plain_batch_flips", 0, 12, _record(3, 7))  # an old record: no steps
    scores, _, steps = evaluate_all(tmp_path)
    assert len(steps) == 11 and "plain_batch_flips" not in set(steps.variant)
    assert set(steps.steps[steps.variant == "plain"]) == {120, 180}

    pairs = equal_step_pairs(scores, steps)
    found = {
        (row.variant, row.epochs, row.seed, row.partner, row.partner_epochs): row
        for row in pairs.itertuples()
    }
    recipe = "hpa_recipe_invfreq_ema"
    assert set(found) == {
        *[(recipe, 12, seed, partner, 18) for seed in (0, 1) for partner in ("plain", "hpa")],
        *[("hpa", epochs, seed, "plain", epochs) for seed in (0, 1) for epochs in (12, 18)],
    }
    row = found[recipe, 12, 1, "plain", 18]
    assert (row.steps, row.partner_steps) == (180, 180)
    assert (row.policy, row.partner_policy) == ("rate", "tuned")
    assert row.macro_f1 == pytest.approx(9 / C) and row.partner_macro_f1 == pytest.approx(7 / C)
    assert found[recipe, 12, 0, "hpa", 18].partner_macro_f1 == pytest.approx(6 / C)
    assert found[recipe, 12, 0, "hpa", 18].partner_policy == "rate"

    print_report(tmp_path)
    printed = capsys.readouterr().out
    assert f"## {DATASET}, 32 px: equal optimizer steps (test images)" in printed
    # recipe: 8/28, 9/28; plain at 18 epochs: 5/28, 7/28; the differences 3/28, 2/28
    line = next(line for line in printed.splitlines() if line.startswith(f"| {recipe} (12) |"))
    assert line == (
        f"| {recipe} (12) | plain (18) | 2 | 180 | 180 | 0.304 ± 0.025 (rate) "
        "| 0.214 ± 0.051 (tuned) | 0.089 ± 0.025 |"
    )
    assert "are not in this table: 1 here." in printed


def test_cross_fitting_never_uses_an_image_label_for_its_own_threshold():
    # every class: one positive in each half, at 0.9 in the first and 0.2 in the second (where
    # rows hold two classes); negatives at most 0.15: one threshold (0.15-0.19) separates all of
    # val, so tuning on val itself scores 1.0, but a threshold tuned on the first half (0.5)
    # misses the second half's positives, and only one label a row is given back
    first, second = validation_halves(2 * C)
    assert len(first) == len(second) == C and not set(first) & set(second)
    targets = np.zeros((2 * C, C), dtype=np.uint8)
    targets[first, np.arange(C)] = 1
    targets[second, np.arange(C)] = 1
    targets[second, (np.arange(C) + 1) % C] = 1
    rng = np.random.default_rng(0)
    probabilities = rng.uniform(0.10, 0.15, targets.shape)
    probabilities[second] = rng.uniform(0.05, 0.10, (C, C))
    probabilities[first] = np.where(targets[first] == 1, 0.9, probabilities[first])
    probabilities[second] = np.where(targets[second] == 1, 0.2, probabilities[second])

    in_sample = binarize(probabilities, decision_thresholds("tuned", probabilities, targets))
    assert macro_f1(targets, in_sample) == 1.0
    crossed = cross_fitted_decisions(probabilities, targets)
    np.testing.assert_array_equal(crossed[first], targets[first])  # tuned on the second: 0.19
    assert crossed[second].sum(axis=1).tolist() == [1] * C  # nothing passes 0.5: one label each
    # a second-half row keeps the lower of its two classes: class 0 gets every positive, class
    # 27 one of three (second[27] goes to class 0), the others two of three (F1 0.8)
    assert macro_f1(targets, crossed) == pytest.approx((1 + 0.5 + 0.8 * (C - 2)) / C)

    record = Record(targets, targets, targets.mean(axis=0))
    record.add_epoch(0, 1.0, 0.5, probabilities, probabilities)
    assert validation_curves(record)["val_f1_tuned"][0] == 1.0  # in-sample, for the epoch rule
    assert selection_f1(record, 0, "tuned") == pytest.approx(macro_f1(targets, crossed))

    # a row's decisions do not move when its own labels (or its half's) change
    random_targets = (rng.uniform(size=targets.shape) < 0.2).astype(np.uint8)
    random_probabilities = rng.uniform(size=targets.shape)
    before = cross_fitted_decisions(random_probabilities, random_targets)
    changed = random_targets.copy()
    changed[first] = 1 - changed[first]
    after = cross_fitted_decisions(random_probabilities, changed)
    np.testing.assert_array_equal(after[first], before[first])
    assert not np.array_equal(after[second], before[second])


def test_verdict_reports_on_test_the_choice_made_on_validation(tmp_path: Path, capsys):
    # val: hpa_x (6 classes) beats hpa (3) and is best at tuned thresholds; test: hpa is better
    # (14 classes), so a choice made on test would differ
    for seed, (x_test, plain_test) in enumerate([(10, 8), (11, 10), (12, 9)]):
        _write(tmp_path, "hpa_x", seed, 12, _record(6, x_test, 10, seed))
        _write(tmp_path, "hpa", seed, 12, _record(3, 14, 10, seed))
        _write(tmp_path, "plain", seed, 12, _record(4, plain_test, 10, seed))
    scores, selection, _ = evaluate_all(tmp_path)
    assert set(selection.policy) == set(SELECTION_POLICIES)
    chosen = choose_on_validation(selection)
    assert chosen["hpa"] == ("hpa_x", "tuned", pytest.approx(6 / C))
    assert chosen["plain"] == ("tuned", pytest.approx(4 / C))
    assert choice_line(chosen) == (
        "chosen on validation: hpa_x at tuned (0.214); the plain loop at tuned (0.143)"
    )
    outcome = verdict(scores, chosen)
    row = outcome.loc["hpa_x"]
    # differences 2, 1, 3 (/28): mean 2/28 = 0.071, sd 1/28 = 0.036
    assert row["test macro F1"] == "0.393 ± 0.036" and row["plain test macro F1"] == "0.321 ± 0.036"
    assert (row["difference"], row["sd of difference"], row["lead > 1 sd"]) == (
        "+0.071",
        "0.036",
        "yes",
    )
    print_report(tmp_path)
    printed = capsys.readouterr().out
    selection_at = printed.index("### Selection (validation images: choose here)")
    report_at = printed.index("### Report (test images: no choice was made here)")
    assert selection_at < printed.index("chosen on validation: hpa_x at tuned") < report_at
    assert "| hpa_x | tuned | 3 | 0.393 ± 0.036 | plain at tuned |" in printed
    assert "| hpa_x | 3 | 0.000 ± 0.000 | 0.107 ± 0.000 | 0.214 ± 0.000 |" in printed

    # one seed of plain only: the lead cannot be judged
    one_seed = scores[(scores.variant != "plain") | (scores.seed == 0)]
    row = verdict(one_seed, chosen).loc["hpa_x"]
    assert (row["seeds"], row["lead > 1 sd"]) == (1, "n/a (one seed)")
    assert verdict(scores[scores.variant != "plain"], chosen) is None
    assert isinstance(outcome, pd.DataFrame)


def test_defaults_are_chosen_on_validation_of_every_dataset_and_confirmed_on_test(
    tmp_path: Path, capsys
):
    # val: hpa_x is best on set a (6 classes) but worst on b (2), hpa 3 on both: pooled over the
    # sets (tuned thresholds) hpa_x 4/28 beats hpa 3/28; hpa_y (12 classes) ran on a only and
    # cannot be a default. Test: hpa_x 10, 11, 12 classes by seed, hpa 9, plain 8
    def write(dataset: str, variant: str, seed: int, record: Record) -> None:
        record.save(record_path(tmp_path, RunKey(dataset, 32, variant, seed, 12)))

    for seed in range(3):
        for dataset, x_val in (("toy-a", 6), ("toy-b", 2)):
            write(dataset, "hpa_x", seed, _record(x_val, 10 + seed, 10, seed))
            write(dataset, "hpa", seed, _record(3, 9, 10, seed))
            write(dataset, "plain", seed, _record(3, 8, 10, seed))
        write("toy-a", "hpa_y", seed, _record(12, 12, 10, seed))
    scores, selection, _ = evaluate_all(tmp_path)
    pooled = pooled_selection(selection)
    assert list(pooled.index) == ["hpa", "hpa_x"] and list(pooled.columns) == [
        "0.5",
        "rate",
        "tuned",
    ]
    assert pooled.loc["hpa_x", "tuned"] == pytest.approx(4 / C)
    assert choose_defaults(selection) == ("hpa_x", "tuned", pytest.approx(4 / C))
    assert choose_defaults(selection[selection.dataset == "toy-a"])[0] == "hpa_y"

    table = confirmation(scores, ("hpa_x", "tuned"), candidates=("hpa", "hpa_x"))
    assert list(table.index) == ["toy-a", "toy-b"]
    row = table.loc["toy-a"]
    # hpa_x 10, 11, 12 (/28): 0.393 +- 0.036; leads 1, 2, 3 over hpa and 2, 3, 4 over plain
    assert (row["chosen"], row["hpa at rate"]) == ("0.393 ± 0.036", "0.321 ± 0.000")
    assert row["lead over hpa at rate"] == "0.071 ± 0.036"
    assert row["lead over plain tuned"] == "0.107 ± 0.036"
    assert confirmation(scores, ("hpa_z", "tuned")) is None

    print_report(tmp_path)
    printed = capsys.readouterr().out
    assert "## Every dataset, 32 px, 12 epochs" in printed
    assert "chosen for the defaults: hpa_x at tuned (0.143)" in printed


def test_every_variant_but_hpa_names_the_settings_whose_defaults_changed():
    # the defaults of 2026-12-07 changed the loss, oversampling and the read size: a variant
    # that left them to the defaults would change its meaning (and orphan its records) with them
    changed = {"loss", "data.oversample", "data.load_size"}
    for name, (program, arguments) in driver.VARIANTS.items():
        if program != driver.HPA or name == "hpa":
            continue
        named = {argument.split("=", 1)[0] for argument in arguments}
        assert changed <= named, name
    dec07 = OmegaConf.to_container(train_config(*driver.VARIANTS["hpa_dec07"][1]), resolve=True)
    assert dec07["data"]["oversample"] is False and dec07["data"]["load_size"] is None
    assert dec07["loss"]["pos_weight"] == "balanced"
