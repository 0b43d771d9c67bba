"""Task generators: shapes, channels, masks and lengths."""

import jax
import numpy as np
import pytest

from ntm_jax.tasks import CopyTask


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
    np.testing.assert_array_equal(np.flatnonzero(mask), np.arange(length + 1, 2 * length + 1))
    np.testing.assert_array_equal(targets[length + 1:2 * length + 1], inputs[:length, :8])
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


@pytest.mark.parametrize('kwargs,message', [
    (dict(min_length=0), 'min_length'),
    (dict(min_length=5, max_length=4), 'min_length <= max_length'),
    (dict(bits=0), 'bits'),
    (dict(eval_lengths=(0, 10)), 'eval_lengths'),
])
def test_copy_rejects_bad_settings(kwargs, message):
  with pytest.raises(ValueError, match=message):
    CopyTask(**kwargs)
