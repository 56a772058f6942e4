"""Compatibility entry point: the package metadata lives in pyproject.toml.

`pip install -e .` reads pyproject.toml (PEP 621); this file only lets tools
and habits that call `python setup.py ...` or look for a setup.py find the
same package. Do not add metadata here: version ranges belong in
pyproject.toml and the exact, proven set in constraints.txt (BUILD.md).
"""

import setuptools

setuptools.setup()
