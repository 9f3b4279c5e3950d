"""The settings of a data module, typed: one frozen dataclass per concern, read from the Hydra
``data`` node (conf/data/*.yaml) by ``DataConfig.from_mapping``.

The yaml keys stay flat, as users type them on the command line (``data.split_seed=3``,
``data.cache=false``); this module groups them. Every key is checked before any data is read:
an unknown one (a typo such as ``data.oversampel``) stops the run with its name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from hpa.core.errors import HPAInputError
from hpa.data.duplicates import DEFAULT_THRESHOLD, check_threshold
from hpa.data.sampler import STRATEGIES, checked_draws
from hpa.data.transforms import check_crop_sizes
from hpa.data.validate import BAD_IMAGE_POLICIES, VALIDATION_MODES, check_choice


@dataclass(frozen=True)
class SplitConfig:
    """How the rows of ``data.root`` are split (hpa.data.split): read from ``split_file``, else
    fold ``fold`` of a ``num_folds``-fold split of the non-test rows, else the ``fractions``
    (train, val, test); always seeded by ``seed``."""

    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_file: Path | None = None
    num_folds: int | None = None
    fold: int = 0
    seed: int = 0


@dataclass(frozen=True)
class SamplerConfig:
    """Oversampling of the train split (hpa.data.sampler). ``minority_classes`` None: the label
    set's own."""

    oversample: bool = False
    strategy: str = "minority"
    minority_classes: tuple[int, ...] | None = None
    boost: float = 8.0
    power: float = 0.5
    max_weight: float = 50.0
    draws: str = "repeat"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise HPAInputError(
                f"data.sampler.strategy must be one of {STRATEGIES}, got {self.strategy!r}"
            )
        checked_draws(self.draws)


@dataclass(frozen=True)
class DuplicatesConfig:
    """Near-duplicate search (hpa.data.duplicates); training only."""

    enabled: bool = True
    threshold: int = DEFAULT_THRESHOLD

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise HPAInputError(f"data.duplicates.enabled must be true or false: {self.enabled!r}")
        check_threshold(self.threshold)


