"""Tables of the quality benchmark, from its records (no retraining).

For each run, the epoch kept is chosen post hoc by each checkpoint-selection rule (``RULES``)
from the validation curves, the thresholds by each threshold policy (``POLICIES``) on that
epoch's validation probabilities, and the test set is scored. Markdown tables, one set per
dataset and epoch budget, give the mean +- standard deviation over seeds; ``--csv`` writes every
(run, rule, policy) score.

    python -m benchmarks.quality.report OUT [--rule val_f1] [--csv OUT/scores.csv]

Policy ``0.5`` is a 0.5 threshold as it is (hpa's ``test/f1_macro@0.5``); the other policies
give every image its most probable class when none passes its threshold, as hpa does
(``model.ensure_one_label``), so ``tuned`` is hpa's ``test/f1_macro``.

Choices are made on one set and reported on another. Each dataset and budget first shows the
selection (validation images): each variant's val macro F1 at the epoch kept by the rule, at
thresholds chosen without the images they score (``0.5``; ``rate``, from the train label rates;
``tuned``, cross-fitted on two halves of val, ``cross_fitted_decisions``), and the hpa variant
and policy, and the plain loop's policy, that it chooses. Then the report (test images, no
choice made on them): the verdict on that choice (``verdict``) and the tables. Then, per image
size and budget, the defaults: the hpa variant and policy with the best val macro F1 averaged
over the datasets (``choose_defaults``; one default serves every set), and that choice on each
dataset's test images against the other candidates and the plain loop (``confirmation``). Last, per
dataset, runs compared at equal optimizer steps rather than equal epochs (``equal_step_pairs``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from benchmarks.quality.record import Record, RunKey, find_records, load_record
from hpa.core.io import write_csv
from hpa.evaluation.thresholds import (
    binarize,
    decision_thresholds,
    rate_matched_thresholds,
    search_thresholds,
)

PLAIN_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # the plain loop's 0.05 grid


def macro_f1(targets: np.ndarray, decisions: np.ndarray) -> float:
    return float(f1_score(targets, decisions, average="macro", zero_division=0))


def samples_f1(targets: np.ndarray, decisions: np.ndarray) -> float:
    return float(f1_score(targets, decisions, average="samples", zero_division=0))


def validation_curves(record: Record) -> dict[str, np.ndarray]:
    """Per epoch: val macro F1 at 0.5, at thresholds tuned on val itself, at rate-matched ones
    (which use the train label rate, not val's labels), and the val loss."""
    targets = record.val_targets
    at_half = [macro_f1(targets, p > 0.5) for p in record.val_probabilities]
    tuned = [
        macro_f1(targets, binarize(p, search_thresholds(p, targets), ensure_one_label=False))
        for p in record.val_probabilities
    ]
    rate = [
        macro_f1(targets, binarize(p, rate_matched_thresholds(p, record.train_label_rate), False))
        for p in record.val_probabilities
    ]
    return {
        "val_f1": np.array(at_half),
        "val_f1_tuned": np.array(tuned),
        "val_f1_rate": np.array(rate),
        "val_loss": np.array(record.val_loss),
    }


def _centred_mean(values: np.ndarray) -> np.ndarray:
    """The mean of each epoch and its neighbours (two at the ends)."""
    padded = np.concatenate([[np.nan], values, [np.nan]])
    return np.nanmean(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)


RULES = {  # name -> index of the epoch kept (first on ties, as ModelCheckpoint)
    "val_f1": lambda curves: int(np.argmax(curves["val_f1"])),  # hpa and the plain loop now
    "val_loss": lambda curves: int(np.argmin(curves["val_loss"])),
    "val_f1_tuned": lambda curves: int(np.argmax(curves["val_f1_tuned"])),
    "val_f1_rate": lambda curves: int(np.argmax(curves["val_f1_rate"])),
    "val_f1_mean3": lambda curves: int(np.argmax(_centred_mean(curves["val_f1"]))),
    "last": lambda curves: len(curves["val_f1"]) - 1,
}


POLICIES = {  # name -> thresholds from (val probabilities, val targets, train label rate)
    "0.5": lambda p, y, rate: np.full(y.shape[1], 0.5),
    "tuned": lambda p, y, rate: decision_thresholds("tuned", p, y),
    "tuned_0.05": lambda p, y, rate: decision_thresholds("tuned", p, y, candidates=PLAIN_GRID),
    "rate": lambda p, y, rate: decision_thresholds("rate", p, y, rate),
    "shrunk10": lambda p, y, rate: decision_thresholds("shrunk", p, y, half_weight_positives=10),
    "min_pos5": lambda p, y, rate: decision_thresholds("min_positives", p, y, min_positives=5),
    "tuned_folds5": lambda p, y, rate: decision_thresholds("folds", p, y, folds=5),
}


def score_run(key: RunKey, record: Record, curves: dict | None = None) -> list[dict]:
    """One row per (rule, policy): the epoch kept and the test macro and sample F1 (``curves``:
    the record's ``validation_curves``, computed when not given)."""
    curves = validation_curves(record) if curves is None else curves
    by_epoch: dict[int, dict[str, tuple[float, float]]] = {}
    rows = []
    for rule, choose in RULES.items():
        index = choose(curves)
        if index not in by_epoch:
            val_p, test_p = record.val_probabilities[index], record.test_probabilities[index]
            by_epoch[index] = {}
            for policy, thresholds_of in POLICIES.items():
                thresholds = thresholds_of(val_p, record.val_targets, record.train_label_rate)
                decisions = binarize(test_p, thresholds, ensure_one_label=policy != "0.5")
                by_epoch[index][policy] = (
                    macro_f1(record.test_targets, decisions),
                    samples_f1(record.test_targets, decisions),
                )
        for policy, (macro, samples) in by_epoch[index].items():
            rows.append(
                {
                    **vars(key),
                    "recorded": len(record.epochs),
                    "rule": rule,
                    "epoch": record.epochs[index] + 1,
                    "policy": policy,
                    "macro_f1": macro,
                    "samples_f1": samples,
                }
            )
    return rows


def score_all(out: Path) -> pd.DataFrame:
    rows = [row for key, path in find_records(out) for row in score_run(key, load_record(path))]
    return pd.DataFrame(rows)


def _variant_order(name: str) -> tuple:
    return (not name.startswith("plain"), name not in ("plain", "hpa"), name)


def _mean_sd(values: pd.Series) -> str:
    if len(values) < 2:
        return f"{values.mean():.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def markdown(frame: pd.DataFrame, first: str = "variant") -> str:
    header = [first, *map(str, frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join([str(name), *map(str, row)]) + " |" for name, row in frame.iterrows()
    ]
    return "\n".join(lines)


def _pivot(scores: pd.DataFrame, column: str, metric: str) -> pd.DataFrame:
    """Variants x rules or policies (in their order), mean +- sd over seeds."""
    table = scores.pivot_table(index="variant", columns=column, values=metric, aggfunc=_mean_sd)
    order = [name for name in (RULES if column == "rule" else POLICIES) if name in table.columns]
    return table.reindex(index=sorted(table.index, key=_variant_order), columns=order)


def tables(scores: pd.DataFrame, rule: str = "val_f1") -> str:
    """Markdown tables of one dataset and budget: the headline, rules, policies."""
    kept = scores[scores["rule"] == rule]
    headline = pd.DataFrame(
        {
            "seeds": kept[kept.policy == "0.5"].groupby("variant").seed.nunique(),
            "epochs run": kept[kept.policy == "0.5"].groupby("variant").recorded.mean().round(1),
            "epoch kept": kept[kept.policy == "0.5"].groupby("variant").epoch.mean().round(1),
        }
    )
    for policy in ("0.5", "tuned", "rate"):
        for metric in ("macro_f1", "samples_f1"):
            headline[f"{metric} {policy}"] = _pivot(kept[kept.policy == policy], "rule", metric)[
                rule
            ]
    headline = headline.reindex(sorted(headline.index, key=_variant_order))
    sections = [
        (f"test F1, epoch kept by {rule}", headline),
        (
            "test macro F1 at 0.5, by checkpoint rule",
            _pivot(scores[scores.policy == "0.5"], "rule", "macro_f1"),
        ),
        (
            "test macro F1 at tuned thresholds, by checkpoint rule",
            _pivot(scores[scores.policy == "tuned"], "rule", "macro_f1"),
        ),
        (
            "test macro F1 at rate-matched thresholds, by checkpoint rule",
            _pivot(scores[scores.policy == "rate"], "rule", "macro_f1"),
        ),
        (
            f"test macro F1 by threshold policy (epoch by {rule})",
            _pivot(kept, "policy", "macro_f1"),
        ),
        (
            f"test sample F1 by threshold policy (epoch by {rule})",
            _pivot(kept, "policy", "samples_f1"),
        ),
    ]
    return "\n\n".join(f"{title}\n\n{markdown(table)}" for title, table in sections)


SELECTION_POLICIES = ("0.5", "rate", "tuned")  # the policies chosen between on validation
CROSS_FIT_SEED = 0  # the split of the validation rows into two halves
PARTNERS = ("plain", "hpa")  # the runs every other run is compared with at equal steps
STEP_TOLERANCE = 0.1  # equal steps: total optimizer steps within 10% of the run's
_STEP_COLUMNS = ["dataset", "image_size", "variant", "seed", "epochs", "steps_per_epoch", "steps"]


def is_plain(variant: str) -> bool:
    """A run of the plain loop (``plain``, ``plain_*``) rather than of hpa."""
    return variant.startswith("plain")


def default_policy(variant: str) -> str:
    """The threshold policy a variant is compared at: ``tuned`` for the plain loop (its own
    thresholds, tuned on val), ``rate`` for hpa (hpa's default, ``model.thresholds``)."""
    return "tuned" if is_plain(variant) else "rate"


def validation_halves(num_rows: int, seed: int = CROSS_FIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sorted row sets covering ``range(num_rows)``, drawn with ``seed``."""
    order = np.random.default_rng(seed).permutation(num_rows)
    return np.sort(order[: num_rows // 2]), np.sort(order[num_rows // 2 :])


def cross_fitted_decisions(
    probabilities: np.ndarray,
    targets: np.ndarray,
    policy: str = "tuned",
    seed: int = CROSS_FIT_SEED,
) -> np.ndarray:
    """(N, classes) decisions on validation rows, each half's at thresholds chosen by ``policy``
    (``decision_thresholds``) on the other half: no row's label chooses its own threshold. An
    image with nothing above threshold gets its most probable class, as the test policies do."""
    decisions = np.zeros(np.shape(probabilities), dtype=np.uint8)
    first, second = validation_halves(len(targets), seed)
    for tune, scored in ((first, second), (second, first)):
        thresholds = decision_thresholds(policy, probabilities[tune], targets[tune])
        decisions[scored] = binarize(probabilities[scored], thresholds, ensure_one_label=True)
    return decisions


def selection_f1(record: Record, index: int, policy: str) -> float:
    """Val macro F1 of recorded epoch ``index`` at thresholds chosen without the labels of the
    images scored: ``0.5``; ``rate`` (the train label rates, no val labels); ``tuned``
    (``cross_fitted_decisions``)."""
    probabilities, targets = record.val_probabilities[index], record.val_targets
    if policy == "0.5":
        decisions = binarize(probabilities, 0.5, ensure_one_label=False)
    elif policy == "rate":
        thresholds = rate_matched_thresholds(probabilities, record.train_label_rate)
        decisions = binarize(probabilities, thresholds, ensure_one_label=True)
    elif policy == "tuned":
        decisions = cross_fitted_decisions(probabilities, targets, "tuned")
    else:
        raise ValueError(f"selection policy {policy!r}: one of {', '.join(SELECTION_POLICIES)}")
    return macro_f1(targets, decisions)


def score_selection(
    key: RunKey, record: Record, rule: str = "val_f1", curves: dict | None = None
) -> list[dict]:
    """One row per selection policy: the val macro F1 of the epoch kept by ``rule``."""
    curves = validation_curves(record) if curves is None else curves
    index = RULES[rule](curves)
    return [
        {
            **vars(key),
            "rule": rule,
            "epoch": record.epochs[index] + 1,
            "policy": policy,
            "val_macro_f1": selection_f1(record, index, policy),
        }
        for policy in SELECTION_POLICIES
    ]


def run_steps(key: RunKey, record: Record) -> dict | None:
    """The run's optimizer steps: per epoch (the record's meta) and in all (its budget, the
    planned length, times that); None for a record without ``steps_per_epoch``."""
    per_epoch = record.meta.get("steps_per_epoch")
    if per_epoch is None:
        return None
    return {**vars(key), "steps_per_epoch": int(per_epoch), "steps": key.epochs * int(per_epoch)}


def evaluate_all(out: Path, rule: str = "val_f1") -> tuple[pd.DataFrame, ...]:
    """(scores as ``score_all``, selection rows of ``score_selection``, ``run_steps`` rows), from
    one read of every record under ``out``."""
    scores, selection, steps = [], [], []
    for key, path in find_records(out):
        record = load_record(path)
        curves = validation_curves(record)
        scores += score_run(key, record, curves)
        selection += score_selection(key, record, rule, curves)
        steps += [row for row in [run_steps(key, record)] if row is not None]
    return pd.DataFrame(scores), pd.DataFrame(selection), pd.DataFrame(steps, columns=_STEP_COLUMNS)


def selection_table(selection: pd.DataFrame) -> pd.DataFrame:
    """Variants x selection policies: val macro F1, mean +- sd over seeds."""
    table = selection.pivot_table(
        index="variant", columns="policy", values="val_macro_f1", aggfunc=_mean_sd
    )
    table = table.reindex(columns=[p for p in SELECTION_POLICIES if p in table.columns])
    table.insert(0, "seeds", selection.groupby("variant").seed.nunique())
    return table.reindex(sorted(table.index, key=_variant_order))


def choose_on_validation(selection: pd.DataFrame) -> dict[str, tuple | None]:
    """``{"hpa": (variant, policy, mean val macro F1), "plain": (policy, mean)}``: the best
    mean over seeds among the hpa variants and policies, and the plain loop's (``plain``) best
    policy; None where there is no such run (first on ties, in name order)."""
    means = selection.groupby(["variant", "policy"]).val_macro_f1.mean()
    hpa = means[[not is_plain(variant) for variant, _ in means.index]]
    plain = means[[variant == "plain" for variant, _ in means.index]]
    chosen = {"hpa": None, "plain": None}
    if len(hpa):
        variant, policy = hpa.idxmax()
        chosen["hpa"] = (variant, policy, float(hpa.max()))
    if len(plain):
        chosen["plain"] = (plain.idxmax()[1], float(plain.max()))
    return chosen


def choice_line(chosen: dict[str, tuple | None]) -> str:
    hpa, plain = chosen["hpa"], chosen["plain"]
    parts = [
        f"{hpa[0]} at {hpa[1]} ({hpa[2]:.3f})" if hpa else "no hpa variant",
        f"the plain loop at {plain[0]} ({plain[1]:.3f})" if plain else "no plain run",
    ]
    return "chosen on validation: " + "; ".join(parts)


def seed_f1(scores: pd.DataFrame, variant: str, policy: str) -> pd.Series:
    """Test macro F1 of ``variant`` at ``policy`` in ``scores`` (one rule, one dataset), by
    seed."""
    rows = scores[(scores.variant == variant) & (scores.policy == policy)]
    return rows.set_index("seed").macro_f1


def verdict(scores: pd.DataFrame, chosen: dict[str, tuple | None], rule: str = "val_f1"):
    """One row, the choice made on validation scored on test: the hpa variant and policy chosen
    and the plain loop at its chosen policy, test macro F1 (epoch kept by ``rule``) over the
    seeds both have, the difference of the means, the sd of the per-seed differences and
    whether the lead exceeds it. None without a choice for both."""
    if chosen["hpa"] is None or chosen["plain"] is None:
        return None
    (variant, policy, _), (plain_policy, _) = chosen["hpa"], chosen["plain"]
    kept = scores[scores.rule == rule]
    ours, plain = seed_f1(kept, variant, policy), seed_f1(kept, "plain", plain_policy)
    seeds = sorted(set(ours.index) & set(plain.index))
    if not seeds:
        return None
    ours, plain = ours[seeds], plain[seeds]
    difference = ours - plain
    sd = float(difference.std(ddof=1)) if len(seeds) > 1 else float("nan")
    lead = float(difference.mean())
    row = {
        "policy": policy,
        "seeds": len(seeds),
        "test macro F1": _mean_sd(ours),
        "plain": f"plain at {plain_policy}",
        "plain test macro F1": _mean_sd(plain),
        "difference": f"{lead:+.3f}",
        "sd of difference": "n/a" if np.isnan(sd) else f"{sd:.3f}",
        "lead > 1 sd": "n/a (one seed)" if np.isnan(sd) else ("yes" if lead > sd else "no"),
    }
    return pd.DataFrame([row], index=pd.Index([variant], name="variant"))


def equal_step_pairs(
    scores: pd.DataFrame,
    steps: pd.DataFrame,
    rule: str = "val_f1",
    tolerance: float = STEP_TOLERANCE,
) -> pd.DataFrame:
    """Every run but ``plain``'s, paired with each ``PARTNERS`` run (another variant) of its
    dataset, image size and seed whose total optimizer steps (``run_steps``) are within
    ``tolerance`` of its own, whatever the two budgets; test macro F1 of both at the epoch kept
    by ``rule``, each at its ``default_policy``. Runs not in ``steps`` are left out."""
    kept = (
        scores[scores.rule == rule]
        .set_index(["dataset", "image_size", "variant", "seed", "epochs", "policy"])
        .macro_f1
    )
    same = ["dataset", "image_size", "seed"]
    rows = []
    for run in steps.itertuples(index=False):
        if run.variant == "plain":
            continue
        for partner in steps.itertuples(index=False):
            if (
                partner.variant not in PARTNERS
                or partner.variant == run.variant
                or any(getattr(partner, name) != getattr(run, name) for name in same)
                or abs(partner.steps - run.steps) > tolerance * run.steps
            ):
                continue
            policies = default_policy(run.variant), default_policy(partner.variant)
            ends = [
                (run.dataset, run.image_size, side.variant, run.seed, side.epochs, policy)
                for side, policy in zip((run, partner), policies, strict=True)
            ]
            if not all(end in kept.index for end in ends):
                continue
            rows.append(
                {
                    **{name: getattr(run, name) for name in same},
                    "variant": run.variant,
                    "epochs": run.epochs,
                    "steps": run.steps,
                    "policy": policies[0],
                    "macro_f1": float(kept[ends[0]]),
                    "partner": partner.variant,
                    "partner_epochs": partner.epochs,
                    "partner_steps": partner.steps,
                    "partner_policy": policies[1],
                    "partner_macro_f1": float(kept[ends[1]]),
                }
            )
    return pd.DataFrame(rows)


def equal_steps_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant and budget, partner and budget) of one dataset and image size: the
    steps of each (mean over seeds), test macro F1 of each and of the difference, mean +- sd
    over the seeds that have a pair."""
    rows, index = [], []
    groups = pairs.groupby(["variant", "epochs", "partner", "partner_epochs"])
    ordered = sorted(
        groups,
        key=lambda item: (_variant_order(item[0][0]), item[0][1], PARTNERS.index(item[0][2])),
    )
    for (variant, epochs, partner, partner_epochs), group in ordered:
        index.append(f"{variant} ({epochs})")
        rows.append(
            {
                "partner (budget)": f"{partner} ({partner_epochs})",
                "seeds": group.seed.nunique(),
                "steps": round(group.steps.mean()),
                "partner steps": round(group.partner_steps.mean()),
                "macro F1": f"{_mean_sd(group.macro_f1)} ({group.policy.iloc[0]})",
                "partner macro F1": (
                    f"{_mean_sd(group.partner_macro_f1)} ({group.partner_policy.iloc[0]})"
                ),
                "difference": _mean_sd(group.macro_f1 - group.partner_macro_f1),
            }
        )
    return pd.DataFrame(rows, index=index)


def selection_section(selection: pd.DataFrame, rule: str = "val_f1") -> tuple[str, dict]:
    """The markdown of one dataset and budget's selection, and its choice."""
    chosen = choose_on_validation(selection)
    text = (
        "### Selection (validation images: choose here)\n\n"
        f"val macro F1, epoch kept by {rule}, at thresholds chosen without the images scored "
        "(0.5; rate: train label rates; tuned: cross-fitted on two halves of val), mean ± sd "
        f"over seeds\n\n{markdown(selection_table(selection))}\n\n{choice_line(chosen)}"
    )
    return text, chosen


def report_section(scores: pd.DataFrame, chosen: dict, rule: str = "val_f1") -> str:
    """The markdown of one dataset and budget's report: the verdict, then ``tables``."""
    outcome = verdict(scores, chosen, rule)
    judged = (
        "no verdict: it needs an hpa variant and the plain loop (plain) on the same seeds"
        if outcome is None
        else markdown(outcome)
    )
    return (
        "### Report (test images: no choice was made here)\n\n"
        f"verdict: the choice made on validation, test macro F1 (epoch kept by {rule})\n\n"
        f"{judged}\n\n{tables(scores, rule)}"
    )


def steps_section(scores: pd.DataFrame, steps: pd.DataFrame, rule: str = "val_f1") -> str:
    """The markdown of one dataset and image size at equal optimizer steps."""
    pairs = equal_step_pairs(scores, steps, rule)
    runs = ["variant", "seed", "epochs"]
    counted = set(steps[runs].itertuples(index=False, name=None))
    missing = len(set(scores[runs].itertuples(index=False, name=None)) - counted)
    text = (
        f"test macro F1 at equal optimizer steps (budget x steps per epoch, within "
        f"{STEP_TOLERANCE:.0%}): each run against the plain and hpa runs of its seed, epoch "
        f"kept by {rule}, thresholds tuned for the plain loop and rate-matched for hpa\n\n"
    )
    text += "no pairs" if pairs.empty else markdown(equal_steps_table(pairs), "variant (budget)")
    return text + (
        f"\n\nRecords without steps_per_epoch in their meta (made before 2026-12-07) are not "
        f"in this table: {missing} here."
    )


def pooled_selection(selection: pd.DataFrame) -> pd.DataFrame:
    """hpa variants x selection policies: val macro F1 averaged over the datasets (each one's
    mean over seeds), for the variants run on every dataset of ``selection``: one default has
    to serve every set, so it is chosen on all of them at once."""
    ours = selection[~selection.variant.map(is_plain)]
    per_dataset = ours.groupby(["variant", "policy", "dataset"]).val_macro_f1.mean()
    pooled = per_dataset.unstack("dataset").dropna().mean(axis=1).unstack("policy")
    pooled = pooled.reindex(columns=[p for p in SELECTION_POLICIES if p in pooled.columns])
    return pooled.reindex(sorted(pooled.index, key=_variant_order))


def choose_defaults(selection: pd.DataFrame) -> tuple[str, str, float] | None:
    """(variant, policy, pooled val macro F1): the best of ``pooled_selection``; None without
    an hpa variant run on every dataset."""
    pooled = pooled_selection(selection).stack()
    if pooled.empty:
        return None
    variant, policy = pooled.idxmax()
    return variant, policy, float(pooled.max())


def confirmation(
    scores: pd.DataFrame,
    chosen: tuple[str, str],
    rule: str = "val_f1",
    candidates: tuple[str, ...] = ("hpa",),
):
    """Per dataset, on test: the chosen variant at its chosen policy and at 0.5, each other
    hpa ``candidates`` at rate (hpa's default policy) and the plain loop at tuned thresholds
    (mean +- sd over seeds), and the chosen variant's per-seed lead over each (mean, sd of the
    differences). None without runs of the chosen variant."""
    kept = scores[scores.rule == rule]
    variant, policy = chosen
    others = [(name, "rate", f"{name} at rate") for name in candidates if name != variant]
    rows, index = [], []
    for dataset in sorted(set(scores.dataset)):
        here = kept[kept.dataset == dataset]
        ours = seed_f1(here, variant, policy)
        if ours.empty:
            continue
        row = {
            "chosen": _mean_sd(ours),
            "chosen at 0.5": _mean_sd(seed_f1(here, variant, "0.5")),
        }
        for name, at, label in (*others, ("plain", "tuned", "plain tuned")):
            other = seed_f1(here, name, at)
            seeds = sorted(set(ours.index) & set(other.index))
            difference = ours[seeds] - other[seeds]
            row[label] = _mean_sd(other[seeds]) if seeds else "n/a"
            row[f"lead over {label}"] = _mean_sd(difference) if seeds else "n/a"
        rows.append(row)
        index.append(dataset)
    if not rows:
        return None
    return pd.DataFrame(rows, index=pd.Index(index, name="dataset"))


def defaults_section(scores: pd.DataFrame, selection: pd.DataFrame, rule: str = "val_f1") -> str:
    """The markdown of one image size and budget: the default chosen on the validation images
    of every dataset, then that choice on each dataset's test images."""
    chosen = choose_defaults(selection)
    text = (
        "### The defaults, chosen on validation over every dataset\n\n"
        "val macro F1 as in each dataset's selection, averaged over the datasets\n\n"
        + markdown(pooled_selection(selection).map(lambda value: f"{value:.3f}"))
    )
    if chosen is None:
        return text + "\n\nno hpa variant was run on every dataset"
    variant, policy, value = chosen
    text += f"\n\nchosen for the defaults: {variant} at {policy} ({value:.3f})\n\n"
    candidates = tuple(pooled_selection(selection).index)
    table = confirmation(scores, (variant, policy), rule, candidates)
    return text + (
        "test macro F1 (epoch kept by "
        f"{rule}) of that choice, mean ± sd over seeds; leads are per-seed differences\n\n"
        + ("no test runs" if table is None else markdown(table, "dataset"))
    )


def print_report(out: Path, rule: str = "val_f1", csv: Path | None = None) -> pd.DataFrame:
    scores, selection, steps = evaluate_all(out, rule)
    if scores.empty:
        print(f"no records under {out}")
        return scores
    if csv is not None:
        write_csv(csv, scores)
    by_budget = ["dataset", "image_size", "epochs"]
    for (dataset, size, budget), group in scores.groupby(by_budget):
        print(f"\n## {dataset}, {size} px, {budget} epochs\n")
        here = (selection.dataset == dataset) & (selection.image_size == size)
        text, chosen = selection_section(selection[here & (selection.epochs == budget)], rule)
        print(text + "\n")
        print(report_section(group, chosen, rule))
    for (size, budget), group in scores.groupby(["image_size", "epochs"]):
        print(f"\n## Every dataset, {size} px, {budget} epochs\n")
        here = (selection.image_size == size) & (selection.epochs == budget)
        print(defaults_section(group, selection[here], rule))
    for (dataset, size), group in scores.groupby(["dataset", "image_size"]):
        print(f"\n## {dataset}, {size} px: equal optimizer steps (test images)\n")
        here = steps[(steps.dataset == dataset) & (steps.image_size == size)]
        print(steps_section(group, here, rule))
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the --out folder of benchmarks.quality.run")
    parser.add_argument("--rule", default="val_f1", choices=list(RULES))
    parser.add_argument("--csv", type=Path, default=None, help="write every score here")
    args = parser.parse_args(argv)
    print_report(args.out, args.rule, args.csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
