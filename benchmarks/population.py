"""Populations against separate runs: aggregate sequences per second of the copy default.

`python -m benchmarks.population` prints, for K = 1, 2, 4, 8, 16, 64 members of the copy
experiment's default recipe (batch 1): the population's step time and aggregate
sequences per second on one device and, with as many devices as cores, split over them
(`--data_parallel`), with its members stepped one at a time, all at once and as many at
a time as the runner chooses when not told (`members_at_once`; marked *); and, as the
bar, K separate single runs on the same cores (a single run's step, timed in the same
process, min(K, devices) of them at a time). Each is timed as the runner's loop calls it
(`interleaved_step_seconds`). `--output=FILE` writes the rows as JSON. Times drift on a
shared machine: the table is one process's interleaved sample.
"""

import argparse
import faulthandler
import json
import os
import subprocess
import sys


def _copy_config(**changes):
  from experiments import common
  from experiments import copy as copy_experiment
  from ntm_jax.training import ExperimentConfig

  values = common.recipe(copy_experiment.DEFAULTS, 'ntm', copy_experiment.MODEL_DEFAULTS)
  values.update(changes)
  return ExperimentConfig(**dict(values, workdir='/unused'))


def interleaved_step_seconds(
    compiled: list[dict], repeats: int, calls_ahead: int = 10
) -> list[float]:
  """Median step time of each compiled step, timed in turn (one round of each at a time)
  so that the machine's drift falls on all of them alike. A round is what the runner's
  loop does: on several devices one call of `steps_per_call` steps, waited for; on one
  device `calls_ahead` calls of one step, dispatched ahead, then waited for."""
  import time

  import jax
  import numpy as np

  def one_round(c, state):
    if c['steps_per_call']:
      state, metrics = c['compiled'](state, c['steps_per_call'])
      jax.block_until_ready(metrics)
      return state, c['steps_per_call']
    for _ in range(calls_ahead):
      state, metrics = c['compiled'](state)
    jax.block_until_ready(metrics)
    return state, calls_ahead

  states = [one_round(c, c['state'])[0] for c in compiled]  # warm-up
  times = [[] for _ in compiled]
  for _ in range(repeats):
    for index, c in enumerate(compiled):
      start = time.perf_counter()
      states[index], steps = one_round(c, states[index])
      times[index].append((time.perf_counter() - start) / steps)
  return [float(np.median(t)) for t in times]


def population_rows(sizes: list[int], devices: int, repeats: int) -> list[dict]:
  """Step times of the populations, in this process with `devices` CPU devices: on one
  device, or split over all of them (then K must divide); one at a time and all at
  once; each interleaved with a single run's step, whose time is the bar: K separate
  runs, min(K, devices) at a time, one per device."""
  from ntm_jax import training

  training.tune_cpu_compiler()
  training.select_accelerator('cpu', cpu_devices=devices)
  from benchmarks.measure import measure
  from ntm_jax.tasks import CopyTask
  from ntm_jax.training import loop
  from ntm_jax.training import population

  rows = []
  for size in sizes:
    if size % devices:
      continue
    # One at a time, all at once, and what the runner chooses when not told.
    per_device = size // devices
    chosen = min(population.automatic_members_at_once('cpu') or per_device, per_device)
    variants = sorted({1, chosen, per_device})
    # Over several devices the runner's loop runs several steps per call.
    mesh = population.make_population_mesh(size) if devices > 1 else None
    compiled = [
        measure(
            _copy_config(
                seeds=tuple(range(size)),
                data_parallel=devices > 1,
                members_at_once=at_once,
            ),
            CopyTask(),
            0,
            steps_per_call=loop.steps_in_one_call(mesh, size) or 0,
        )
        for at_once in variants
    ]
    compiled.append(measure(_copy_config(), CopyTask(), 0))  # a single run
    *times, single = interleaved_step_seconds(compiled, repeats)
    separate = min(size, devices) / single
    for at_once, seconds, result in zip(variants, times, compiled):
      rows.append(
          dict(
              population=size,
              devices=devices,
              members_at_once=at_once,
              runner_default=at_once == chosen,
              step_seconds=seconds,
              sequences_per_second=size / seconds,
              single_run_step_seconds=single,
              separate_runs_sequences_per_second=separate,
              compile_seconds=result['compile_seconds'],
          )
      )
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
      '--sizes', default='1,2,4,8,16,64', help='Population sizes K, comma-separated.'
  )
  parser.add_argument(
      '--repeats',
      type=int,
      default=20,
      help='Timed rounds per row (a round: 10 steps on one device, one '
      "call of the loop's steps on several).",
  )
  parser.add_argument('--output', default=None, help='Also write the rows as JSON here.')
  parser.add_argument(
      '--stall_seconds',
      type=int,
      default=1800,
      help='Dump its stack and exit if one measurement process takes ' 'longer.',
  )
  parser.add_argument(
      '--devices',
      type=int,
      default=0,
      help='Internal: measure with this many devices and print JSON rows.',
  )
  args = parser.parse_args()
  sizes = [int(k) for k in args.sizes.split(',')]
  if args.devices:
    faulthandler.dump_traceback_later(args.stall_seconds, exit=True)
    print(json.dumps(population_rows(sizes, args.devices, args.repeats)))
    return

  from ntm_jax.training import backend

  cores = backend.usable_cores()
  print(
      f'copy default (batch 1), {cores} cores. Bar: K separate single runs, one per '
      'device at a time, timed in the same process.',
      flush=True,
  )
  print(
      f'{"K":>4} | {"devices":>7} | {"at once":>7} | {"step ms":>8} | '
      f'{"seq/s (all)":>11} | {"per member":>10} | {"separate runs":>13} | '
      f'{"ratio":>6}'
  )
  rows = []
  # A process per device count and size: the one-device rows in a process with one
  # device, and no process runs long (BUILD_NOTES.md, "Open problems": a CPU process
  # that compiles many population steps has hung in XLA's execution semaphore).
  for devices, size in [(d, k) for d in sorted({1, cores}) for k in sizes if k % d == 0]:
    child = subprocess.run(
        [
            sys.executable,
            '-m',
            'benchmarks.population',
            f'--sizes={size}',
            f'--repeats={args.repeats}',
            f'--devices={devices}',
            f'--stall_seconds={args.stall_seconds}',
        ],
        env=dict(os.environ, JAX_PLATFORMS='cpu'),
        capture_output=True,
        text=True,
    )
    if child.returncode:
      sys.exit(
          f'error: the {devices}-device measurement of K={size} failed:\n'
          f'{child.stderr[-3000:]}'
      )
    for row in json.loads(child.stdout.strip().splitlines()[-1]):
      rows.append(row)
      size, aggregate = row['population'], row['sequences_per_second']
      bar = row['separate_runs_sequences_per_second']
      at_once = f'{"*" if row["runner_default"] else ""}{row["members_at_once"]}'
      print(
          f'{size:>4} | {devices:>7} | {at_once:>7} | '
          f'{1e3 * row["step_seconds"]:8.2f} | {aggregate:11.1f} | '
          f'{aggregate / size:10.1f} | {bar:13.1f} | {aggregate / bar:5.2f}x',
          flush=True,
      )
  if args.output:
    with open(args.output, 'w') as f:
      json.dump(dict(cores=cores, rows=rows), f, indent=1)


if __name__ == '__main__':
  main()
