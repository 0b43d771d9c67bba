"""Task generators: shapes, channels, masks and lengths."""

import json

import jax
import numpy as np
import pytest

from ntm_jax.tasks import TASKS
from ntm_jax.tasks import AssociativeRecallTask
from ntm_jax.tasks import CopyTask
from ntm_jax.tasks import DynamicNGramsTask
from ntm_jax.tasks import PrioritySortTask
from ntm_jax.tasks import RepeatCopyTask
from ntm_jax.tasks import make_task


def test_copy_training_batch_layout():
  task = CopyTask(bits=8, min_length=1, max_length=20)
  batch = jax.device_get(task.sample_train(jax.random.key(0), 64))
  assert batch.inputs.shape == (64, 41, 9)
  assert batch.targets.shape == (64, 41, 8)
  assert batch.mask.shape == (64, 41)
  lengths = set()
  for inputs, targets, mask in zip(batch.inputs, batch.targets, batch.mask):
    delimiter_steps = np.flatnonzero(inputs[:, 8])
    assert len(delimiter_steps) == 1
    length = int(delimiter_steps[0])
    lengths.add(length)
    assert 1 <= length <= 20
    # Bits only before the delimiter, nothing on the delimiter channel elsewhere.
    assert not inputs[length:, :8].any()
    assert not inputs[length, :8].any()
    # The scored steps are exactly the L steps after the delimiter, and their targets are
    # the input bits in order.
    np.testing.assert_array_equal(
        np.flatnonzero(mask), np.arange(length + 1, 2 * length + 1)
    )
    np.testing.assert_array_equal(
        targets[length + 1 : 2 * length + 1], inputs[:length, :8]
    )
    assert not targets[mask == 0].any()
    assert set(np.unique(inputs)) <= {0.0, 1.0}
  assert len(lengths) > 10  # lengths really vary within a batch


def test_copy_eval_batch_has_the_requested_length():
  batch = CopyTask().sample_eval(jax.random.key(1), 4, 120)
  assert batch.inputs.shape == (4, 241, 9)
  np.testing.assert_array_equal(np.asarray(batch.mask).sum(axis=1), [120] * 4)
  np.testing.assert_array_equal(np.asarray(batch.inputs[:, 120, 8]), [1] * 4)


def test_copy_batches_depend_only_on_the_key():
  task = CopyTask()
  a, b = task.sample_train(jax.random.key(3), 8), task.sample_train(jax.random.key(3), 8)
  np.testing.assert_array_equal(a.inputs, b.inputs)
  c = task.sample_train(jax.random.key(4), 8)
  assert not np.array_equal(a.inputs, c.inputs)


@pytest.mark.parametrize(
    'kwargs,message',
    [
        (dict(min_length=0), 'min_length'),
        (dict(min_length=5, max_length=4), 'min_length <= max_length'),
        (dict(bits=0), 'bits'),
        (dict(eval_lengths=(0, 10)), 'eval_lengths'),
    ],
)
def test_copy_rejects_bad_settings(kwargs, message):
  with pytest.raises(ValueError, match=message):
    CopyTask(**kwargs)


def test_repeat_copy_layout_and_normalised_count():
  task = RepeatCopyTask(bits=4, max_length=5, max_repeats=4)
  batch = jax.device_get(task.sample_train(jax.random.key(0), 32))
  assert batch.inputs.shape == (32, 5 * 5 + 2, 6) and batch.targets.shape[-1] == 5
  counts = set()
  for inputs, targets, mask in zip(batch.inputs, batch.targets, batch.mask):
    length = int(np.flatnonzero(inputs[:, 4])[0])
    count = inputs[length, 5] * task.repeats_std + task.repeats_mean
    repeats = int(round(count))
    assert abs(count - repeats) < 1e-5 and 1 <= repeats <= 4 and 1 <= length <= 5
    counts.add(repeats)
    end = length + 1 + length * repeats
    np.testing.assert_array_equal(np.flatnonzero(mask), np.arange(length + 1, end + 1))
    expected = np.tile(inputs[:length, :4], (repeats, 1))
    np.testing.assert_array_equal(targets[length + 1 : end, :4], expected)
    np.testing.assert_array_equal(np.flatnonzero(targets[:, 4]), [end])
  assert counts == {1, 2, 3, 4}
  # The normalised count has mean 0 and variance 1 over the training range.
  values = task.normalise_repeats(np.arange(1, 5))
  assert abs(values.mean()) < 1e-6 and abs(values.var() - 1.0) < 1e-6


