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
from hpa.models.map_consistency import (
    PUZZLE_IMAGE_LOSS,
    PUZZLE_L1,
    PUZZLE_TILE_LOSS,
    check_puzzle_backbone,
    check_tile_count,
    puzzle_losses,
    split_tiles,
)
from hpa.models.mil import (
    MAX_POOLING,
    MILPooling,
    bag_logits,
    check_attention_backbone,
    check_mil_mode,
)

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

    ``map_consistency`` > 0 trains with Puzzle-CAM (``hpa.models.map_consistency``): each
    training image is also cut into ``map_consistency_tiles`` x ``map_consistency_tiles`` pieces
    and the loss adds the pieces' classification loss and ``map_consistency`` times the L1
    between the pieces' reassembled class maps and the image's (sharper maps for
    ``cells=cam``); 0, the default, trains as before. Validation, test and prediction are
    unchanged. It needs a GAP + linear head (refused at construction otherwise).

    ``mil_pooling`` ``max`` or ``attention`` trains a cell-crop model from image labels
    (``hpa.models.mil``): a batch whose ``image`` is 5-D, (B, N, 4, s, s) bags of one image's
    cell crops with a (B, N) ``cell_mask``, is scored by pooling its cells' outputs into (B, C)
    bag logits, which the loss and metrics compare with the image's target. A 4-D batch (single
    crops) goes through the plain forward, so ``module(crops)`` scores cells at inference. With
    ``mil_pooling=none`` a model trains on single crops only; bags (its validation and test
    batches) are then scored by the max over their cells' logits. The attention layers
    (``bag_pooling``, ``mil_attention_dim`` hidden units) are the module's own parameters, saved
    in its checkpoint.

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
        map_consistency: float = 0.0,
        map_consistency_tiles: int = 2,
        mil_pooling: str = "none",
        mil_attention_dim: int = 128,
    ) -> None:
        super().__init__()
        check_tta_options(tta, tta_reduce, tta_crop_size)
        check_policy(thresholds, threshold_params)
        _check_training_options(map_consistency, map_consistency_tiles, mil_pooling)
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
        if map_consistency > 0:
            check_puzzle_backbone(self.backbone, name)
        self.bag_pooling = _bag_pooling(self.backbone, name, mil_pooling, mil_attention_dim)
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
        return self.backbone(self._normalise(images))

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 4, H, W) images as the backbone takes them: uint8 scaled to 0..1, each channel
        normalised with ``channel_mean``/``channel_std``, in the module's memory format."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        images = (images - self.channel_mean) / self.channel_std
        return images.contiguous(memory_format=self._memory_format())

    def _memory_format(self) -> torch.memory_format:
        # loader batches come in channels-last memory (hpa.data.dataset.collate_samples)
        return torch.channels_last if self.hparams.channels_last else torch.contiguous_format

    def _logits(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, C) logits of a batch: the images' own, or a bag batch's pooled cell logits (with
        ``mil_pooling=none``, a single-crop model's validation bags: the max over their cells)."""
        images = batch["image"]
        if images.ndim != 5:
            return self(images)
        crops = self._normalise(images.flatten(0, 1))  # (B * N, 4, s, s)
        pooling = MAX_POOLING if self.bag_pooling is None else self.bag_pooling
        return bag_logits(self.backbone, pooling, crops, batch["cell_mask"])

    def probabilities(
        self, images: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Class probabilities of a batch, reduced over the ``tta`` transforms of the images.
        ``logits`` of the untransformed batch, when already computed, are reused."""
        if self.hparams.tta == "none":
            return torch.sigmoid(self(images) if logits is None else logits)
        if images.ndim == 5:
            raise HPAInputError(f"tta={self.hparams.tta} has no meaning for bags of cell crops")
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
        logits = self._logits(batch)
        loss = self.criterion(logits, batch["target"])
        return loss, logits

    def _puzzle_step(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Puzzle-CAM's loss: the image's, its pieces', and ``map_consistency`` x the L1
        between their class maps (``hpa.models.map_consistency``); the parts are logged."""
        tiles = self.hparams.map_consistency_tiles
        images = self._normalise(batch["image"])
        pieces = split_tiles(images, tiles).contiguous(memory_format=self._memory_format())
        features = self.backbone.forward_features(images)
        image_loss = self.criterion(self.backbone.forward_head(features), batch["target"])
        puzzle = puzzle_losses(
            features,
            self.backbone.forward_features(pieces),
            self.classifier(),
            tiles,
            batch["target"],
            self.criterion,
        )
        self.log(PUZZLE_IMAGE_LOSS, image_loss, on_step=True, on_epoch=True)
        self.log(PUZZLE_TILE_LOSS, puzzle.tile_loss, on_step=True, on_epoch=True)
        self.log(PUZZLE_L1, puzzle.consistency, on_step=True, on_epoch=True)
        return image_loss + puzzle.tile_loss + self.hparams.map_consistency * puzzle.consistency

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        _check_training_batch(batch["image"], self.bag_pooling)
        if self.hparams.map_consistency > 0:
            loss = self._puzzle_step(batch)
        else:
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
        if batch["image"].ndim == 5:  # bags of cell crops: their pooled (image) probabilities
            return self.probabilities(batch["image"], self._logits(batch))
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


def _check_training_options(map_consistency: float, tiles: int, mil_pooling: str) -> None:
    """HPAInputError for a Puzzle-CAM weight or tile count, or MIL mode, that cannot train."""
    check_mil_mode(mil_pooling)
    if map_consistency < 0:
        raise HPAInputError(
            f"model.map_consistency={map_consistency}: the L1 weight is 0 (off) or positive"
        )
    if map_consistency > 0:
        check_tile_count(tiles)
        if mil_pooling != "none":
            raise HPAInputError(
                f"model.map_consistency={map_consistency} (whole images) and "
                f"model.mil_pooling={mil_pooling} (bags of cell crops) train on different "
                "batches; use one of them"
            )


def _check_training_batch(images: torch.Tensor, bag_pooling: MILPooling | None) -> None:
    """HPAInputError for training bags (5-D images) without a bag pooling to learn them with."""
    if images.ndim == 5 and bag_pooling is None:
        raise HPAInputError(
            f"the training batch {tuple(images.shape)} holds bags of cell crops; training on "
            "bags needs model.mil_pooling=max or attention (it is none)"
        )


def _bag_pooling(
    backbone: torch.nn.Module, name: str, mode: str, attention_dim: int
) -> MILPooling | None:
    """The module's bag pooling (None for ``mode="none"``); attention's layers are sized by
    the backbone's pre-logit features."""
    if mode == "none":
        return None
    if mode == "max":
        return MILPooling(mode)
    return MILPooling(mode, check_attention_backbone(backbone, name), attention_dim)


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
