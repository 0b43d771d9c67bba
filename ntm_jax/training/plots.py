"""PNG figures: learning curves (one run, or several compared) and the paper's Fig. 4/6
views of a run.

The weighting view shows, for one sequence, the inputs, targets and outputs over time and
each head's weighting over the memory slots: on copy the write head should step through
memory while the input is presented and the read head should follow it afterwards.
"""

import os

import jax
import matplotlib
import numpy as np

matplotlib.use('Agg')  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

from ntm_jax import models  # noqa: E402
from ntm_jax.training import metrics as metrics_lib  # noqa: E402


def learning_curve(workdir: str, path: str) -> None:
  """Cost per sequence (training windows) and eval bit errors against sequences seen.

  For a population (records with a 'member'), every member faintly and their median in
  bold.
  """
  records = metrics_lib.read_log(workdir)
  if not any('member' in r for r in records):
    learning_curves({None: workdir}, path)
    return
  fig, (ax_cost, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
  for kind, ax, value in (
      ('train', ax_cost, lambda r: r['cost']),
      ('eval', ax_err, lambda r: r['train']['bit_errors']),
  ):
    by_member = {}
    for r in records:
      if r.get('kind') == kind and not r.get('failed'):
        by_member.setdefault(r['member'], {})[r['sequences']] = value(r)
    for curve in by_member.values():
      ax.plot(list(curve), list(curve.values()), color='tab:blue', alpha=0.25, lw=0.8)
    sequences = sorted({s for curve in by_member.values() for s in curve})
    median = [np.median([c[s] for c in by_member.values() if s in c]) for s in sequences]
    ax.plot(
        sequences,
        median,
        color='black',
        lw=2,
        label=f'median of {len(by_member)} members',
    )
    ax.legend()
  ax_cost.set(
      xlabel='sequences seen (per member)',
      ylabel='cost per sequence (bits)',
      title='training cost',
      yscale='log',
  )
  ax_err.set(
      xlabel='sequences seen (per member)',
      ylabel='bit errors per sequence',
      title='evaluation on the training distribution',
      yscale='symlog',
  )
  ax_err.axhline(0.1, color='grey', linestyle=':')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def learning_curves(
    runs: dict, path: str, title: str | None = None, reference_cost: float | None = None
) -> None:
  """One or more runs' learning curves on shared axes (the paper's Fig. 3, 7, 10, 13, 16).

  Args:
    runs: {label: workdir}; a label of None draws a single run without a legend.
    path: the PNG to write.
    title: a title over both panels.
    reference_cost: a cost per sequence to draw as a line (e.g. the optimal estimator's).
  """
  fig, (ax_cost, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
  for label, workdir in runs.items():
    records = metrics_lib.read_log(workdir)
    train = [r for r in records if r.get('kind') == 'train']
    evals = [r for r in records if r.get('kind') == 'eval']
    ax_cost.plot([r['sequences'] for r in train], [r['cost'] for r in train], label=label)
    lines = ax_err.plot(
        [r['sequences'] for r in evals],
        [r['train']['bit_errors'] for r in evals],
        marker='.',
        label=label,
    )
    if evals:  # the evaluation that best/ holds: the lowest cost
      best = min(evals, key=lambda r: r['train']['cost'])
      ax_err.plot(
          [best['sequences']],
          [best['train']['bit_errors']],
          marker='*',
          markersize=12,
          color=lines[0].get_color(),
          linestyle='none',
      )
  if reference_cost is not None:
    ax_cost.axhline(reference_cost, color='black', linestyle='--', label='optimal')
  ax_cost.set(
      xlabel='sequences seen',
      ylabel='cost per sequence (bits)',
      title='training cost',
      yscale='log',
  )
  ax_err.set(
      xlabel='sequences seen',
      ylabel='bit errors per sequence',
      title='evaluation on the training distribution',
      yscale='symlog',
  )
  ax_err.axhline(0.1, color='grey', linestyle=':')
  if any(label is not None for label in runs):
    ax_cost.legend()
    ax_err.legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def sequence_view(task, model, params, key, difficulty, path: str) -> None:
  """Inputs, targets, outputs and (for an NTM) read/write weightings over time."""
  batch = task.sample_eval(key, 1, difficulty)
  panels = [('inputs', batch.inputs[0].T), ('targets', batch.targets[0].T)]
  if isinstance(model, models.NTM):
    logits, states = models.trace_ntm(model, params, batch.inputs)
    panels.append(('outputs', jax.nn.sigmoid(logits[0]).T))
    for head in range(states.write_weights.shape[2]):
      panels.append((f'write weighting {head}', states.write_weights[0, :, head].T))
    for head in range(states.read_weights.shape[2]):
      panels.append((f'read weighting {head}', states.read_weights[0, :, head].T))
  else:
    panels.append(('outputs', jax.nn.sigmoid(model.apply(params, batch.inputs)[0]).T))
  # The weighting panels share about 12 inches, so that a machine with many heads
  # (priority sort has 10) still gives a figure of a readable size.
  weighting_panels = sum('weighting' in title for title, _ in panels)

  def height(title, image):
    if 'weighting' in title:
      return max(1.5, min(6.0, image.shape[0] / 12, 12.0 / weighting_panels))
    return max(2.0, min(6.0, image.shape[0] / 12))

  heights = [height(title, image) for title, image in panels]
  fig, axes = plt.subplots(
      len(panels),
      1,
      figsize=(12, sum(heights) + 1),
      gridspec_kw=dict(height_ratios=heights),
      squeeze=False,
  )
  for ax, (title, image) in zip(axes[:, 0], panels):
    ax.imshow(
        image,
        aspect='auto',
        interpolation='nearest',
        cmap='viridis',
        vmin=0.0,
        vmax=1.0 if 'weighting' not in title else None,
    )
    ax.set_ylabel('slot' if 'weighting' in title else 'channel')
    ax.set_title(title, fontsize=9)
  axes[-1, 0].set_xlabel('time step')
  fig.suptitle(f'{task.name}, {task.difficulty_name} {task.difficulty_label(difficulty)}')
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def write_all(workdir: str, task, model, params, keys) -> list[str]:
  paths = [os.path.join(workdir, 'learning_curve.png')]
  learning_curve(workdir, paths[0])
  for index, difficulty in enumerate(task.example_difficulties()):
    label = task.difficulty_label(difficulty)
    path = os.path.join(
        workdir, f'sequence_{task.difficulty_name}_{label}.png'.replace(' ', '_')
    )
    sequence_view(
        task, model, params, jax.random.fold_in(keys.figures, index), difficulty, path
    )
    paths.append(path)
  return paths
