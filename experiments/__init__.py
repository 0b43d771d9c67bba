"""Thin absl runners for the paper's experiments: `python -m experiments.<task>`."""
