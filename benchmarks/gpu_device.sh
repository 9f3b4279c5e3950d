#!/usr/bin/env bash
# The GPU benchmark of issue 5 (python -m benchmarks.gpu) on a lent GPU machine that has torch,
# Lightning, timm and the rest, but not hydra-core, omegaconf, albumentations,
# iterative-stratification and their dependencies: those travel as wheels in .whl/ (pure Python
# or cp312 manylinux) and are installed into /tmp/site, ahead of the machine's own packages.
#
#   bash benchmarks/gpu_device.sh [benchmarks.gpu options]    # from the repository root
#
# .whl/ is not committed (.git/info/exclude); on a machine with PyPI, for the device's Python 3.12:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl hydra-core==1.3.8 omegaconf==2.3.1 albumentations==2.0.8 albucore==0.0.24 \
#     pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#     typing_extensions==4.16.0 stringzilla==5.3.2 simsimd==6.5.16 iterative-stratification==0.1.9 \
#     timm==1.0.31
#   pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3    # published as source only
#
# Writes $OUT/gpu.log (everything printed) and $OUT/gpu.json (the figures); OUT defaults to
# /tmp/hpa-gpu. Each measurement of benchmarks.gpu fails on its own (printed, then the next runs).
set -u
OUT=${OUT:-/tmp/hpa-gpu}
mkdir -p "$OUT"

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export NO_ALBUMENTATIONS_UPDATE=1  # albumentations asks PyPI for a newer version at import

nvidia-smi -L
echo "CPU cores: $(nproc)"
df -h /dev/shm .  # the loader's workers pass batches through /dev/shm; the cache goes to data/
python3 -c 'import hpa.train, torch, timm, albumentations, hydra, pytorch_lightning as pl
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "timm", timm.__version__,
      "albumentations", albumentations.__version__, "hydra", hydra.__version__,
      "lightning", pl.__version__)' || exit 1

set -o pipefail
PYTHONUNBUFFERED=1 timeout 330 python3 -m benchmarks.gpu --json "$OUT/gpu.json" "$@" 2>&1 |
    tee "$OUT/gpu.log"
