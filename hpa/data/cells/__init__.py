"""Single cells of HPA images (the Kaggle 2021 task): segmentation providers and a mask cache.

    segmenter = build_segmenter({"name": "watershed"})    # or cellpose, masks (conf/segment/)
    cache = MaskCache(cache_dir, segmenter)
    cache.ensure_masks(image_dir, ids, processes=4)       # segments what is not cached yet
    labels = cache.load(sample_id)                        # int32 H x W, 0 = background

Layering: imports hpa.core and hpa.data only.
"""

from hpa.data.cells.base import ImageSegmenter, Segmenter
from hpa.data.cells.cellpose_model import CellposeSegmenter
from hpa.data.cells.channels import as_channel_stack, read_native_channel, read_native_sample
from hpa.data.cells.crops import CropCache, crop_cells, crop_positions
from hpa.data.cells.mask_cache import MaskCache
from hpa.data.cells.mask_folder import MaskFolderSegmenter
from hpa.data.cells.segmentation import PROVIDERS, build_segmenter, provider_settings
from hpa.data.cells.watershed import WatershedSegmenter

__all__ = [
    "PROVIDERS",
    "CellposeSegmenter",
    "CropCache",
    "ImageSegmenter",
    "MaskCache",
    "MaskFolderSegmenter",
    "Segmenter",
    "WatershedSegmenter",
    "as_channel_stack",
    "build_segmenter",
    "crop_cells",
    "crop_positions",
    "provider_settings",
    "read_native_channel",
    "read_native_sample",
]
