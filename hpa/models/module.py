"""The LightningModule: a 4-channel backbone, its loss, F1 metrics, optimizer and scheduler."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.callbacks import BaseFinetuning

from hpa.core import metric_names
from hpa.core.distributed import all_gather_rows
from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018, LabelSet
from hpa.evaluation import metrics
from hpa.evaluation.thresholds import binarize, check_policy
from hpa.evaluation.tta import center_crop, check_tta_options, predict_with_tta
from hpa.models.backbones import create_backbone

log = logging.getLogger(__name__)

DEFAULT_LOSS = {"_target_": "hpa.models.losses.BCEWithLogitsLoss"}
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}


class HPAModule(pl.LightningModule):
    """Multilabel classifier of RGBY images.

    Input: uint8 images (B, 4, H, W) in RGBY order, as the datasets give them; the module scales
    them to 0..1 and normalises each channel with ``channel_mean``/``channel_std`` (saved in the
    checkpoint, so a checkpoint predicts on raw images by itself). Output: (B, classes) logits,
    one per class of ``labels``.

    ``labels`` is the run's label set (``hpa.core.labels.LabelSet.to_dict``), stored with the
    hyper-parameters so that a checkpoint knows its classes; ``label_set`` gives it back. A
    checkpoint saved before label sets (``num_classes`` only) has the 2018 classes.

    ``loss``, ``optimizer`` and ``scheduler`` are plain Hydra config mappings (``_target_`` ...),
    kept as hyper-parameters so that ``load_from_checkpoint`` rebuilds the module unaided.
    ``monitor`` is the metric a ReduceLROnPlateau scheduler watches (the run's
    ``optimized_metric``). ``tta``/``tta_reduce`` choose the test-time augmentation of the test and
    predict steps (``hpa.evaluation.tta``; evaluation and prediction pass them when they load a
    checkpoint, training validates and tunes thresholds without); ``tta_crop_size`` is the crop
    size of ``tta=dihedral_crops``, whose test images come whole, at the run's load size.

    ``init_from`` records the checkpoint whose weights started the run (``model.init_from``, a
    second stage at a higher resolution); ``hpa.run.builders.build_module`` copies them in, the
    module itself only keeps the name.

    ``classifier()`` is the network's last layer(s) and ``feature_modules()`` everything before
    it, what ``hpa.models.finetuning.BackboneFinetuning`` freezes for the first epochs. The
    optimizer gets the parameters that require gradients when it is built.
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        pretrained_path: str | None = None,
        allow_partial_pretrained: bool = False,
        drop_rate: float = 0.0,
        channels_last: bool = False,
        threshold: float = 0.5,
        thresholds: str = "fixed",
        threshold_params: Mapping | None = None,
        ensure_one_label: bool = True,
        loss: Mapping | None = None,
        optimizer: Mapping | None = None,
        scheduler: Mapping | None = None,
        channel_mean: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        channel_std: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        labels: Mapping | None = None,
        num_classes: int | None = None,
        monitor: str = metric_names.VAL_F1_MACRO,
        tta: str = "none",
        tta_reduce: str = "mean",
        tta_crop_size: int | None = None,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        check_tta_options(tta, tta_reduce, tta_crop_size)
        check_policy(thresholds, threshold_params)
        self.save_hyperparameters()
        self.label_set = _label_set(labels, num_classes)
        num_classes = self.label_set.num_classes
        self.backbone = create_backbone(
            name,
            num_classes=num_classes,
            in_chans=4,
            pretrained=pretrained,
            pretrained_path=pretrained_path,
            drop_rate=drop_rate,
            allow_partial_pretrained=allow_partial_pretrained,
        )
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        self.criterion = instantiate(dict(loss or DEFAULT_LOSS))
        _check_pos_weight(self.criterion, self.label_set)
        self.register_buffer("channel_mean", _channel_tensor(channel_mean), persistent=True)
        self.register_buffer("channel_std", _channel_tensor(channel_std), persistent=True)
        # Per-class decision thresholds used at test time; `threshold` for every class until
        # tuned on the validation split (thresholds="tuned"), then saved in the checkpoint.
        self.register_buffer("class_thresholds", torch.full((num_classes,), float(threshold)))

        self.val_metrics = metrics.build_f1_metrics(num_classes, threshold).clone(
            prefix=f"{metric_names.VAL}/"
        )
        self.test_scores = metrics.StageScores(self.label_set, fixed_threshold=threshold)
        # test outputs gathered for test_predictions.csv: dataset row -> probabilities
        self.test_indices: list[torch.Tensor] = []
        self.test_probabilities: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        images = (images - self.channel_mean) / self.channel_std
        # loader batches come in channels-last memory (hpa.data.dataset.collate_samples)
        memory_format = (
            torch.channels_last if self.hparams.channels_last else torch.contiguous_format
        )
        return self.backbone(images.contiguous(memory_format=memory_format))

    def probabilities(
        self, images: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Class probabilities of a batch, reduced over the ``tta`` transforms of the images.
        ``logits`` of the untransformed batch, when already computed, are reused."""
        if self.hparams.tta == "none":
            return torch.sigmoid(self(images) if logits is None else logits)
        return predict_with_tta(
            lambda batch: torch.sigmoid(self(batch)),
            images,
            self.hparams.tta,
            self.hparams.tta_reduce,
            crop_size=self.hparams.tta_crop_size,
        )

    def classifier(self) -> torch.nn.Module:
        """The network's classifier: timm's ``get_classifier()`` (the seed CNN has one too)."""
        return self.backbone.get_classifier()

    def feature_modules(self) -> list[torch.nn.Module]:
        """The network's modules outside its classifier that hold parameters (leaf modules and
        modules with parameters of their own, as Lightning's finetuning callbacks list them)."""
        in_classifier = {id(module) for module in self.classifier().modules()}
        return [
            module
            for module in BaseFinetuning.flatten_modules(self.backbone)
            if id(module) not in in_classifier
        ]

    def decide(self, probabilities: torch.Tensor) -> torch.Tensor:
        """0/1 predictions at the per-class thresholds (``hpa.evaluation.thresholds.binarize``)."""
        decisions = binarize(
            probabilities.detach().float().cpu().numpy(),
            self.class_thresholds.cpu().numpy(),
            self.hparams.ensure_one_label,
        )
        return torch.from_numpy(decisions).to(probabilities.device, torch.float32)

    def set_class_thresholds(self, thresholds) -> None:
        self.class_thresholds.copy_(torch.as_tensor(thresholds, dtype=torch.float32))

    def _shared_step(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["image"])
        loss = self.criterion(logits, batch["target"])
        return loss, logits

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._shared_step(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {self.global_step}")
        self.log(metric_names.TRAIN_LOSS, loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits = self._shared_step(batch)
        self.val_metrics.update(torch.sigmoid(logits), batch["target"].int())
        # sync_dist: under DDP the mean over all ranks' samples (F1 metrics sync themselves)
        self.log(metric_names.VAL_LOSS, loss, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_dict(self.val_metrics, on_epoch=True, prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self.test_indices.clear()
        self.test_probabilities.clear()

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        # the loss is that of the untransformed images (a crop mode's: of their centre crop, as
        # the other modes are given them)
        plain = batch
        if self.hparams.tta_crop_size is not None:
            plain = {**batch, "image": center_crop(batch["image"], self.hparams.tta_crop_size)}
        loss, logits = self._shared_step(plain)
        probabilities = self.probabilities(batch["image"], logits)
        self.test_scores.update(probabilities, self.decide(probabilities), batch["target"])
        self.log(metric_names.TEST_LOSS, loss, on_epoch=True, sync_dist=True)
        self.log_dict(self.test_scores.decided, on_epoch=True)
        self.log_dict(self.test_scores.at_fixed, on_epoch=True)
        self.test_indices.append(batch["index"].detach().cpu())
        self.test_probabilities.append(probabilities.detach().float().cpu())

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_scores.compute_per_class())
        if self.trainer.world_size > 1:  # every rank gets the rows of all ranks
            self.test_indices = all_gather_rows(self.trainer.strategy, torch.cat(self.test_indices))
            self.test_probabilities = all_gather_rows(
                self.trainer.strategy, torch.cat(self.test_probabilities)
            )

    def collected_test_predictions(self) -> tuple[np.ndarray, np.ndarray]:
        """(dataset rows, probabilities N x classes) seen by the last test run."""
        if not self.test_indices:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.label_set.num_classes))
        rows = torch.cat(self.test_indices).numpy()
        probabilities = torch.cat(self.test_probabilities).numpy()
        return rows, probabilities

    def predict_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.probabilities(batch["image"])

    def configure_optimizers(self):
        # frozen parameters (BackboneFinetuning) join the optimizer as their own group later
        trainable = [parameter for parameter in self.parameters() if parameter.requires_grad]
        optimizer = instantiate(dict(self.hparams.optimizer or DEFAULT_OPTIMIZER))(params=trainable)
        if not self.hparams.scheduler:
            return optimizer
        scheduler = instantiate(dict(self.hparams.scheduler))(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": "epoch",
                "monitor": self.hparams.monitor,  # read by ReduceLROnPlateau only
            },
        }


def _label_set(labels: Mapping | None, num_classes: int | None) -> LabelSet:
    """The module's label set: ``labels`` when given, else the 2018 classes (checkpoints saved
    before label sets, whose ``num_classes`` must then be the 2018 count)."""
    label_set = HPA2018 if labels is None else LabelSet.from_dict(labels)
    if num_classes is not None and num_classes != label_set.num_classes:
        raise HPAInputError(
            f"num_classes={num_classes} does not match the label set {label_set.name} "
            f"({label_set.num_classes} classes)"
        )
    return label_set


def _check_pos_weight(criterion: torch.nn.Module, label_set: LabelSet) -> None:
    """HPAInputError when a loss weighs positives of another number of classes."""
    for module in criterion.modules():
        weights = getattr(module, "pos_weight", None)
        if isinstance(weights, torch.Tensor) and weights.numel() != label_set.num_classes:
            raise HPAInputError(
                f"loss.pos_weight has {weights.numel()} values; the label set "
                f"{label_set.name} has {label_set.num_classes} classes"
            )


def _channel_tensor(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.float32).view(1, -1, 1, 1)
