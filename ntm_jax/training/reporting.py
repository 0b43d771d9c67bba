"""What a run prints: its progress line and its report tables."""

import sys

from ntm_jax.tasks.base import Task


class Progress:
  """A one-line progress bar on a terminal, plain log lines otherwise."""

  def __init__(self, total_steps: int):
    self.total_steps = total_steps
    self.interactive = sys.stderr.isatty()

  def update(
      self, step: int, sequences_per_second: float, cost: float, bit_errors: float
  ) -> None:
    done = step / self.total_steps
    line = (
        f'step {step}/{self.total_steps} [{"#" * int(20 * done):<20}] '
        f'{sequences_per_second:7.1f} seq/s  cost {cost:8.3f} bits  '
        f'bit errors {bit_errors:7.3f}'
    )
    if self.interactive:
      print('\r' + line, end='', file=sys.stderr, flush=True)
    else:
      print(line, flush=True)

  def newline(self) -> None:
    if self.interactive:
      print(file=sys.stderr, flush=True)


def format_report(task: Task, results: dict) -> str:
  has_reference = 'reference_cost' in next(iter(results.values()))
  header = f'{task.difficulty_name:>16} | cost (bits/seq) | bit errors/seq'
  if has_reference:
    header += ' | optimal cost'
  lines = [header, '-' * len(header)]
  for name, values in results.items():
    label = 'train mix' if name == 'train' else name
    line = f'{label:>16} | {values["cost"]:15.3f} | {values["bit_errors"]:14.3f}'
    if has_reference:
      line += f' | {values["reference_cost"]:12.3f}'
    lines.append(line)
  return '\n'.join(lines)
