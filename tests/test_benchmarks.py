"""The benchmarks run as the README shows, at toy sizes: their tables and JSON appear.

Nothing here asserts a time (BUILD_NOTES.md holds the measured tables); these tests only
keep the scripts from rotting.
"""

import json
import os
import subprocess
import sys

import pytest

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
