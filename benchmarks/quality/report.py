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


def score_run(key: RunKey, record: Record) -> list[dict]:
    """One row per (rule, policy): the epoch kept and the test macro and sample F1."""
    curves = validation_curves(record)
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


def markdown(frame: pd.DataFrame) -> str:
    header = ["variant", *map(str, frame.columns)]
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


def print_report(out: Path, rule: str = "val_f1", csv: Path | None = None) -> pd.DataFrame:
    scores = score_all(out)
    if scores.empty:
        print(f"no records under {out}")
        return scores
    if csv is not None:
        write_csv(csv, scores)
    for (dataset, size, budget), group in scores.groupby(["dataset", "image_size", "epochs"]):
        print(f"\n## {dataset}, {size} px, {budget} epochs\n")
        print(tables(group, rule))
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
