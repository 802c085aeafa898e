"""Package discovery for wszoo: the code packages plus the top-level ``conf/`` folder shipped as ``zoo/conf``.

The Hydra configs stay at the repository root (the Lightning-Hydra layout users asked for), yet a wheel must
carry them: setuptools' ``package_dir`` maps the package ``zoo.conf`` (and one package per config group) onto
``conf/``, which ``pyproject.toml``'s declarative ``packages.find`` cannot express. Everything else about the
project lives in ``pyproject.toml``.
"""

from setuptools import find_namespace_packages, find_packages, setup

CONF_PACKAGES = ["zoo.conf"] + [f"zoo.conf.{group}" for group in find_namespace_packages(where="conf")]

setup(
    packages=find_packages(include=["zoo*", "wsl*", "generators*"]) + CONF_PACKAGES,
    package_dir={"zoo.conf": "conf"},
    package_data={name: ["*.yaml"] for name in CONF_PACKAGES},
)