def test_repeat_copy_eval_shape():
  batch = RepeatCopyTask().sample_eval(jax.random.key(0), 2, (20, 10))
  assert batch.inputs.shape == (2, 20 * 11 + 2, 10)
  np.testing.assert_array_equal(np.asarray(batch.mask).sum(1), [201, 201])


def test_associative_recall_target_is_the_item_after_the_query():
  task = AssociativeRecallTask(bits=6, item_length=3, min_items=2, max_items=6)
  batch = jax.device_get(task.sample_train(jax.random.key(0), 64))
  assert batch.inputs.shape == (64, 4 * 6 + 8, 8)
  seen = set()
  for inputs, targets, mask in zip(batch.inputs, batch.targets, batch.mask):
    starts = np.flatnonzero(inputs[:, 6])  # item delimiters
    n = len(starts)
    seen.add(n)
    np.testing.assert_array_equal(starts, 4 * np.arange(n))
    items = [inputs[s + 1 : s + 4, :6] for s in starts]
    query_delimiters = np.flatnonzero(inputs[:, 7])
    np.testing.assert_array_equal(query_delimiters, [4 * n, 4 * n + 4])
    query = inputs[4 * n + 1 : 4 * n + 4, :6]
    matches = [i for i, item in enumerate(items[:-1]) if np.array_equal(item, query)]
    assert matches
    np.testing.assert_array_equal(np.flatnonzero(mask), 4 * n + 5 + np.arange(3))
    np.testing.assert_array_equal(targets[4 * n + 5 : 4 * n + 8], items[matches[0] + 1])
  assert seen == {2, 3, 4, 5, 6}


def test_priority_sort_targets_are_sorted_by_priority():
  task = PrioritySortTask()
  batch = jax.device_get(task.sample_train(jax.random.key(0), 16))
  assert batch.inputs.shape == (16, 37, 10) and batch.targets.shape == (16, 37, 8)
  for inputs, targets, mask in zip(batch.inputs, batch.targets, batch.mask):
    priorities = inputs[:20, 8]
    assert (priorities >= -1).all() and (priorities <= 1).all()
    assert inputs[20, 9] == 1 and not inputs[:20, 9].any()
    order = np.argsort(-priorities)[:16]
    np.testing.assert_array_equal(targets[21:], inputs[order, :8])
    np.testing.assert_array_equal(np.flatnonzero(mask), np.arange(21, 37))
    assert np.all(np.diff(priorities[order]) < 0)


def test_priority_sort_spans_narrow_only_the_training_priorities():
  key = jax.random.key(3)
  paper, narrow = PrioritySortTask(), PrioritySortTask(min_priority_span=0.5)
  wide = jax.device_get(paper.sample_train(key, 512))
  batch = jax.device_get(narrow.sample_train(key, 512))
  np.testing.assert_array_equal(batch.inputs[:, :20, :8], wide.inputs[:, :20, :8])
  # Each sequence's priorities are the paper's mapped into an interval [c - h, c + h]
  # inside [-1, 1] with h in [0.25, 1]: an exact affine map of each sequence's own.
  half_widths = []
  for mapped, original, inputs, targets in zip(
      batch.inputs[:, :20, 8], wide.inputs[:, :20, 8], batch.inputs, batch.targets
  ):
    half_width, centre = np.polyfit(original, mapped, 1)
    np.testing.assert_allclose(centre + half_width * original, mapped, atol=1e-6)
    assert 0.25 - 1e-6 <= half_width <= 1 + 1e-6
    assert abs(centre) <= 1 - half_width + 1e-6
    order = np.argsort(-mapped)[:16]  # still the 16 highest, highest first
    np.testing.assert_array_equal(targets[21:], inputs[order, :8])
    half_widths.append(half_width)
  # Log-uniform: about half the sequences below the geometric middle, h = 0.5.
  assert 0.4 < np.mean(np.array(half_widths) < 0.5) < 0.6
  for difficulty in (20, 12):  # evaluation keeps the paper's [-1, 1]
    for a, b in zip(
        jax.device_get(narrow.sample_eval(key, 8, difficulty)),
        jax.device_get(paper.sample_eval(key, 8, difficulty)),
    ):
      np.testing.assert_array_equal(a, b)
  for bad in (0.0, -1.0, 2.5):
    with pytest.raises(ValueError, match=r'min_priority_span must be in \(0, 2\]'):
      PrioritySortTask(min_priority_span=bad)


