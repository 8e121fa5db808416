"""Experiments: sweeps, replications and sensitivity analysis."""
