"""Training throughput on a GPU (issue 5): resnet50 at 512 px.

(a) model: a full training step of HPAModule (forward, our loss, backward, AdamW step) on one
    uint8 batch of our train loader already on the GPU, in fp32 and bf16 autocast, NCHW and
    channels_last; fp32 runs with PyTorch's defaults (matmul in full fp32, cuDNN convolutions
    allowed TF32);
(b) loader: samples/s of the datamodule's own train loader alone (packed cache, augment=basic,
    all cores but one as workers, pinned memory);
(c) end to end: a Lightning fit of HPAModule (bf16-mixed, channels_last) on that loader; its
    images/s over (a)'s bf16 + channels_last figure says how busy the loader keeps the GPU.

The data is the synthetic set (``data=synthetic``), generated at ``--source-size`` px (the
generator runs in one process, so smaller PNGs keep it short) and cached at ``--size`` px: the
loader reads and augments ``--size`` px samples either way.

    python -m benchmarks.gpu [--model resnet50] [--size 512] [--batch-size 64] [--warmup 10]
        [--steps 30] [--fit-steps 120] [--images 4096] [--source-size 128] [--workers CORES-1]
        [--json PATH]
    python -m benchmarks.gpu --device cpu --model resnet18 --size 64 --source-size 64 \\
        --images 64 --batch-size 4 --warmup 2 --steps 3 --fit-steps 6   # a smoke run on the CPU

On a lent GPU machine: ``bash benchmarks/gpu_device.sh`` (installs the packages it lacks).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from benchmarks.common import consume, print_table, time_it, train_config
from hpa.core.io import write_json
from hpa.core.labels import HPA2018
from hpa.data import synthetic
from hpa.data.datamodule import HPADataModule
from hpa.data.epoch_seeding import epoch_seeding
from hpa.run import builders

# (a)'s settings: label, channels_last, bf16 autocast, read the loss on the host every step
MODEL_SETTINGS = (
    ("fp32, NCHW", False, False, False),
    ("fp32, channels_last", True, False, False),
    ("bf16 autocast, NCHW", False, True, False),
    ("bf16 autocast, channels_last", True, True, False),
    # HPAModule.training_step checks the loss for NaN (a host sync): what that alone costs
    ("bf16 autocast, channels_last, loss checked each step", True, True, True),
)
BEST = "bf16 autocast, channels_last"


class Report:
    """Rows of the final table and the same figures as JSON values, printed and written (to
    ``json_path``, if any) as they come, so that a run killed half-way still leaves them."""

    def __init__(self, json_path: Path | None) -> None:
        self.json_path = json_path
        self.rows: list[tuple[str, str]] = []
        self.values: dict[str, object] = {}
        self.failed: list[str] = []  # the measurements that raised: the run exits non-zero

    def add(self, label: str, text: str, **values: object) -> None:
        self.rows.append((label, text))
        self.values.update(values)
        print(f"[benchmarks.gpu] {label}: {text}", flush=True)
        if self.json_path is not None:
            write_json(self.json_path, {"rows": self.rows, **self.values})

    def attempt(self, name: str, work: Callable[[], object]) -> object | None:
        """Run one measurement; a failure is printed and recorded, and the next one runs."""
        try:
            return work()
        except Exception as error:  # any failure of one measurement must not stop the others
            traceback.print_exc()
            message = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:160]}"
            self.add(name, f"FAILED ({message})", **{f"{name}_error": message})
            self.failed.append(name)
            return None
        finally:
            release_memory()


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compose(args: argparse.Namespace, *overrides: str) -> DictConfig:
    """The ``hpa.train`` config of this benchmark: the synthetic set, cached at ``--size`` px."""
    trainer = ["trainer=gpu"] if args.device == "cuda" else ["trainer=cpu"]
    return train_config(
        f"model={args.model}",
        "model.pretrained=false",
        "data=synthetic",
        f"data.synthetic.num_images={args.images}",
        f"data.synthetic.image_size={args.source_size}",
        f"data.image_size={args.size}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        "data.split=[0.9,0.05,0.05]",  # most images in the train split, which is what we read
        "data.cache=true",
        "augment=basic",
        "callbacks=none",
        "logger=none",
        *trainer,
        # bf16-mixed on both: trainer=cpu sets 32-true (a CPU run only checks the code path)
        "trainer.precision=bf16-mixed",
        *overrides,
    )


def prepare_data(args: argparse.Namespace, report: Report) -> HPADataModule:
    cfg = compose(args)
    root = Path(cfg.data.root)
    reused = synthetic.is_complete(root)
    cache_existed = (root / "cache" / f"train-s{args.size}.json").is_file()
    datamodule = builders.build_datamodule(cfg)
    generation_s = time_it(datamodule.prepare_data)
    setup_s = time_it(lambda: datamodule.setup("fit"))
    report.add(
        f"synthetic set, {args.images} images at {args.source_size} px",
        f"{generation_s:7.1f} s  ({'reused' if reused else 'generated, one process'})",
        generation_s=generation_s,
    )
    report.add(
        f"setup: validation, split, cache at {args.size} px, channel stats",
        f"{setup_s:7.1f} s  (cache {'reused' if cache_existed else 'built'}, "
        f"{len(datamodule.datasets['train'])} train images)",
        setup_s=setup_s,
        train_images=len(datamodule.datasets["train"]),
    )
    return datamodule


# --------------------------------------------------------------------------------------------
# (a) the model alone, data on the device
# --------------------------------------------------------------------------------------------


def loader_batch(
    datamodule: HPADataModule, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch as the train loader collates it (same layout and dtype), on ``device``."""
    loader = datamodule.train_dataloader()
    samples = [loader.dataset[index] for index in range(loader.batch_size)]
    batch = loader.collate_fn(samples)
    return batch["image"].to(device), batch["target"].to(device)