@dataclass(frozen=True)
class NormalizeConfig:
    """Channel statistics: ``mean`` and ``std`` (4 values each, RGBY, 0..1 scale) when both are
    given, else computed on ``num_images`` images of the train split."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    num_images: int = 512


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int = 32
    num_workers: int = 2


@dataclass(frozen=True)
class CacheConfig:
    """The packed image cache (hpa.data.cache); ``cache_dir`` holds the caches of read-only
    roots (and their hashes)."""

    enabled: bool = False
    cache_dir: Path | None = None


@dataclass(frozen=True)
class SyntheticConfig:
    """A synthetic set that ``prepare_data`` generates or checks (data=synthetic)."""

    num_images: int
    image_size: int
    seed: int
    num_test: int = 0
    generate_into: Path | None = None


@dataclass(frozen=True)
class DataConfig:
    """Everything a data module reads from the ``data`` node. ``load_size`` (None:
    ``image_size``) is the size images are read and cached at; ``external`` lists more roots
    whose images join the train split."""

    root: Path
    image_size: int = 128
    load_size: int | None = None
    validate: str = "fast"
    on_bad_image: str = "error"
    external: tuple[Path, ...] = ()
    synthetic: SyntheticConfig | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    duplicates: DuplicatesConfig = field(default_factory=DuplicatesConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)

    def __post_init__(self) -> None:
        check_crop_sizes(self.image_size, self.load_size)
        check_choice("data.validate", self.validate, VALIDATION_MODES)
        check_choice("data.on_bad_image", self.on_bad_image, BAD_IMAGE_POLICIES)

    @property
    def read_size(self) -> int:
        """The size images are read and cached at: ``load_size``, else ``image_size``."""
        return self.image_size if self.load_size is None else self.load_size

    @classmethod
    def from_mapping(cls, data: Mapping) -> DataConfig:
        """The config of a ``data`` node (a DictConfig is resolved first). Missing keys take
        the defaults above; an unknown key, at any level, is an HPAInputError naming it."""
        data = _plain(data)
        _refuse_unknown_keys("data", data, DATA_KEYS)
        if data.get("root") is None:
            raise HPAInputError("data.root is not set (data=hpa data.root=PATH)")
        split_seed = data.get("split_seed")
        return cls(
            root=Path(data["root"]),
            image_size=data.get("image_size", 128),
            load_size=data.get("load_size"),
            validate=data.get("validate", "fast"),
            on_bad_image=data.get("on_bad_image", "error"),
            external=_paths(data.get("external")),
            synthetic=_synthetic(data.get("synthetic")),
            split=SplitConfig(
                fractions=tuple(float(f) for f in data.get("split", (0.7, 0.15, 0.15))),
                split_file=_path_or_none(data.get("split_file")),
                num_folds=data.get("num_folds"),
                fold=data.get("fold", 0),
                seed=0 if split_seed is None else split_seed,  # the split is always repeatable
            ),
            sampler=_sampler(bool(data.get("oversample", False)), data.get("sampler")),
            duplicates=DuplicatesConfig(
                **_section("duplicates", data.get("duplicates"), _field_names(DuplicatesConfig))
            ),
            normalize=_normalize(data.get("normalize")),
            loader=LoaderConfig(
                batch_size=data.get("batch_size", 32), num_workers=data.get("num_workers", 2)
            ),
            cache=CacheConfig(
                enabled=bool(data.get("cache", False)),
                cache_dir=_path_or_none(data.get("cache_dir")),
            ),
        )


DATA_KEYS = (
    "_target_",  # the data module class (hpa.run.builders.build_datamodule)
    "root",
    "image_size",
    "load_size",
    "batch_size",
    "num_workers",
    "split",
    "split_file",
    "num_folds",
    "fold",
    "split_seed",
    "oversample",
    "sampler",
    "normalize",
    "synthetic",
    "cache",
    "cache_dir",
    "validate",
    "on_bad_image",
    "external",
    "duplicates",
)
"""The keys of a ``data`` node (conf/data/hpa.yaml documents each)."""


def _plain(data: Mapping) -> dict:
    if not isinstance(data, DictConfig):
        return dict(data)
    try:
        return OmegaConf.to_container(data, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as error:
        hint = " (data=hpa data.root=PATH)" if error.full_key == "data.root" else ""
        raise HPAInputError(f"{error.full_key} is not set{hint}") from None


def _refuse_unknown_keys(where: str, given: Mapping, known: Sequence[str]) -> None:
    unknown = [key for key in given if key not in known]
    if unknown:
        named = ", ".join(f"{where}.{key}" for key in unknown)
        raise HPAInputError(f"unknown key(s) {named}; {where} has {', '.join(known)}")


def _section(name: str, section: Mapping | None, known: Sequence[str]) -> dict:
    """``data.{name}`` as a dict (null: empty), its keys checked against ``known``."""
    section = dict(section or {})
    _refuse_unknown_keys(f"data.{name}", section, known)
    return section


def _field_names(config_class: type) -> tuple[str, ...]:
    return tuple(field.name for field in fields(config_class))


def _sampler(oversample: bool, section: Mapping | None) -> SamplerConfig:
    known = [
        name for name in _field_names(SamplerConfig) if name != "oversample"
    ]  # data.oversample
    section = _section("sampler", section, known)
    if section.get("minority_classes") is not None:
        section["minority_classes"] = tuple(int(i) for i in section["minority_classes"])
    return SamplerConfig(oversample=oversample, **section)


def _normalize(section: Mapping | None) -> NormalizeConfig:
    section = _section("normalize", section, _field_names(NormalizeConfig))
    for key in ("mean", "std"):
        if section.get(key) is not None:
            section[key] = tuple(float(value) for value in section[key])
    return NormalizeConfig(**section)


def _synthetic(section: Mapping | None) -> SyntheticConfig | None:
    if section is None:
        return None
    section = _section("synthetic", section, _field_names(SyntheticConfig))
    section["generate_into"] = _path_or_none(section.get("generate_into"))
    try:
        return SyntheticConfig(**section)
    except TypeError:
        raise HPAInputError(
            f"data.synthetic needs num_images, image_size and seed; got {', '.join(section)}"
        ) from None


def _paths(value: str | Path | Sequence | None) -> tuple[Path, ...]:
    if value is None:
        return ()
    if isinstance(value, str | Path):
        return (Path(value),)
    return tuple(Path(item) for item in value)


def _path_or_none(value: str | Path | None) -> Path | None:
    return None if value is None or value == "" else Path(value)
