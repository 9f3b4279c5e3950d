"""OmegaConf resolvers that hpa's configs use, registered when ``hpa`` is imported.

``${hpa.scaled:SIZE,FACTOR}`` is SIZE x FACTOR in whole pixels: conf/data/hpa.yaml reads the
images at ``${hpa.scaled:${.image_size},1.25}`` so that training takes random ``image_size``
crops of them, whatever image size a run asks for.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from hpa.core.errors import HPAInputError

SCALED = "hpa.scaled"


def scaled_size(size: int, factor: float) -> int:
    """``size * factor`` rounded to whole pixels; a size or factor that is not a positive number
    is refused, naming the resolver."""
    try:
        size, factor = float(size), float(factor)
    except (TypeError, ValueError):
        raise HPAInputError(
            f"${{{SCALED}:{size},{factor}}}: the size and the factor must be numbers"
        ) from None
    if size <= 0 or factor <= 0:
        raise HPAInputError(f"${{{SCALED}:{size:g},{factor:g}}}: both must be positive")
    return round(size * factor)


def register_resolvers() -> None:
    """Register hpa's resolvers once (importing hpa does it)."""
    if not OmegaConf.has_resolver(SCALED):
        OmegaConf.register_new_resolver(SCALED, scaled_size)
