"""First contact with an accelerator: does the project run there, and where does a step's time go?

`python -m benchmarks.gpu_smoke --output_dir=DIR` (on a GPU machine; `--accelerator=cpu
--quick` runs the same logic on a CPU at toy sizes, as the test suite does) runs, each
part in its own process with its own time limit, so that one that hangs or breaks leaves
the others' results:

  versions   the devices, jax, jaxlib and their plugins (`jax.print_environment_info`);
  tests      a slice of the test suite on the accelerator: the pure functions, the cell,
             a training step, a checkpoint round trip and the `gpu`-marked tests;
  step_time  `benchmarks.step_time`'s speed rows (LSTM and feed-forward controllers) at
             batch 1, 8, 64 and 512, float32 and bfloat16 dense layers: step time,
             sequences per second, compile time, peak memory;
  loop       the copy experiment's own training step at batch 1 and 128 with the time
             scan unrolled 1, 4 and 16 steps per loop iteration, each with XLA's command
             buffers (CUDA graphs) off, as XLA defaults them, and extended to the whole
             time loop (COMMAND_BUFFERS below names the XLA_FLAGS); for each, the
             kernels the compiled step launches per time step, forward and backward,
             counted in its optimised HLO;
  population the copy default's population step (`--seeds`, all members at once) for K =
             1, 16 and 256 members of batch 1: step time, aggregate sequences per
             second, compile time, peak memory;
  copy       `python -m experiments.copy --accelerator=...` for a fixed number of steps,
             then resumed for a few more: its sequences per second, against
             `--cpu_reference` (the same command's figures on a CPU).

It prints one table per part and writes into `--output_dir` three files: `results.json`,
`step_time.json` and `children.log` (every child's output, one after another; the device
tool returns at most 8 files). Nothing here asserts a time.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from benchmarks.hlo import count_kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ('versions', 'tests', 'copy', 'loop', 'population', 'step_time')  # in this order
PLATFORMS = {'cpu': 'cpu', 'gpu': 'cuda', 'tpu': 'tpu'}

# XLA's command buffers record a sequence of kernels once as a CUDA graph and replay it
# with one launch. `--xla_gpu_enable_command_buffer` lists the kinds of commands recorded
# (empty: none; `+KIND` adds to XLA's default list, which holds fusions and library calls
# but not control flow); WHILE records a whole loop, so that the time scan's iterations
# replay without a launch from the host per kernel. `--xla_gpu_graph_min_graph_size`
# (default 5) is the fewest commands XLA turns into a graph. The CPU compiler parses and
# ignores these flags, so the same settings run there.
COMMAND_BUFFERS = {
    'off': '--xla_gpu_enable_command_buffer=',
    'default': '',
    'while': (
        '--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL '
        '--xla_gpu_graph_min_graph_size=1'
    ),
}

# The slice of the suite that shows the maths, the cell, a training step and Orbax work on
# the device; the quick (CPU) mode runs a fast part of it, to test this script's plumbing.
TEST_SLICE = [
    'tests/test_addressing.py',
    'tests/test_memory.py',
    'tests/test_cell.py',
    'tests/test_gpu.py',
    'tests/test_training.py::test_checkpoint_round_trip',
    'tests/test_training.py::test_resumed_run_equals_uninterrupted_run',
    'tests/test_trained.py::test_shipped_run_keeps_its_metrics[copy_ntm]',
]
QUICK_TEST_SLICE = ['tests/test_memory.py', 'tests/test_gpu.py']


def copy_default_config(batch_size: int):
  """The copy experiment's default configuration (`python -m experiments.copy`)."""
  from experiments import common
  from experiments import copy
  from ntm_jax.training import ExperimentConfig

  values = dict(
      common.recipe(copy.DEFAULTS, 'ntm', copy.MODEL_DEFAULTS), batch_size=batch_size
  )
  return ExperimentConfig(workdir='/unused', **values)


def loop_worker(args) -> None:
  """The `loop` part's child: one command-buffer setting (its XLA_FLAGS are set)."""
  from ntm_jax.training import backend

  if os.environ.get('JAX_PLATFORMS') == 'cpu':
    backend.tune_cpu_compiler()  # as the runners do on the CPU, before JAX starts
  import jax

  from benchmarks.measure import measure
  from ntm_jax.tasks import CopyTask
  from ntm_jax.training import factory

  task = CopyTask(max_length=args.max_length, eval_lengths=(args.max_length,))
  num_steps = 2 * task.max_length + 1
  for batch_size in args.batch_sizes:
    for unroll in args.unrolls:
      config = copy_default_config(batch_size)
      model = factory.build_model(config, task).clone(unroll=unroll)
      row = measure(config, task, args.repeats, model=model, keep_hlo=True)
      kernels = count_kernels(row.pop('hlo'), num_steps)
      row.update(
          batch_size=batch_size,
          unroll=unroll,
          kernels=kernels,
          sequences_per_second=batch_size / row['step_seconds'],
          platform=jax.default_backend(),
      )
      print(json.dumps(row), flush=True)


