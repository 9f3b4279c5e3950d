"""hpa: multilabel protein localisation in HPA fluorescence images, image-level and per cell."""

from hpa.core.resolvers import register_resolvers

register_resolvers()
