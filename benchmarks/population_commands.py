"""A population command against its single runs, as a user runs them, timed end to end.

`python -m benchmarks.population_commands [--seeds=0-9] [--train_steps=4000]` runs
`python -m experiments.copy --seeds=<seeds> --data_parallel` and then every
`python -m experiments.copy --seed=<s>` of those seeds, as many at a time as this machine
has cores, each with `--train_steps` (the copy default otherwise), in fresh workdirs
under a temporary directory, and prints the wall times (start-up, compilation,
evaluations and reports included) and their ratio. `--output=FILE` writes them as JSON.
Machine drift falls on both alike only if nothing else runs meanwhile.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(workdir: str, train_steps: int, *args: str) -> list[str]:
  return [
      sys.executable,
      '-m',
      'experiments.copy',
      f'--workdir={workdir}',
      f'--train_steps={train_steps}',
      '--plots=false',
      *args,
  ]


def _run_all(commands: list[list[str]], at_once: int) -> float:
  """Runs the commands, `at_once` at a time; the wall seconds of all of them."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  start, waiting, running = time.time(), list(commands), []
  while waiting or running:
    while waiting and len(running) < at_once:
      running.append(
          subprocess.Popen(
              waiting.pop(0),
              cwd=ROOT,
              env=env,
              stdout=subprocess.DEVNULL,
              stderr=subprocess.PIPE,
              text=True,
          )
      )
    process = running.pop(0)
    _, stderr = process.communicate()
    if process.returncode:
      sys.exit(f'error: {" ".join(process.args)} failed:\n{stderr[-2000:]}')
  return time.time() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
      '--seeds', default='0-9', help='The population, as --seeds takes it.'
  )
  parser.add_argument('--train_steps', type=int, default=4000)
  parser.add_argument('--output', default=None, help='Write the rows as JSON here.')
  args = parser.parse_args()
  sys.path.insert(0, ROOT)
  from ntm_jax.training.population import parse_seeds

  seeds = parse_seeds(args.seeds)
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else 1
  with tempfile.TemporaryDirectory() as directory:
    population = _run_all(
        [
            _command(
                os.path.join(directory, 'population'),
                args.train_steps,
                f'--seeds={args.seeds}',
                '--data_parallel',
            )
        ],
        1,
    )
    singles = _run_all(
        [
            _command(
                os.path.join(directory, f'seed{seed}'),
                args.train_steps,
                f'--seed={seed}',
                '--population=1',
            )
            for seed in seeds
        ],
        cores,
    )
  sequences = len(seeds) * args.train_steps
  row = dict(
      seeds=args.seeds,
      members=len(seeds),
      train_steps=args.train_steps,
      cores=cores,
      population_seconds=population,
      single_runs_seconds=singles,
      population_speedup=singles / population,
  )
  print(f'copy default, {len(seeds)} seeds x {args.train_steps} steps, {cores} core(s):')
  print(f'{"command":<46} | {"wall s":>7} | {"seq/s":>6}')
  print(
      f'{"--seeds=" + args.seeds + " --data_parallel":<46} | {population:7.1f} | '
      f'{sequences / population:6.0f}'
  )
  print(
      f'{f"{len(seeds)} x --seed=S, {cores} at a time":<46} | {singles:7.1f} | '
      f'{sequences / singles:6.0f}'
  )
  print(
      f'the population takes {population / singles:.2f}x the wall time of the single runs'
  )
  if args.output:
    with open(args.output, 'w') as f:
      json.dump(row, f, indent=2)


if __name__ == '__main__':
  main()
