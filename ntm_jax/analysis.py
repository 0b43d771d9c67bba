"""Analyses of trained models and their training logs, on the host (NumPy): how a
priority-sort NTM sorts, and the cost spikes of converged runs.

Used by `python -m experiments.tools.priority_sort_heads` and `experiments.tools.spikes`;
the tasks themselves only sample data.
"""

import numpy as np

from ntm_jax.tasks.base import Batch


def write_placement(
    write_weights: np.ndarray, priorities: np.ndarray
) -> dict[str, np.ndarray]:
  """How each write head places the inputs, as means over a batch.

  Two algorithms sort the task (docs/RESULTS.md): the paper's layout (Fig. 17), where a
  write head puts each input at a slot set by its priority and the read heads walk those
  slots in order, and search, where a write head gives each input a slot of its own in
  no particular order and the read keys find the highest priority not yet output.

  Args:
    write_weights: (b, n, H, N) the H write weightings at the n input steps.
    priorities: (b, n) the inputs' priorities.

  Returns:
    (H,) arrays:
    peak: the largest entry of an input's weighting (1: one slot; 1/N: spread evenly).
    slots: how many distinct slots the n inputs' largest entries fall on.
    order: how consistently the slot moves one way around the memory as the priority
      rises: over the inputs taken in order of priority, |mean sign| of the circular
      step from one input's slot to the next one's (the shorter way round; steps that
      stay on a slot are left out). 1 for a layout by priority, in either direction and
      wrapping around the memory or not; about 0.2 for 20 inputs on random slots.
  """
  write_weights, priorities = np.asarray(write_weights), np.asarray(priorities)
  num_slots = write_weights.shape[-1]
  peak = write_weights.max(-1).mean((0, 1))
  slots = write_weights.argmax(-1)  # (b, n, H)
  distinct = np.mean(
      [
          [len(np.unique(slots[b, :, h])) for h in range(slots.shape[2])]
          for b in range(slots.shape[0])
      ],
      axis=0,
  )
  by_priority = np.take_along_axis(
      np.moveaxis(slots, 2, 1), np.argsort(priorities, -1)[:, None], -1
  )  # (b, H, n)
  steps = (np.diff(by_priority, axis=-1) + num_slots // 2) % num_slots - num_slots // 2
  signs = np.sign(steps)
  moves = np.count_nonzero(signs, axis=-1)
  order = np.where(moves > 0, np.abs(signs.sum(-1)) / np.maximum(moves, 1), 0.0).mean(0)
  return dict(peak=peak, slots=distinct, order=order)


# A write head places the inputs when their weightings peak above PLACING_PEAK on
# average. It lays them out by priority when its order is above LAYOUT_ORDER (inputs on
# random slots give about 0.2, the layouts measured so far 0.6-0.9 with their collisions
# and slips), and places them for search when its order is below SEARCH_ORDER with
# about one slot per input.
PLACING_PEAK, LAYOUT_ORDER, SEARCH_ORDER = 0.5, 0.5, 0.3


def sorting_algorithm(
    placement: dict[str, np.ndarray], num_inputs: int
) -> tuple[str | None, int | None]:
  """('layout' or 'search', the write head that shows it) from `write_placement`, or
  (None, None) when no write head places the inputs either way."""
  placing = [head for head, peak in enumerate(placement['peak']) if peak > PLACING_PEAK]
  for head in placing:
    if placement['order'][head] > LAYOUT_ORDER:
      return 'layout', head
  for head in placing:
    if (
        placement['order'][head] < SEARCH_ORDER
        and placement['slots'][head] >= 0.9 * num_inputs
    ):
      return 'search', head
  return None, None


def bit_errors_by_priority_gap(
    logits: np.ndarray,
    batch: Batch,
    num_inputs: int,
    edges=(0.0, 0.01, 0.03, 0.06, 0.1, np.inf),
) -> dict[str, float]:
  """Bit errors per output vector, grouped by how close its priority is to another.

  The gap of an output is the distance from its input's priority to the nearest other
  input's priority: close priorities are where a sorting NTM goes wrong.

  Args:
    logits: (b, T, bits) the model's outputs on `batch`, a priority-sort batch of
      `num_inputs` inputs.
    edges: the gaps' bin edges; a bin holds gaps in [low, high).

  Returns:
    {'low-high': mean bit errors per output vector in that bin}, NaN for an empty bin.
  """
  inputs, targets, mask = (np.asarray(array) for array in batch)
  priorities = inputs[:, :num_inputs, -2]  # the channel before the delimiter
  distance = np.abs(priorities[:, :, None] - priorities[:, None, :])
  distance[:, np.arange(num_inputs), np.arange(num_inputs)] = np.inf
  gap = distance.min(-1)
  scored = mask > 0
  num_outputs = int(scored[0].sum())
  ranked = np.argsort(-priorities, axis=1)[:, :num_outputs]  # output k is input ranked[k]
  output_gaps = np.take_along_axis(gap, ranked, axis=1)
  errors = ((np.asarray(logits) > 0) != (targets > 0.5)).sum(-1)
  output_errors = errors[scored].reshape(len(errors), num_outputs)
  result = {}
  for low, high in zip(edges[:-1], edges[1:]):
    selected = (output_gaps >= low) & (output_gaps < high)
    result[f'{low:g}-{high:g}'] = (
        float(output_errors[selected].mean()) if selected.any() else float('nan')
    )
  return result


def cost_spikes(
    records: list[dict], member: int | None = None, bit_errors: float = 0.2
) -> tuple[float | None, list[dict]]:
  """The cost spikes of a converged run, from its metrics log (metrics.jsonl).

  After the run's first evaluation below 0.1 bit errors per sequence (in its last
  attempt, after any restart), a spike is a stretch of consecutive logged training
  windows whose mean bit errors per sequence exceed `bit_errors`. Returns the median
  gradient norm of the windows after convergence (None if the run never converged) and,
  per spike, its first and peak steps, the peak window's mean bit errors and gradient
  norm, the gradient norms of the windows just before and after the spike and the
  largest step gradient in it (where the log records it), each as a multiple of that
  median. `member` picks a population's member.
  """
  mine = [r for r in records if r.get('member') == member]
  restarts = [r['step'] for r in mine if r.get('kind') == 'restart']
  start = restarts[-1] if restarts else 0
  converged = next(
      (
          r['step']
          for r in mine
          if r.get('kind') == 'eval'
          and r['step'] > start
          and r['train']['bit_errors'] < 0.1
      ),
      None,
  )
  if converged is None:
    return None, []
  windows = [r for r in mine if r.get('kind') == 'train' and r['step'] > converged]
  if not windows:
    return None, []
  baseline = float(np.median([w['grad_norm'] for w in windows]))
  spikes, index = [], 0
  while index < len(windows):
    if windows[index]['bit_errors'] <= bit_errors:
      index += 1
      continue
    end = index
    while end + 1 < len(windows) and windows[end + 1]['bit_errors'] > bit_errors:
      end += 1
    peak = max(windows[index : end + 1], key=lambda w: w['bit_errors'])
    before = windows[index - 1]['grad_norm'] if index > 0 else None
    after = windows[end + 1]['grad_norm'] if end + 1 < len(windows) else None
    ratio = lambda norm: None if norm is None else norm / baseline  # noqa: E731
    spikes.append(
        dict(
            step=windows[index]['step'],
            peak_step=peak['step'],
            bit_errors=peak['bit_errors'],
            grad_norm=peak['grad_norm'],
            grad_norm_ratio=ratio(max(w['grad_norm'] for w in windows[index : end + 1])),
            before_ratio=ratio(before),
            after_ratio=ratio(after),
            # Logs that record each window's largest step gradient: that step's.
            largest_step_ratio=ratio(
                max(
                    (
                        w['grad_norm_max']
                        for w in windows[index : end + 1]
                        if 'grad_norm_max' in w
                    ),
                    default=None,
                )
            ),
        )
    )
    index = end + 1
  return baseline, spikes
