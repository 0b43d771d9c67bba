"""Tools for finished runs: ship, compare, check the shipped runs, analyse priority sort."""