def random_batch(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """When the data step failed: random uint8 images, channels_last as the loader yields them."""
    shape = (args.batch_size, 4, args.size, args.size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, device=args.device)
    targets = (torch.rand(args.batch_size, HPA2018.num_classes, device=args.device) < 0.1).float()
    return images.contiguous(memory_format=torch.channels_last), targets


def layout(images: torch.Tensor) -> str:
    if images.is_contiguous():
        return "NCHW"
    return "channels_last" if images.is_contiguous(memory_format=torch.channels_last) else "strided"


def train_steps(
    module, optimizer, images, targets, steps: int, bf16: bool, check_loss: bool
) -> None:
    for _ in range(steps):
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module.criterion(module(images), targets)
        if check_loss and not torch.isfinite(loss):
            raise FloatingPointError("non-finite loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def model_throughput(
    args: argparse.Namespace,
    datamodule: HPADataModule,
    batch: tuple[torch.Tensor, torch.Tensor],
    channels_last: bool,
    bf16: bool,
    check_loss: bool,
) -> tuple[float, float]:
    """(images/s over ``--steps`` timed steps after ``--warmup``, peak GPU memory in GiB)."""
    device = torch.device(args.device)
    cfg = compose(args, f"model.channels_last={str(channels_last).lower()}")
    torch.manual_seed(cfg.seed)
    module = builders.build_module(cfg, datamodule).to(device).train()
    optimizer = instantiate(cfg.optimizer)(params=module.parameters())
    images, targets = batch
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_steps(module, optimizer, images, targets, args.warmup, bf16, check_loss)
    synchronize(device)
    start = time.perf_counter()
    train_steps(module, optimizer, images, targets, args.steps, bf16, check_loss)
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return args.steps * len(images) / seconds, peak


def measure_model(
    args: argparse.Namespace, datamodule: HPADataModule | None, report: Report
) -> None:
    if datamodule is None:  # neutral channel statistics for the module, random images
        datamodule = SimpleNamespace(channel_mean=np.zeros(4), channel_std=np.ones(4))
        batch = random_batch(args)
    else:
        batch = loader_batch(datamodule, torch.device(args.device))
    report.add(
        "(a) batch on the device",
        f"uint8, {layout(batch[0])}{'' if isinstance(datamodule, HPADataModule) else ', random'}",
        model_batch_layout=layout(batch[0]),
    )
    # An untimed pass of the first setting: the first steps of a process (library handles,
    # kernel loading, allocator growth) would otherwise count against the fp32 baseline.
    report.attempt(
        "(a) warm-up pass", lambda: model_throughput(args, datamodule, batch, False, False, False)
    )
    rates = {}
    for label, channels_last, bf16, check_loss in MODEL_SETTINGS:

        def measure(channels_last=channels_last, bf16=bf16, check_loss=check_loss):
            return model_throughput(args, datamodule, batch, channels_last, bf16, check_loss)

        result = report.attempt(f"(a) {label}", measure)
        if result is None:
            continue
        rates[label], peak = result
        key = label.replace(", ", "_").replace(" ", "_")
        report.add(
            f"(a) {label}",
            f"{rates[label]:8.1f} images/s" + (f"  (peak {peak:.1f} GiB)" if peak else ""),
            **{f"model_{key}_images_per_s": rates[label], f"model_{key}_peak_gib": peak},
        )
    fp32, best = rates.get("fp32, NCHW"), rates.get(BEST)
    if fp32 and best:
        report.add(
            f"(a) {BEST} / fp32 NCHW", f"{best / fp32:8.2f}x", speedup_bf16_cl_vs_fp32=best / fp32
        )
    report.values["model_rates"] = rates


# --------------------------------------------------------------------------------------------
# (b) the train loader alone
# --------------------------------------------------------------------------------------------


def measure_loader(args: argparse.Namespace, datamodule: HPADataModule, report: Report) -> None:
    loader = datamodule.train_dataloader()
    start = time.perf_counter()
    consume(loader)  # starts the workers and reads the cache into the page cache
    first_epoch_s = time.perf_counter() - start
    start = time.perf_counter()
    counted = [consume(loader) for _ in range(args.loader_epochs)]
    seconds = time.perf_counter() - start
    rate = sum(counted) / seconds
    report.add(
        f"(b) train loader alone, {args.workers} workers, pin_memory={loader.pin_memory}",
        f"{rate:8.1f} samples/s  ({rate / max(args.workers, 1):.1f} per worker; "
        f"{sum(counted)} samples in {args.loader_epochs} epochs after a first of "
        f"{first_epoch_s:.1f} s)",
        loader_samples_per_s=rate,
        loader_first_epoch_s=first_epoch_s,
    )
    del loader  # its persistent workers end with it
    best = report.values.get("model_rates", {}).get(BEST)
    if best:
        report.add(
            f"(b) loader / (a) {BEST}",
            f"{rate / best:8.2f}x  (>= 1: the loader can feed the model)",
            loader_over_model=rate / best,
        )


# --------------------------------------------------------------------------------------------
# (c) end to end: Lightning Trainer, HPAModule, the cached loader
# --------------------------------------------------------------------------------------------


class SteadyStateTimer(pl.Callback):
    """Time from the end of the ``warmup``-th training batch to the end of the last one
    (``trainer.max_steps``); the device is synchronised at those two points only, so the loader
    and the GPU overlap as in any training run. The host clock at the end of every batch in
    between gives the step intervals (training_step reads the loss each step, which keeps the
    host in step with the GPU): their median is the rate without the waits for data at the start
    of each epoch, when the loader's prefetching begins anew."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.batches = 0
        self.stamps: list[float] = []
        self.batch_size = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.batches += 1
        if self.batches in (self.warmup, trainer.max_steps):
            synchronize(pl_module.device)
        if self.batches >= self.warmup:
            self.stamps.append(time.perf_counter())
            self.batch_size = len(batch["image"])

    def rates(self) -> tuple[float, float]:
        """(images/s over the whole window, images/s of the median step)."""
        if len(self.stamps) < 2:
            raise RuntimeError(f"the fit ran {self.batches} batches, fewer than warm-up + steps")
        steps = len(self.stamps) - 1
        median_step = statistics.median(np.diff(self.stamps))
        seconds = self.stamps[-1] - self.stamps[0]
        return steps * self.batch_size / seconds, self.batch_size / median_step


class GPUUtilisation:
    """``nvidia-smi`` sampling utilization.gpu every 500 ms in the background, each sample stamped
    with this process's clock; nothing when nvidia-smi is missing."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self.process: subprocess.Popen | None = None
        self.reader: threading.Thread | None = None

    def __enter__(self) -> GPUUtilisation:
        if shutil.which("nvidia-smi") is None:
            return self
        query = "--query-gpu=utilization.gpu"
        self.process = subprocess.Popen(
            ["nvidia-smi", query, "--format=csv,noheader,nounits", "-lms", "500"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            value = line.strip().split(",")[0]
            if value.isdigit():
                self.samples.append((time.perf_counter(), int(value)))

    def __exit__(self, *exc_info) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.reader.join(timeout=10)

    def between(self, start: float, end: float) -> list[int]:
        return [value for stamp, value in self.samples if start <= stamp <= end]


def measure_end_to_end(args: argparse.Namespace, datamodule: HPADataModule, report: Report) -> None:
    cfg = compose(
        args,
        "model.channels_last=true",
        f"+trainer.max_steps={args.warmup + args.fit_steps}",
        "trainer.max_epochs=100",  # max_steps ends the fit; the cosine schedule needs an end
        "+trainer.limit_val_batches=0",
        "+trainer.num_sanity_val_steps=0",
        "+trainer.enable_checkpointing=false",
        "+trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false",
    )
    pl.seed_everything(cfg.seed, workers=True)
    module = builders.build_module(cfg, datamodule)
    timer = SteadyStateTimer(args.warmup)
    trainer = builders.build_trainer(cfg, [*epoch_seeding(cfg.seed), timer], loggers=[])
    with GPUUtilisation() as utilisation:
        trainer.fit(module, datamodule=datamodule)
    rate, median_rate = timer.rates()
    epochs = (args.warmup + args.fit_steps) / trainer.num_training_batches
    report.add(
        f"(c) Lightning fit, {cfg.trainer.precision}, channels_last, cached loader",
        f"{rate:8.1f} images/s  ({args.fit_steps} steps after {args.warmup}, "
        f"{epochs:.1f} epochs in all; median step: {median_rate:.1f} images/s)",
        end_to_end_images_per_s=rate,
        end_to_end_median_step_images_per_s=median_rate,
    )
    best = report.values.get("model_rates", {}).get(BEST)
    if best:
        report.add(
            f"(c) / (a) {BEST}: GPU busy",
            f"{100 * rate / best:8.1f} %",
            gpu_busy_percent=100 * rate / best,
        )
    samples = utilisation.between(timer.stamps[0], timer.stamps[-1])
    if samples:
        report.add(
            "(c) nvidia-smi utilization.gpu over those steps",
            f"mean {statistics.mean(samples):.0f} %, median {statistics.median(samples):.0f} %, "
            f"min {min(samples)} % ({len(samples)} samples)",
            nvidia_smi_utilisation=samples,
        )


# --------------------------------------------------------------------------------------------


def header_rows(args: argparse.Namespace) -> list[tuple[str, str]]:
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        ("device", name),
        ("torch, CUDA", f"{torch.__version__}, {torch.version.cuda}"),
        ("CPU cores (usable / all)", f"{cores} / {os.cpu_count()}"),
        (
            "model, image size, batch size",
            f"{args.model} (pretrained=false, 4 channels), {args.size} px, {args.batch_size}",
        ),
        (
            "fp32 precision flags (PyTorch defaults)",
            f"matmul allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
            f"cudnn allow_tf32={torch.backends.cudnn.allow_tf32}, "
            f"cudnn benchmark={torch.backends.cudnn.benchmark}",
        ),
        (
            "steps",
            f"{args.warmup} warm-up + {args.steps} timed (a), {args.fit_steps} timed (c)",
        ),
    ]


def parse_args() -> argparse.Namespace:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help="a conf/model config")
    parser.add_argument("--size", type=int, default=512, help="training image size (px)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps of (a)")
    parser.add_argument("--fit-steps", type=int, default=120, help="timed steps of (c)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before them")
    parser.add_argument("--images", type=int, default=4096, help="synthetic images")
    parser.add_argument("--source-size", type=int, default=128, help="synthetic PNG size (px)")
    parser.add_argument("--workers", type=int, default=max(cores - 1, 0), help="loader workers")
    parser.add_argument("--loader-epochs", type=int, default=3, help="epochs timed in (b)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if min(args.warmup, args.steps, args.fit_steps) < 1:
        parser.error("--warmup, --steps and --fit-steps must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: use --device cpu (with small settings)")
    return args


def main() -> None:
    args = parse_args()
    report = Report(args.json)
    report.values["settings"] = vars(args) | {"json": str(args.json)}
    for label, text in header_rows(args):
        report.add(label, text)
    started = time.perf_counter()

    datamodule = report.attempt("data", lambda: prepare_data(args, report))
    report.attempt("(a) model", lambda: measure_model(args, datamodule, report))
    if datamodule is not None:
        report.attempt("(b) loader", lambda: measure_loader(args, datamodule, report))
        report.attempt("(c) end to end", lambda: measure_end_to_end(args, datamodule, report))
    report.add("benchmark wall time", f"{time.perf_counter() - started:7.1f} s")

    print_table(f"gpu: training throughput of {args.model} at {args.size} px", report.rows)
    if report.failed:  # a table with FAILED rows is no measurement: say so in the exit code
        raise SystemExit(f"[benchmarks.gpu] {len(report.failed)} measurement(s) failed: "
                         f"{', '.join(report.failed)}")  # fmt: skip


if __name__ == "__main__":
    main()