def population_worker(args) -> None:
  """The `population` part's child: the copy default's population step per size."""
  from ntm_jax.training import backend

  if os.environ.get('JAX_PLATFORMS') == 'cpu':
    backend.tune_cpu_compiler()
  import jax

  from benchmarks.measure import measure
  from ntm_jax.tasks import CopyTask

  task = CopyTask(max_length=args.max_length, eval_lengths=(args.max_length,))
  for members in args.population_sizes:
    config = copy_default_config(1).replace(seeds=tuple(range(members)))
    row = measure(config, task, args.repeats)
    row.update(
        members=members,
        sequences_per_second=members / row['step_seconds'],
        platform=jax.default_backend(),
    )
    print(json.dumps(row), flush=True)


class Smoke:
  """Runs the parts as child processes and gathers their results."""

  def __init__(self, args):
    self.args = args
    self.output_dir = os.path.abspath(args.output_dir)
    os.makedirs(self.output_dir, exist_ok=True)
    self.results = dict(accelerator=args.accelerator, quick=args.quick, parts={})
    self.deadline = time.time() + args.budget
    open(os.path.join(self.output_dir, 'children.log'), 'w').close()
    self.env = dict(
        os.environ,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
        PYTHONUNBUFFERED='1',
        JAX_PLATFORMS=PLATFORMS[args.accelerator],
    )

  def child(
      self, name: str, command: list[str], timeout: float, env: dict | None = None
  ) -> tuple[int | str, str]:
    """Runs a child process; its output goes to children.log; returns (status, output).

    Its time limit is `timeout` or what is left of the whole script's budget, if less.
    """
    start = time.time()
    timeout = min(timeout, self.deadline - start)
    if timeout < 5:
      print(f'[{name}: skipped, the budget of {self.args.budget:.0f} s is spent]')
      return 'skipped: out of time', ''
    try:
      result = subprocess.run(
          command,
          cwd=ROOT,
          env=env or self.env,
          timeout=timeout,
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      status, output = result.returncode, result.stdout
    except subprocess.TimeoutExpired as error:
      status = f'timed out after {timeout:.0f} s'
      output = (
          error.stdout.decode()
          if isinstance(error.stdout, bytes)
          else (error.stdout or '')
      )
    with open(os.path.join(self.output_dir, 'children.log'), 'a') as f:
      f.write(f'===== {name}: {status} =====\n{output}\n')
    print(f'[{name}: {status} in {time.time() - start:.0f} s]', flush=True)
    return status, output

  def save(self) -> None:
    with open(os.path.join(self.output_dir, 'results.json'), 'w') as f:
      json.dump(self.results, f, indent=2)

  def versions(self) -> dict:
    status, output = self.child(
        'versions',
        [
            sys.executable,
            '-c',
            (
                'import jax, jaxlib; jax.print_environment_info(); '
                'd = jax.devices(); print("DEVICES", d[0].platform, d[0].device_kind, len(d)); '
                'print("VERSIONS", jax.__version__, jaxlib.__version__)'
            ),
        ],
        120,
    )
    print(output.strip())
    found = dict(status=status)
    for line in output.splitlines():
      if line.startswith('DEVICES '):
        _, platform, *kind, count = line.split()
        found.update(platform=platform, device_kind=' '.join(kind), devices=int(count))
      elif line.startswith('VERSIONS '):
        found.update(jax=line.split()[1], jaxlib=line.split()[2])
    return found

  def tests(self) -> dict:
    tests = QUICK_TEST_SLICE if self.args.quick else TEST_SLICE
    env = dict(
        self.env,
        JAX_PLATFORMS=f'{self.env["JAX_PLATFORMS"]},cpu'
        if self.args.accelerator != 'cpu'
        else 'cpu',
    )  # gpu tests compare to the CPU
    status, output = self.child(
        'tests',
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-rfEs', *tests],
        self.args.test_timeout,
        env,
    )
    summary = next(
        (
            line
            for line in reversed(output.splitlines())
            if re.search(r'\d+ (passed|failed|error|skipped)', line)
        ),
        '',
    )
    failures = [
        line for line in output.splitlines() if line.startswith(('FAILED', 'ERROR'))
    ]
    print(f'tests: {summary or "no summary"}')
    for line in failures:
      print(f'  {line}')
    return dict(status=status, summary=summary, failures=failures)

  def step_time(self) -> dict:
    output_json = os.path.join(self.output_dir, 'step_time.json')
    batch_sizes = '1' if self.args.quick else '1,8,64,512'
    status, output = self.child(
        'step_time',
        [
            sys.executable,
            '-m',
            'benchmarks.step_time',
            f'--batch_sizes={batch_sizes}',
            '--dtypes=float32,bfloat16',
            '--parallel_batch_sizes=',
            '--memory_sizes=',
            '--lengths=',
            '--nodense_only',
            f'--repeats={self.args.repeats}',
            '--packing_members=' + ('1' if self.args.quick else '1,4'),
            f'--output={output_json}',
        ],
        self.args.part_timeout,
    )
    print(output.strip()[-4000:])
    rows = []
    if os.path.exists(output_json):
      with open(output_json) as f:
        rows = json.load(f)['speed']
    return dict(status=status, rows=rows)

  def loop(self) -> dict:
    rows, statuses = [], {}
    for setting in self.args.command_buffers:
      env = dict(
          self.env,
          XLA_FLAGS=' '.join(
              filter(None, (os.environ.get('XLA_FLAGS', ''), COMMAND_BUFFERS[setting]))
          ),
      )
      status, output = self.child(
          f'loop_{setting}',
          [
              sys.executable,
              '-m',
              'benchmarks.gpu_smoke',
              '--worker=loop',
              f'--max_length={self.args.max_length}',
              f'--repeats={self.args.repeats}',
              '--unrolls=' + ','.join(map(str, self.args.unrolls)),
              '--batch_sizes=' + ','.join(map(str, self.args.batch_sizes)),
          ],
          self.args.part_timeout,
          env,
      )
      statuses[setting] = status
      # One JSON line a row as each is measured: a child stopped by its time limit still
      # gives the rows it finished.
      rows += [
          dict(json.loads(line), command_buffers=setting)
          for line in output.splitlines()
          if line.startswith('{')
      ]
    print(
        f'Copy default step (T = {2 * self.args.max_length + 1}): unroll x command '
        'buffers; kernels per time step from the optimised HLO'
    )
    print(
        f'{"buffers":>8} {"batch":>6} {"unroll":>6} {"step ms":>9} {"seq/s":>9} '
        f'{"compile s":>9} {"fwd/step":>9} {"bwd/step":>9} {"kernels":>8} '
        f'{"us/kernel":>9} {"graphs":>6}'
    )
    for row in rows:
      k = row['kernels']
      print(
          f'{row["command_buffers"]:>8} {row["batch_size"]:>6} {row["unroll"]:>6} '
          f'{1e3 * row["step_seconds"]:9.2f} {row["sequences_per_second"]:9.1f} '
          f'{row["compile_seconds"]:9.1f} {k["forward_per_step"]:9.1f} '
          f'{k["backward_per_step"]:9.1f} {k["total"]:8d} '
          f'{1e6 * row["step_seconds"] / max(k["total"], 1):9.2f} '
          f'{k["command_buffers"]:6d}'
      )
    return dict(status=statuses, rows=rows)

  def population(self) -> dict:
    status, output = self.child(
        'population',
        [
            sys.executable,
            '-m',
            'benchmarks.gpu_smoke',
            '--worker=population',
            f'--max_length={self.args.max_length}',
            f'--repeats={self.args.repeats}',
            '--population_sizes=' + ','.join(map(str, self.args.population_sizes)),
        ],
        self.args.part_timeout,
    )
    rows = [json.loads(line) for line in output.splitlines() if line.startswith('{')]
    print(
        f'Copy default population step (batch 1 each, T = {2 * self.args.max_length + 1})'
    )
    print(f'{"members":>8} {"step ms":>9} {"seq/s":>9} {"compile s":>9} {"peak MiB":>9}')
    for row in rows:
      peak = row['device_peak_bytes'] or row['peak_bytes'] or 0
      print(
          f'{row["members"]:>8} {1e3 * row["step_seconds"]:9.2f} '
          f'{row["sequences_per_second"]:9.1f} {row["compile_seconds"]:9.1f} '
          f'{peak / 2**20:9.1f}'
      )
    return dict(status=status, rows=rows)

  def copy(self) -> dict:
    steps, more = self.args.copy_steps, self.args.copy_steps // 10
    with tempfile.TemporaryDirectory(dir=self.output_dir) as workdir:
      command = [
          sys.executable,
          '-m',
          'experiments.copy',
          f'--accelerator={self.args.accelerator}',
          f'--workdir={workdir}',
          f'--log_every={max(steps // 10, 1)}',
          f'--eval_every={steps}',
          f'--checkpoint_every={steps}',
      ]
      if self.args.quick:
        command += [
            '--max_length=4',
            '--eval_lengths=6',
            '--eval_batch_size=8',
            '--noplots',
        ]
      start = time.time()
      status, output = self.child(
          'copy', command + [f'--train_steps={steps}'], self.args.part_timeout
      )
      wall = time.time() - start
      resumed, resume_output = self.child(
          'copy_resume',
          command + [f'--train_steps={steps + more}'],
          self.args.part_timeout,
      )
      records = []
      if os.path.exists(os.path.join(workdir, 'metrics.jsonl')):
        with open(os.path.join(workdir, 'metrics.jsonl')) as f:
          records = [json.loads(line) for line in f]
      figures = sorted(name for name in os.listdir(workdir) if name.endswith('.png'))
    print(output.strip()[-2500:])
    # The first window of each process holds its compilation: left out of the speed.
    train = [r for r in records if r['kind'] == 'train' and r['step'] <= steps][1:]
    speeds = sorted(r['sequences_per_second'] for r in train)
    result = dict(
        status=status,
        resume_status=resumed,
        wall_seconds=wall,
        steps=steps,
        sequences_per_second=speeds[len(speeds) // 2] if speeds else None,
        resumed_to=max((r['step'] for r in records), default=None),
        resumed='Resumed from the checkpoint at step' in resume_output,
        figures=figures,
    )
    line = (
        f'copy: {steps} steps in {wall:.0f} s wall (compilation and evaluation '
        f'included); median {result["sequences_per_second"] or 0:.1f} seq/s; '
        f'resumed to step {result["resumed_to"]}: {result["resumed"]}; '
        f'figures: {len(figures)}'
    )
    if self.args.cpu_reference and os.path.exists(self.args.cpu_reference):
      with open(self.args.cpu_reference) as f:
        reference = json.load(f)['parts']['copy']
      result['cpu_reference'] = reference
      if reference.get('sequences_per_second') and result['sequences_per_second']:
        line += (
            f'; the CPU reference: {reference["sequences_per_second"]:.1f} seq/s, '
            f'{result["sequences_per_second"] / reference["sequences_per_second"]:.2f}x'
        )
    print(line)
    return result

  def run(self) -> None:
    for part in PARTS:  # in their order, whatever the order given
      if part not in self.args.parts:
        continue
      print(f'\n=== {part} ===', flush=True)
      self.results['parts'][part] = getattr(self, part)()
      self.save()
    print(
        f'\nWrote {os.path.join(self.output_dir, "results.json")} '
        f'({time.time() - self.deadline + self.args.budget:.0f} s)'
    )


def _ints(text: str) -> list[int]:
  return [int(value) for value in text.split(',') if value]


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--accelerator', choices=sorted(PLATFORMS), default='gpu')
  parser.add_argument(
      '--quick', action='store_true', help='toy sizes, for a CPU and the test suite'
  )
  parser.add_argument(
      '--parts',
      type=lambda s: s.split(','),
      default=list(PARTS),
      help=f'comma-separated, of {",".join(PARTS)}',
  )
  parser.add_argument('--output_dir', default='gpu_smoke_out')
  parser.add_argument(
      '--cpu_reference',
      default=os.path.join(ROOT, 'benchmarks', 'gpu_smoke_cpu.json'),
      help="this script's results.json from a CPU run of the copy part",
  )
  parser.add_argument(
      '--command_buffers', type=lambda s: s.split(','), default=list(COMMAND_BUFFERS)
  )
  parser.add_argument('--unrolls', type=_ints, default=None)
  parser.add_argument('--batch_sizes', type=_ints, default=None)
  parser.add_argument('--max_length', type=int, default=None)
  parser.add_argument('--repeats', type=int, default=None)
  parser.add_argument('--copy_steps', type=int, default=None)
  parser.add_argument(
      '--budget',
      type=float,
      default=390,
      help='seconds for the whole script: a part that would run past it '
      'is stopped or skipped, and the results so far are kept',
  )
  parser.add_argument('--test_timeout', type=float, default=120)
  parser.add_argument(
      '--part_timeout', type=float, default=150, help='seconds for each child process'
  )
  parser.add_argument('--population_sizes', type=_ints, default=None)
  parser.add_argument('--worker', choices=('loop', 'population'), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  quick = args.quick
  for name, full, small in (
      ('unrolls', [1, 4, 16], [1, 2]),
      ('batch_sizes', [1, 128], [1, 4]),
      ('population_sizes', [1, 16, 256], [1, 2]),
      ('max_length', 20, 3),
      ('repeats', 10, 2),
      ('copy_steps', 2000, 20),
  ):
    if getattr(args, name) is None:
      setattr(args, name, small if quick else full)
  unknown = set(args.parts) - set(PARTS) or set(args.command_buffers) - set(
      COMMAND_BUFFERS
  )
  if unknown:
    parser.error(f'unknown --parts or --command_buffers value(s): {", ".join(unknown)}')
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.worker == 'loop':
    loop_worker(args)
  elif args.worker == 'population':
    population_worker(args)
  else:
    Smoke(args).run()


if __name__ == '__main__':
  main()
