"""Sweeps of recipes on this machine or as SLURM job arrays, and reports in the paper's table layout."""
