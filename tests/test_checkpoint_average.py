"""`hpa.average`: the last K epoch checkpoints of a run averaged, their batch-norm statistics
recomputed on the train split, then finished like a run."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pandas as pd
import pytest
import torch
from cli import run_module
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from test_averaging import assert_states_close, float_entries
from test_configs import CONF_DIR
from test_losses import cpu_trainer, tiny_loader
from test_train import run_train
from torch.optim.swa_utils import update_bn

from hpa.average import hydra_arguments
from hpa.core.errors import HPAInputError
from hpa.core.metric_names import TEST_F1_MACRO, TEST_LOSS, VAL_F1_MACRO
from hpa.core.run_dir import RunDir, epoch_checkpoints_callback
from hpa.evaluation.comparison import compare_runs
from hpa.models.averaging import average_state_dicts, recompute_batch_norm
from hpa.models.checkpoints import load_module
from hpa.models.module import HPAModule
from hpa.run import builders
from hpa.run.checkpoint_averaging import average_run, last_epoch_checkpoints


def test_the_shorthands_become_hydra_overrides():
    assert hydra_arguments(["logs/run", "--last", "5", "trainer=gpu"]) == [
        "run_dir=logs/run",
        "last=5",
        "trainer=gpu",
    ]
    assert hydra_arguments(["--last=3", "run_dir=a"]) == ["last=3", "run_dir=a"]
    assert hydra_arguments(["run", "--cfg", "job", "-m"]) == ["run_dir=run", "--cfg", "job", "-m"]
    assert hydra_arguments(["--help"]) == ["--help"]


def test_the_average_of_states_is_their_mean_entry_by_entry():
    states = [
        {"w": torch.tensor([1.0, 2.0]), "steps": torch.tensor(3)},
        {"w": torch.tensor([3.0, 6.0]), "steps": torch.tensor(5)},
        {"w": torch.tensor([5.0, 1.0]), "steps": torch.tensor(7)},
    ]
    averaged = average_state_dicts(states)
    torch.testing.assert_close(averaged["w"], torch.tensor([3.0, 3.0]))
    assert averaged["steps"] == 7  # counters are the last state's
    with pytest.raises(HPAInputError, match="other entries"):
        average_state_dicts([states[0], {"w": torch.zeros(2)}])
    with pytest.raises(HPAInputError, match=r"w is \(3,\)"):
        average_state_dicts([{"w": torch.zeros(3)}, {"w": torch.zeros(2)}])


def fit_keeping_epochs(tmp_path: Path, max_epochs: int, keep_last: int) -> list[dict]:
    """Fit a seed CNN with the epoch checkpoints callback; the raw state after each epoch."""
    states: list[dict] = []

    class EndOfEpoch(ModelCheckpoint):  # a callback that sees every epoch end
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            states.append({k: v.clone() for k, v in pl_module.state_dict().items()})

    trainer = cpu_trainer(
        tmp_path,
        max_epochs=max_epochs,
        callbacks=[epoch_checkpoints_callback(tmp_path, keep_last), EndOfEpoch(save_top_k=0)],
    )
    trainer.fit(HPAModule(name="seed_cnn"), tiny_loader(2), tiny_loader(1, seed=1))
    return states


def test_epoch_checkpoints_keep_the_last_epochs_and_average_with_batch_norm_recomputed(
    tmp_path: Path,
):
    states = fit_keeping_epochs(tmp_path, max_epochs=4, keep_last=3)
    run_dir = RunDir(tmp_path)
    kept = run_dir.epoch_checkpoints()
    assert [path.name for path in kept] == ["epoch=01.ckpt", "epoch=02.ckpt", "epoch=03.ckpt"]
    for path, state in zip(kept, states[1:], strict=True):
        saved = torch.load(path, map_location="cpu", weights_only=True)
        assert_states_close(saved["state_dict"], state)

    chosen = last_epoch_checkpoints(run_dir, 2)
    assert chosen == kept[1:]
    with pytest.raises(HPAInputError, match="keep_last=5"):
        last_epoch_checkpoints(run_dir, 5)

    # averaging: the mean of the checkpoints' weights...
    module = load_module(chosen[-1])
    saved_states = [torch.load(p, weights_only=True)["state_dict"] for p in chosen]
    module.load_state_dict(average_state_dicts(saved_states))
    for name, parameter in module.named_parameters():
        torch.testing.assert_close(parameter, (states[2][name] + states[3][name]) / 2)
    # ...with batch-norm statistics recomputed over the train batches for those weights
    recompute_batch_norm(module, tiny_loader(2), None, torch.device("cpu"))
    expected = load_module(chosen[-1])
    expected.load_state_dict(average_state_dicts(saved_states))
    update_bn((batch["image"] for batch in tiny_loader(2)), expected)
    assert_states_close(module.state_dict(), expected.state_dict())
    running_var = "backbone.features.0.1.running_var"
    assert not torch.allclose(
        module.state_dict()[running_var], float_entries(states[3])[running_var]
    )
    # at most num_batches of them
    one_batch = load_module(chosen[-1])
    recompute_batch_norm(one_batch, tiny_loader(2), 1, torch.device("cpu"))
    reference = load_module(chosen[-1])
    update_bn((batch["image"] for batch in islice(tiny_loader(2), 1)), reference)
    assert_states_close(one_batch.state_dict(), reference.state_dict())


def test_no_epoch_checkpoints_by_default(tmp_path: Path):
    fit_keeping_epochs(tmp_path, max_epochs=1, keep_last=0)
    assert RunDir(tmp_path).epoch_checkpoints() == []
    with pytest.raises(ValueError, match="keep_last"):
        epoch_checkpoints_callback(tmp_path, -1)


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("average", overrides=[f"run_dir={tmp_path}", "last=2"])
    with pytest.raises(HPAInputError, match="is not a run directory"):
        average_run(cfg)


@pytest.mark.slow
def test_average_cli_writes_a_sub_run_that_eval_and_compare_accept(tmp_path: Path):
    run = tmp_path / "run"
    run_train(
        tmp_path,
        "debug=fast",
        "model=cnn",
        "model.drop_rate=0",  # the batch-norm pass runs in train mode: no dropout to draw
        "trainer.max_epochs=2",
        "callbacks.epoch_checkpoints.keep_last=2",
    )
    averaged = run_module(
        "hpa.average", str(run), "--last", "2", f"hydra.run.dir={tmp_path / 'job'}"
    )
    assert averaged.returncode == 0, averaged.stdout[-2000:] + averaged.stderr[-3000:]

    sub_run = RunDir(run).average_subrun(2)
    assert sub_run.path == run / "average-last2"
    for name in (RunDir.METRICS, RunDir.THRESHOLDS, RunDir.TEST_PREDICTIONS, RunDir.SPLIT):
        assert sub_run.has(name), name
    assert sub_run.split_file.read_text() == (run / "split.csv").read_text()
    final = sub_run.metrics()
    assert 0.0 <= final[VAL_F1_MACRO] <= 1.0 and 0.0 <= final[TEST_F1_MACRO] <= 1.0

    # the checkpoint: the mean of the two epochs' weights, batch norm re-estimated on the train
    # split, the tuned thresholds stored
    checkpoint = torch.load(sub_run.averaged_checkpoint, weights_only=True)
    epochs = [torch.load(p, weights_only=True) for p in RunDir(run).epoch_checkpoints()]
    module = load_module(sub_run.averaged_checkpoint)
    for name, parameter in module.named_parameters():
        mean = (epochs[0]["state_dict"][name] + epochs[1]["state_dict"][name]) / 2
        torch.testing.assert_close(parameter, mean)
    expected = load_module(sub_run.averaged_checkpoint)
    datamodule = builders.build_evaluation_datamodule(
        RunDir(run).data_config(), expected, RunDir(run).split_file
    )
    datamodule.setup("fit")
    update_bn((batch["image"] for batch in datamodule.train_pass_dataloader()), expected)
    assert_states_close(
        {k: v for k, v in module.state_dict().items() if "running" in k},
        {k: v for k, v in expected.state_dict().items() if "running" in k},
    )
    torch.testing.assert_close(
        checkpoint["state_dict"]["class_thresholds"].numpy(),
        sub_run.thresholds(),
        atol=1e-6,
        rtol=0,
        check_dtype=False,
    )

    # the sub-run reads as a run: its config is the run's, plus the average
    config = sub_run.config()
    assert config.average.last == 2 and config.model.name == "seed_cnn"
    assert sub_run.overrides()[-1] == "average.last=2"

    # hpa.eval accepts the averaged checkpoint and reproduces the sub-run's test metrics
    evaluated = run_module(
        "hpa.eval", f"ckpt_path={sub_run.averaged_checkpoint}", f"hydra.run.dir={tmp_path / 'e'}"
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    for name in (TEST_F1_MACRO, TEST_LOSS):
        assert metrics[name] == pytest.approx(final[name], abs=1e-6)

    # hpa.compare lists the run and its average, labelled apart
    table = compare_runs([run])
    assert len(table) == 2 and table["run"].str.endswith("average.last=2").sum() == 1
    predictions = pd.read_csv(sub_run.path / RunDir.TEST_PREDICTIONS)
    assert len(predictions) > 0
    assert OmegaConf.load(tmp_path / "job" / ".hydra" / "config.yaml").last == 2
