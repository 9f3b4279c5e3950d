"""One task per image, in this process or in a pool of worker processes, with a progress bar:
what the mask cache and the crop cache share.

``for_each_image(task, state, image_dir, ids, processes, description)`` calls
``task(state, image_dir, sample_id)`` for every id. ``task`` is a module-level function (it is
pickled by name) and ``state`` (a cache, with its segmenter) is pickled once per worker, so a
network-backed segmenter loads its weights once per process. Workers come from a fork server,
not fork: a child forked after OpenCV or torch started their thread pools can hang. Each
worker runs one OpenCV (and OpenMP) thread: one worker per core.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

import cv2
from tqdm import tqdm

ImageTask = Callable[[Any, str, str], None]

_worker_state: Any = None
"""The state of a pool worker (a cache), unpickled once per process."""


def for_each_image(
    task: ImageTask,
    state: Any,
    image_dir: str,
    ids: Sequence[str],
    processes: int,
    description: str,
) -> None:
    """``task(state, image_dir, id)`` for each id, in ``processes`` worker processes (at most
    one per id; 1 or less: in this process). On an error, queued ids are cancelled; those being
    worked on finish (and keep what they wrote)."""
    workers = max(1, min(processes, len(ids)))
    with tqdm(total=len(ids), desc=description, unit="img") as progress:
        if workers == 1:
            for sample_id in ids:
                task(state, image_dir, sample_id)
                progress.update()
            return
        context = get_context("forkserver")
        context.set_forkserver_preload([task.__module__])
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(state,)
        ) as pool:
            futures: list[Future] = [
                pool.submit(_run_in_worker, task, image_dir, sample_id) for sample_id in ids
            ]
            try:
                for future in as_completed(futures):
                    future.result()
                    progress.update()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


def _init_worker(state: Any) -> None:
    global _worker_state
    cv2.setNumThreads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _worker_state = state


def _run_in_worker(task: ImageTask, image_dir: str, sample_id: str) -> None:
    task(_worker_state, image_dir, sample_id)
