"""Package layout that pyproject.toml cannot express: ``migrations/`` installs as
``picloud.migrations``, so a non-editable install carries the alembic scripts."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["picloud", "picloud.*"]), "picloud.migrations"],
    package_dir={"picloud.migrations": "migrations"},
)
