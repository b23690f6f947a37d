"""Toy spatial world: synthetic LLaVA-1.5 training data and spatial benchmarks in their real formats.

`python -m data_prep.toyworld --out DIR` writes it; `generate()` does the same from Python.
"""

from data_prep.toyworld.world import generate, summary

__all__ = ["generate", "summary"]
