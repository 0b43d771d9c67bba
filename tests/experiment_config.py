"""Prints, as JSON, the config an experiment's runner makes from flags:
`python -m tests.experiment_config EXPERIMENT [FLAGS]` (tests/test_experiments.py runs it).

A process of its own per call: an experiment registers its flags when imported.
"""

import importlib
import json
import sys

from absl import flags

from experiments import common


def main(name: str, *args: str) -> None:
  experiment = importlib.import_module(f'experiments.{name}')
  flags.FLAGS([name, *args])
  config = common.make_config(name, experiment.DEFAULTS, experiment.MODEL_DEFAULTS)
  print(json.dumps(vars(config)))


if __name__ == '__main__':
  main(*sys.argv[1:])
