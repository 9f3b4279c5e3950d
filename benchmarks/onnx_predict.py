"""Prediction images/s: torch eager against onnxruntime on the same exported model (issue 15).

resnet50 with random weights at 512 px, uint8 RGBY batches in, probabilities out. Three
runners, each on the same batch with the same number of threads, timed side by side in
alternating rounds (so that other load on the machine hits them alike):

    torch channels_last  HPAModule(channels_last=True) under inference_mode, the batch in
                         channels-last memory as hpa's loader gives it (hpa's setting for timm)
    torch NCHW           the same in plain contiguous memory
    onnxruntime          the file written by hpa.integrations.onnx_export.export_onnx, run by
                         hpa.integrations.onnx_runtime.OnnxPredictor

Each rate is the median over the rounds; the ratios are onnxruntime over each torch runner.

    python -m benchmarks.onnx_predict [--model resnet50] [--size 512] [--batch-size 8]
        [--batches 2] [--rounds 3] [--threads CORES] [--cuda]

``--cuda`` runs torch on the GPU and onnxruntime with its CUDA provider (onnxruntime-gpu), each
when available; onnxruntime falls back to the CPU otherwise (it says so).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import print_table, time_it
from hpa.integrations.onnx_export import export_onnx
from hpa.integrations.onnx_runtime import OnnxPredictor, execution_providers
from hpa.models.module import HPAModule


def torch_runner(
    model_name: str, channels_last: bool, batch: np.ndarray, device: torch.device
) -> Callable[[], object]:
    torch.manual_seed(0)
    module = HPAModule(model_name, channels_last=channels_last).eval().to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = torch.from_numpy(batch).to(device).contiguous(memory_format=memory_format)

    def predict() -> object:
        with torch.inference_mode():
            probabilities = torch.sigmoid(module(images)).cpu()
        return probabilities

    return predict


def onnx_runner(
    path: Path, batch: np.ndarray, threads: int, cuda: bool
) -> tuple[Callable[[], object], list[str]]:
    predictor = OnnxPredictor(path, providers=execution_providers(cuda), num_threads=threads)
    return (lambda: predictor.probabilities(batch)), predictor.providers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=2, help="batches per runner and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--cuda", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (args.batch_size, 4, args.size, args.size), dtype=np.uint8)

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        # the exported module: HPAModule's forward does not depend on its memory format
        difference = export_onnx(
            HPAModule(args.model, channels_last=True), path, args.size, num_random_images=2
        )
        onnx_predict, providers = onnx_runner(path, batch, args.threads, args.cuda)
        runners = {
            "torch channels_last": torch_runner(args.model, True, batch, device),
            "torch NCHW": torch_runner(args.model, False, batch, device),
            "onnxruntime": onnx_predict,
        }
        for predict in runners.values():  # warm-up: first-call allocations, kernel choices
            predict()
        rates: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.rounds):
            for name, predict in runners.items():
                seconds = time_it(lambda predict=predict: [predict() for _ in range(args.batches)])
                rates[name].append(args.batches * args.batch_size / seconds)

    median = {name: statistics.median(values) for name, values in rates.items()}
    rows = [
        (name, f"{median[name]:7.2f} images/s  (rounds: {', '.join(f'{v:.2f}' for v in values)})")
        for name, values in rates.items()
    ]
    rows += [
        (f"onnxruntime / {name}", f"{median['onnxruntime'] / median[name]:.2f}x")
        for name in runners
        if name != "onnxruntime"
    ]
    rows.append(("onnxruntime providers", ", ".join(providers)))
    rows.append(("export parity (max |difference|)", f"{difference:.2g}"))
    print_table(
        f"prediction: {args.model}, {args.size} px, batch {args.batch_size}, "
        f"{args.threads} threads, torch on {device}, {args.rounds} alternating rounds",
        rows,
    )


if __name__ == "__main__":
    main()
