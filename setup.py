"""The package list (metadata is in pyproject.toml): hpa and its subpackages, plus the clone's
top-level conf/ shipped inside the package as hpa/conf, so an installed hpa finds its configs.
conf/ stays the one source; hpa.run.entry.CONFIG_DIR reads hpa/conf when installed, conf/ in a
clone."""

from setuptools import find_namespace_packages, find_packages, setup

CONF_PACKAGES = ["hpa.conf"] + [f"hpa.conf.{name}" for name in find_namespace_packages("conf")]

setup(
    packages=find_packages(include=["hpa", "hpa.*"]) + CONF_PACKAGES,
    package_dir={"hpa.conf": "conf"},
    # hpa/data/*.csv: data files read at run time (hpa2021_locations.csv)
    package_data={**{package: ["*.yaml"] for package in CONF_PACKAGES}, "hpa.data": ["*.csv"]},
)
