"""The run's directory: its lock, its metrics log and its config record."""

import contextlib
import json
import os

try:
  import fcntl
except ImportError:  # fcntl is POSIX only: on Windows, runs go without the workdir lock
  fcntl = None

import jax

from ntm_jax.tasks.base import Task
from ntm_jax.training import metrics as metrics_lib
from ntm_jax.training.config import ExperimentConfig


class WorkdirMismatchError(ValueError):
  """The workdir holds a run of another model: it cannot be resumed with these flags."""


class WorkdirBusyError(RuntimeError):
  """Another training run holds the workdir: the two would overwrite each other's saves."""


class WorkdirError(ValueError):
  """The workdir cannot hold a run: it is a file, or cannot be written."""


def is_writer() -> bool:
  """Whether this process writes the run's files (metrics, config, report, figures): in
  a multi-process run process 0 alone, since every process computes the same values.
  Orbax coordinates the checkpoints' writes itself."""
  return jax.process_index() == 0


def write_whole(path: str, text: str) -> None:
  """Writes `path` whole or not at all (a new file renamed over the old): another process
  reading it, or a resume after a kill mid-write, finds the old file or the new one."""
  part = f'{path}.part-{os.getpid()}'
  with open(part, 'w') as f:
    f.write(text)
  os.replace(part, path)


def prepare(workdir: str, eval_only: bool = False) -> str:
  """The workdir as an absolute path, created if needed; a WorkdirError, naming the flag,
  if it is a file or (for training) cannot be written."""
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(
        f'--workdir={workdir} is a file, not a directory; choose a '
        'directory (it is created if missing).'
    )
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as error:
    raise WorkdirError(
        f'--workdir={workdir} cannot be created ({error.strerror}); '
        'choose a directory you can write to.'
    ) from None
  if not eval_only and not os.access(path, os.W_OK | os.X_OK):
    raise WorkdirError(
        f'--workdir={workdir} cannot be written; choose a directory you ' 'can write to.'
    )
  return path


@contextlib.contextmanager
def lock(workdir: str):
  """An exclusive lock on the workdir for as long as this process trains in it.

  One lock file per JAX process, so that the processes of one multi-host run share a
  workdir while a second launch on it stops at once. The operating system releases the
  lock when the process ends, however it ends, so a killed run never leaves it behind.
  """
  if fcntl is None:
    yield
    return
  with open(os.path.join(workdir, f'.run-{jax.process_index()}.lock'), 'a+') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or 'unknown'
      raise WorkdirBusyError(
          f'--workdir={workdir} is in use by another run (process {holder}). Wait for it '
          'to end (after SIGTERM or Ctrl-C it saves a checkpoint first, then exits), or '
          'choose another --workdir.'
      ) from None
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


class MetricsLog:
  """metrics.jsonl in the workdir: one JSON object per logged train window or eval."""

  def __init__(self, workdir: str, resume_step: int):
    self.path = os.path.join(workdir, metrics_lib.LOG_NAME)
    if not is_writer():
      return
    # A resumed run repeats the steps after its checkpoint: drop what they logged before.
    kept = [record for record in self.read(workdir) if record['step'] <= resume_step]
    write_whole(self.path, ''.join(json.dumps(record) + '\n' for record in kept))

  @staticmethod
  def read(workdir: str) -> list[dict]:
    """The workdir's records; none for a fresh workdir."""
    try:
      return metrics_lib.read_log(workdir)
    except FileNotFoundError:
      return []

  def write(self, record: dict) -> None:
    if not is_writer():
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')


def record_config(
    workdir: str, config: ExperimentConfig, task: Task, resuming: bool
) -> None:
  """Refuses to resume a checkpoint its state does not fit; records the config.

  The model's shapes and the task's input and output widths fix the parameters, the
  optimiser and whether its rate is scheduled fix the optimiser state: a change to any of
  them would fail inside Orbax's restore. Other task settings may change on resuming (a
  curriculum does), but not unnoticed: the run says which.
  """
  path = os.path.join(workdir, 'config.json')
  current = dict(
      task=task.name,
      **config.model_fields(),
      input_size=task.input_size,
      output_size=task.output_size,
  )
  settings = task.settings()
  if resuming and os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    # Another task or model first: no layout of seeds would resume it. Only what the
    # file records is compared: one from before the optimiser fields, the task's widths
    # or its settings were recorded cannot tell about them.
    fixed = dict(current, optimizer=config.optimizer, lr_schedule=config.lr_schedule)
    changed = ', '.join(
        f'{name}: {saved[name]!r} -> {value!r}'
        for name, value in fixed.items()
        if name in saved and saved[name] != value
    )
    if changed:
      raise WorkdirMismatchError(
          f'--workdir={workdir} holds a run with a different model, task width or '
          f'optimiser ({changed}); resume it with the same flags or choose a new '
          '--workdir.'
      )
    saved_seeds = tuple(saved.get('seeds') or ())
    if bool(saved_seeds) != bool(config.seeds):
      if saved_seeds:
        held, wanted = f'a population (seeds {_seed_list(saved_seeds)})', 'a single run'
        own = f'--seeds={_seed_list(saved_seeds)}'
      else:
        held = f'a single run (seed {saved.get("seed", 0)})'
        wanted = 'a population (--seeds, or --population above 1)'
        own = f'--population=1 --seed={saved.get("seed", 0)}'
      raise WorkdirMismatchError(
          f'--workdir={workdir} holds {held}; it cannot resume as {wanted}. Resume it '
          f'with {own} or choose a new --workdir.'
      )
    if saved_seeds != config.seeds:
      raise WorkdirMismatchError(
          f'--workdir={workdir} holds a population of seeds {_seed_list(saved_seeds)}, '
          f'not {_seed_list(config.seeds)}; resume it with --seeds='
          f'{_seed_list(saved_seeds)} or choose a new --workdir.'
      )
    recorded = saved.get('task_settings')
    if recorded is not None:
      now = json.loads(json.dumps(settings))  # as JSON holds them: tuples as lists
      changed = ', '.join(
          f'{name}: {recorded.get(name)!r} -> {now[name]!r}'
          for name in now
          if recorded.get(name) != now[name]
      )
      if changed:
        print(
            f'Note: resuming with other task settings than {path} records '
            f'({changed}); training goes on with the new ones.',
            flush=True,
        )
  if not is_writer():
    return
  record = dict(
      current,
      **{k: v for k, v in vars(config).items() if k not in current},
      task_settings=settings,
  )
  write_whole(path, json.dumps(record, indent=2))


def _seed_list(seeds) -> str:
  return ','.join(str(seed) for seed in seeds)
