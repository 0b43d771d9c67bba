"""The copy experiment's command line as the tests start it."""

import sys


def copy_command(*args: str) -> list[str]:
  """`python -m experiments.copy` with `args`: one run (`--population=1`) unless `args`
  ask for a population, since the copy default trains four members."""
  single = (
      []
      if any(a.startswith(('--seeds', '--population')) for a in args)
      else ['--population=1']
  )
  return [sys.executable, '-m', 'experiments.copy', *single, *args]
