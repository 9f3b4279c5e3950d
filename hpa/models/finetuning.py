"""A frozen backbone for the first epochs of a pretrained (or ``model.init_from``) network:
Lightning's ``BackboneFinetuning`` on ``HPAModule``'s feature layers (``callbacks=finetune``).

Lightning's callback freezes ``pl_module.backbone``; HPAModule's ``backbone`` is the whole timm
network, classifier included (its checkpoint keys say so). This subclass freezes and unfreezes
``HPAModule.feature_modules()`` instead: everything but ``classifier()``. The rest is Lightning's:
until ``unfreeze_backbone_at_epoch`` only the classifier (and, with ``train_bn``, the batch norms)
trains; then the feature layers join the optimizer as a parameter group of their own at
``backbone_initial_ratio_lr`` times the current learning rate, multiplied by ``lambda_func``
(x2) each epoch until it catches up with the classifier's.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BackboneFinetuning as LightningBackboneFinetuning
from torch.optim import Optimizer

from hpa.core.errors import HPAInputError


class BackboneFinetuning(LightningBackboneFinetuning):
    """Lightning's ``BackboneFinetuning`` on ``pl_module.feature_modules()`` (see the module
    docstring); same arguments. Refused under DDP, which only synchronises the gradients of
    parameters that were trainable when it wrapped the model."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            raise HPAInputError(
                "callbacks=finetune cannot run on several processes: DDP would never synchronise "
                "the gradients of the layers it unfreezes (train on one device)"
            )
        super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        self.freeze(pl_module.feature_modules())

    def finetune_function(
        self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        # Lightning's schedule, applied to the feature layers in place of `pl_module.backbone`
        features = SimpleNamespace(backbone=pl_module.feature_modules())
        with warnings.catch_warnings():
            # the batch norms, trainable while the rest was frozen (freeze() keeps them so), are
            # in the optimizer already: Lightning skips them, and says so
            warnings.filterwarnings("ignore", message="The provided params to be frozen already")
            super().finetune_function(features, epoch, optimizer)
