"""PNG figures: the learning curve and the paper's Fig. 4/6 views of a run.

The weighting view shows, for one sequence, the inputs, targets and outputs over time and
each head's weighting over the memory slots: on copy the write head should step through
memory while the input is presented and the read head should follow it afterwards.
"""

import json
import os

import jax
import matplotlib

matplotlib.use('Agg')  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

from ntm_jax import models  # noqa: E402


def learning_curve(workdir: str, path: str) -> None:
  """Cost per sequence (training windows) and eval bit errors against sequences seen."""
  records = []
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        pass
  train = [r for r in records if r.get('kind') == 'train']
  evals = [r for r in records if r.get('kind') == 'eval']
  fig, (ax_cost, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
  ax_cost.plot([r['sequences'] for r in train], [r['cost'] for r in train])
  ax_cost.set(xlabel='sequences seen', ylabel='cost per sequence (bits)',
              title='training cost', yscale='log')
  ax_err.plot([r['sequences'] for r in evals], [r['train']['bit_errors'] for r in evals],
              marker='o')
  ax_err.set(xlabel='sequences seen', ylabel='bit errors per sequence',
             title='evaluation on training lengths', yscale='symlog')
  ax_err.axhline(0.1, color='grey', linestyle=':')
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
  heights = [max(2.0, min(6.0, p.shape[0] / 12)) for _, p in panels]
  fig, axes = plt.subplots(len(panels), 1, figsize=(12, sum(heights) + 1),
                           gridspec_kw=dict(height_ratios=heights), squeeze=False)
  for ax, (title, image) in zip(axes[:, 0], panels):
    ax.imshow(image, aspect='auto', interpolation='nearest', cmap='viridis',
              vmin=0.0, vmax=1.0 if 'weighting' not in title else None)
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
    path = os.path.join(workdir, f'sequence_{task.difficulty_name}_{label}.png'.replace(
        ' ', '_'))
    sequence_view(task, model, params, jax.random.fold_in(keys.figures, index),
                  difficulty, path)
    paths.append(path)
  return paths
