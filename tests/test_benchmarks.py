"""The benchmarks run as the README shows, at toy sizes: their tables and JSON appear.

Nothing here asserts a time (BUILD_NOTES.md holds the measured tables); these tests only
keep the scripts from rotting.
"""

import json
import os
import subprocess
import sys

import jax
import pytest

from benchmarks import step_time
from ntm_jax.tasks import CopyTask
from ntm_jax.training import ExperimentConfig
from ntm_jax.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_benchmark(name, *args):
  env = dict(os.environ, PYTHONPATH=ROOT)
  result = subprocess.run([sys.executable, '-m', f'benchmarks.{name}', *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


@pytest.mark.slow
def test_step_time_benchmark_prints_its_table_and_writes_json(tmp_path):
  output = tmp_path / 'step_time.json'
  stdout = _run_benchmark('step_time', '--batch_sizes=2', '--parallel_batch_sizes=',
                          '--memory_sizes=16,32', '--lengths=2,4', '--repeats=2',
                          f'--output={output}')
  assert 'fitted exponent over the two largest N' in stdout
  results = json.loads(output.read_text())
  assert [row['controller'] for row in results['speed']] == ['lstm', 'feedforward']
  for row in results['speed'] + results['memory_scaling'] + results['length_scaling']:
    assert row['step_seconds'] > 0 and row['peak_bytes'] > 0
  assert 0 < results['speed'][0]['fraction_of_matmul'] < 1
  for row in results['speed']:
    assert row['dense_only_seconds'] > 0 and row['dense_only_fraction_of_matmul'] > 0


@pytest.mark.slow
def test_remat_benchmark_compares_the_three_settings(tmp_path):
  output = tmp_path / 'remat.json'
  stdout = _run_benchmark('remat', '--length=3', '--memory_size=16', '--batch_size=2',
                          '--remat_chunk=2', '--speed_batch_sizes=1', f'--output={output}')
  assert 'remat_chunk 0' in stdout
  results = json.loads(output.read_text())
  for name in ('plain', 'step', 'remat'):
    assert results[f'{name}_peak_bytes'] > 0
  assert results['remat_step_seconds'] > 0
  assert results['speed'][0]['remat_chunk_0_seconds'] > 0
  assert results['speed'][0]['remat_chunk_1_seconds'] > 0


@pytest.mark.parametrize('controller,layers', [('lstm', 1), ('lstm', 2), ('feedforward', 2)])
def test_dense_layers_only_has_the_models_dense_kernels(controller, layers):
  task = CopyTask()
  config = ExperimentConfig(workdir='/unused', controller=controller,
                            controller_layers=layers, num_heads=2)
  params = jax.eval_shape(loop.build_model(config, task).init, jax.random.key(0),
                          task.sample_train(jax.random.key(0), 1).inputs)['params']['cell']
  kernel_entries = sum(leaf.size for path, leaf in
                       jax.tree_util.tree_leaves_with_path(params)
                       if 'kernel' in jax.tree_util.keystr(path))
  shapes = step_time.dense_layer_shapes(config, task)
  assert sum(i * o for i, o in shapes) == kernel_entries