def test_ngrams_batch_layout():
  task = DynamicNGramsTask()
  batch = jax.device_get(task.sample_train(jax.random.key(0), 8))
  assert batch.inputs.shape == (8, 204, 1)
  np.testing.assert_array_equal(batch.inputs[:, 1:], batch.targets[:, :-1])
  np.testing.assert_array_equal(batch.mask.sum(1), [200] * 8)
  assert set(np.unique(batch.inputs)) <= {0.0, 1.0}


def test_ngrams_optimal_estimator_by_hand():
  # context = 1 bit, bits 0 1 1 1 0: predictions after context 0, 1, 1, 1.
  #   bit 1 after context 0: counts (0, 0) -> P(1) = 1/2            cost 1 bit
  #   bit 1 after context 1: counts (0, 0) -> P(1) = 1/2            cost 1 bit
  #   bit 1 after context 1: N1 = 1, N0 = 0 -> P(1) = 1.5 / 2       cost -log2 0.75
  #   bit 0 after context 1: N1 = 2, N0 = 0 -> P(0) = 1 - 2.5 / 3   cost -log2(1/6)
  task = DynamicNGramsTask(context=1, length=4)
  bits = np.array([0, 1, 1, 1, 0], np.float32)
  from ntm_jax.tasks import Batch

  batch = Batch(
      inputs=bits[None, :-1, None],
      targets=bits[None, 1:, None],
      mask=np.ones((1, 4), np.float32),
  )
  expected = 1 + 1 - np.log2(0.75) - np.log2(1 / 6)
  np.testing.assert_allclose(task.reference_cost(batch), [expected], rtol=1e-6)


def test_ngrams_optimal_cost_matches_the_paper():
  # The paper's optimum: about 133 bits per 200-bit sequence.
  task = DynamicNGramsTask()
  cost = float(
      np.mean(task.reference_cost(task.sample_eval(jax.random.key(0), 500, 200)))
  )
  assert 128 < cost < 138


def _one_hot_writes(slots_by_head, num_slots=128):
  """(1, n, H, N) write weightings putting input i of head h on slots_by_head[h][i]."""
  slots = np.asarray(slots_by_head).T  # (n, H)
  return np.eye(num_slots)[slots][None]


def test_write_placement_tells_a_layout_from_search():
  from ntm_jax import analysis

  priorities = np.array([[0.9, -0.2, 0.4, -0.8, 0.1, 0.6]])
  descending = np.argsort(np.argsort(-priorities[0]))  # rank 0 = highest
  # Head 0: the paper's layout, slot falling as the priority rises, wrapping past slot
  # 127 to 0 (ranks 0-5 -> slots 125, 126, 127, 0, 1, 2). Head 1: one slot each, in an
  # arbitrary order. Head 2: all inputs on one slot.
  layout = (125 + descending) % 128
  search = np.array([40, 7, 99, 63, 12, 80])
  spread = np.full(6, 5)
  weights = _one_hot_writes([layout, search, spread])
  placement = analysis.write_placement(weights, priorities)
  np.testing.assert_allclose(placement['peak'], [1, 1, 1])
  np.testing.assert_allclose(placement['slots'], [6, 6, 1])
  # By rising priority head 1's slots are 63, 7, 12, 99, 80, 40: circular steps (the
  # shorter way round 128 slots) -56, +5, -41 (87 the other way), -19, -40, so
  # |4 down - 1 up| / 5 moves. Head 0 steps -1 five times, across slot 0 too; head 2
  # never moves.
  np.testing.assert_allclose(placement['order'], [1.0, 0.6, 0.0])
  assert analysis.sorting_algorithm(placement, 6) == ('layout', 0)
  # All inputs on one slot is neither. A zigzag by rising priority, slots 10, 50, 20,
  # 60, 30, 70 (steps +40, -30, +40, -30, +40: order 1/5), one slot each, is search.
  only_spread = {name: values[2:] for name, values in placement.items()}
  assert analysis.sorting_algorithm(only_spread, 6) == (None, None)
  ascending = np.argsort(priorities[0])
  zigzag = np.empty(6, int)
  zigzag[ascending] = [10, 50, 20, 60, 30, 70]
  searching = analysis.write_placement(_one_hot_writes([spread, zigzag]), priorities)
  np.testing.assert_allclose(searching['order'], [0.0, 0.2])
  assert analysis.sorting_algorithm(searching, 6) == ('search', 1)
  # Mean peak over a head's inputs: a weighting spread over two slots peaks at 0.5.
  halves = (weights + np.roll(weights, 1, axis=-1)) / 2
  np.testing.assert_allclose(analysis.write_placement(halves, priorities)['peak'], 0.5)


