"""Steps dispatched ahead against waiting for each: the copy default on CPU devices.

`python -m benchmarks.dispatch` times the copy default's training step (batch 1) in the
two ways a loop can call it: dispatching each step as soon as the previous one is
queued (JAX's asynchronous dispatch), or waiting for each step's outputs before the next
(what `training.loop` does when a step spans several CPU devices). Rows: one run on one
device, and populations of K members split over one device per core. Each row's two
ways alternate in rounds of `--steps` steps in one process, so that the machine's drift
falls on both. A data-parallel run's step is not timed dispatched ahead: on this 2-core
machine its all-reduce deadlocks so (XLA aborts the process).
"""

import argparse
import json
import os
import subprocess
import sys
import time

MODES = ('ahead', 'waiting')


def dispatch_row(size: int, devices: int, steps: int, rounds: int) -> dict:
  """Median seconds per step of each way of dispatching, in this process with
  `devices` CPU devices: one run (`size` 0) or a population of `size` over them."""
  from ntm_jax import training

  training.select_accelerator('cpu', cpu_devices=devices)
  import jax
  import numpy as np

  from benchmarks.measure import measure
  from benchmarks.population import _copy_config
  from ntm_jax.tasks import CopyTask

  config = (
      _copy_config(seeds=tuple(range(size)), data_parallel=devices > 1)
      if size
      else _copy_config()
  )
  compiled = measure(config, CopyTask(), 0)
  step, state = compiled['compiled'], compiled['state']

  def run(state, mode):
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state)
      if mode == 'waiting':
        jax.block_until_ready(metrics)
    jax.block_until_ready(state)
    return state, (time.perf_counter() - start) / steps

  state, _ = run(state, 'waiting')  # warm-up
  seconds = {mode: [] for mode in MODES}
  for _ in range(rounds):
    for mode in MODES:
      state, per_step = run(state, mode)
      seconds[mode].append(per_step)
  return dict(
      population=size,
      devices=devices,
      steps=steps,
      rounds=rounds,
      **{f'{mode}_step_seconds': float(np.median(seconds[mode])) for mode in MODES},
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
      '--sizes',
      default='2,4,8',
      help='Population sizes K over one device per core, comma-separated.',
  )
  parser.add_argument('--steps', type=int, default=300, help='Steps per round.')
  parser.add_argument(
      '--rounds', type=int, default=6, help='Rounds of each way, alternating.'
  )
  parser.add_argument('--output', default=None, help='Also write the rows as JSON here.')
  parser.add_argument(
      '--row',
      default=None,
      help='Internal: measure one row, SIZE:DEVICES, and print it as JSON.',
  )
  args = parser.parse_args()
  if args.row:
    size, devices = map(int, args.row.split(':'))
    print(json.dumps(dispatch_row(size, devices, args.steps, args.rounds)))
    return

  from ntm_jax.training import backend

  cores = backend.usable_cores()
  print(
      f'copy default (batch 1), {cores} cores; ms per step, median of {args.rounds} '
      f'rounds of {args.steps} steps each way.',
      flush=True,
  )
  print(
      f'{"run":>22} | {"devices":>7} | {"ahead":>8} | {"waiting":>8} | '
      f'{"waiting is":>10}'
  )
  rows = []
  # A process per row: each needs its own device count.
  wanted = [(0, 1)] + [
      (k, cores) for k in map(int, args.sizes.split(',')) if k % cores == 0
  ]
  for size, devices in wanted:
    child = subprocess.run(
        [
            sys.executable,
            '-m',
            'benchmarks.dispatch',
            f'--row={size}:{devices}',
            f'--steps={args.steps}',
            f'--rounds={args.rounds}',
        ],
        env=dict(os.environ, JAX_PLATFORMS='cpu'),
        capture_output=True,
        text=True,
    )
    if child.returncode:
      sys.exit(
          f'error: the row K={size} on {devices} device(s) failed:\n'
          f'{child.stderr[-3000:]}'
      )
    row = json.loads(child.stdout.strip().splitlines()[-1])
    rows.append(row)
    ahead, waiting = row['ahead_step_seconds'], row['waiting_step_seconds']
    name = f'population of {size}' if size else 'one run'
    print(
        f'{name:>22} | {devices:>7} | {1e3 * ahead:8.2f} | {1e3 * waiting:8.2f} | '
        f'{ahead / waiting:9.2f}x',
        flush=True,
    )
  if args.output:
    with open(args.output, 'w') as f:
      json.dump(dict(cores=cores, rows=rows), f, indent=1)


if __name__ == '__main__':
  main()