def test_bit_errors_by_priority_gap():
  from ntm_jax import analysis

  task = PrioritySortTask(num_inputs=4, num_outputs=2)
  batch = jax.device_get(task.sample_train(jax.random.key(0), 1))
  priorities = np.array([0.5, 0.505, -0.3, 0.9])  # gaps 0.005, 0.005, 0.8, 0.395
  inputs = np.array(batch.inputs)
  inputs[0, :4, 8] = priorities
  order = np.argsort(-priorities)[:2]  # outputs: input 3 (gap 0.395), input 1 (0.005)
  targets = np.zeros_like(batch.targets)
  targets[0, 5:] = inputs[0, order, :8]
  batch = batch._replace(inputs=inputs, targets=targets)
  logits = np.where(targets > 0.5, 5.0, -5.0)
  logits[0, 6, :3] *= -1  # three wrong bits in the second output (gap 0.005)
  logits[0, 2, :] *= -1  # an unscored step: not counted
  gaps = analysis.bit_errors_by_priority_gap(
      logits, batch, num_inputs=4, edges=(0, 0.01, 0.5, np.inf)
  )
  assert gaps == {
      '0-0.01': 3.0,
      '0.01-0.5': 0.0,
      '0.5-inf': pytest.approx(np.nan, nan_ok=True),
  }


@pytest.mark.parametrize(
    'task',
    [
        CopyTask(bits=3, min_length=2, max_length=4, eval_lengths=(3, 7)),
        RepeatCopyTask(
            bits=4,
            max_length=3,
            min_repeats=2,
            max_repeats=4,
            eval_difficulties=((3, 4), (5, 6)),
        ),
        AssociativeRecallTask(bits=3, item_length=2, max_items=4, eval_items=(4, 9)),
        DynamicNGramsTask(context=3, length=30, eval_lengths=(30, 60)),
        PrioritySortTask(
            bits=4, num_inputs=6, num_outputs=3, eval_inputs=(6, 9), min_priority_span=0.5
        ),
    ],
    ids=lambda task: task.name,
)
def test_a_task_is_rebuilt_from_its_recorded_settings(task):
  # Through JSON, as a run's config.json keeps them.
  recorded = json.loads(json.dumps(task.settings()))
  rebuilt = make_task(task.name, recorded)
  assert type(rebuilt) is type(task)
  assert rebuilt.settings() == task.settings()
  assert rebuilt.eval_difficulties == task.eval_difficulties
  key = jax.random.key(3)
  for mine, theirs in zip(task.sample_train(key, 2), rebuilt.sample_train(key, 2)):
    np.testing.assert_array_equal(mine, theirs)


def test_every_task_records_all_its_settings():
  for name, task_class in TASKS.items():
    assert make_task(name).settings() == task_class().settings()
  assert set(PrioritySortTask().settings()) == {
      'bits',
      'num_inputs',
      'num_outputs',
      'eval_inputs',
      'min_priority_span',
  }
  with pytest.raises(ValueError, match="task must be one of copy, .*; got 'sort'"):
    make_task('sort')
