"""The benchmarks run as the README shows, at toy sizes: their tables and JSON appear.

Nothing here asserts a time (docs/BENCHMARKS.md holds the measured tables); these tests only
keep the scripts from rotting.
"""

import json
import os
import subprocess
import sys

import jax
import pytest

from benchmarks import hlo
from benchmarks import step_time
from ntm_jax.tasks import CopyTask
from ntm_jax.training import ExperimentConfig
from ntm_jax.training import factory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_benchmark(name, *args):
  env = dict(os.environ, PYTHONPATH=ROOT)
  result = subprocess.run(
      [sys.executable, '-m', f'benchmarks.{name}', *args],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


@pytest.mark.slow
def test_step_time_benchmark_prints_its_table_and_writes_json(tmp_path):
  output = tmp_path / 'step_time.json'
  stdout = _run_benchmark(
      'step_time',
      '--batch_sizes=2',
      '--parallel_batch_sizes=',
      '--memory_sizes=16,32',
      '--lengths=2,4',
      '--repeats=2',
      '--packing_members=1',
      '--packing_rounds=1',
      f'--output={output}',
  )
  assert 'fitted exponent over the two largest N' in stdout
  results = json.loads(output.read_text())
  packing = [
      (r['residual_packing'], r['step_seconds']) for r in results['residual_packing']
  ]
  assert [name for name, _ in packing] == ['never', 'always'] and packing[1][1] > 0
  assert [row['controller'] for row in results['speed']] == ['lstm', 'feedforward']
  for row in results['speed'] + results['memory_scaling'] + results['length_scaling']:
    assert row['step_seconds'] > 0 and row['peak_bytes'] > 0
  assert 0 < results['speed'][0]['fraction_of_matmul'] < 1
  for row in results['speed']:
    assert row['dense_only_seconds'] > 0 and row['dense_only_fraction_of_matmul'] > 0
    assert 0 < row['forward_seconds'] < row['step_seconds']


@pytest.mark.slow
def test_remat_benchmark_compares_the_three_settings(tmp_path):
  output = tmp_path / 'remat.json'
  stdout = _run_benchmark(
      'remat',
      '--length=3',
      '--memory_size=16',
      '--batch_size=2',
      '--remat_chunk=2',
      '--speed_batch_sizes=1',
      f'--output={output}',
  )
  assert 'remat_chunk 0' in stdout
  results = json.loads(output.read_text())
  for name in ('plain', 'step', 'remat'):
    assert results[f'{name}_peak_bytes'] > 0
  assert results['remat_step_seconds'] > 0
  assert results['speed'][0]['remat_chunk_0_seconds'] > 0
  assert results['speed'][0]['remat_chunk_1_seconds'] > 0


@pytest.mark.parametrize(
    'controller,layers', [('lstm', 1), ('lstm', 2), ('feedforward', 2)]
)
def test_dense_layers_only_has_the_models_dense_kernels(controller, layers):
  task = CopyTask()
  config = ExperimentConfig(
      workdir='/unused', controller=controller, controller_layers=layers, num_heads=2
  )
  params = jax.eval_shape(
      factory.build_model(config, task).init,
      jax.random.key(0),
      task.sample_train(jax.random.key(0), 1).inputs,
  )['params']['cell']
  kernel_entries = sum(
      leaf.size
      for path, leaf in jax.tree_util.tree_leaves_with_path(params)
      if 'kernel' in jax.tree_util.keystr(path)
  )
  shapes = step_time.dense_layer_shapes(config, task)
  assert sum(i * o for i, o in shapes) == kernel_entries


_HLO = """HloModule jit_step

%body (p: (s32[], f32[4])) -> (s32[], f32[4]) {
  %p = (s32[], f32[4]{0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %x = f32[4]{0} get-tuple-element(%p), index=1
  %f.1 = f32[4]{0} fusion(%x), kind=kLoop, calls=%fused_a
  %f.2 = f32[4]{0} fusion(%f.1), kind=kLoop, calls=%fused_b
  %g = f32[4]{0} custom-call(%f.2), custom_call_target="__cublas$gemm"
  ROOT %t = (s32[], f32[4]{0}) tuple(%i, %g)
}

%cond (p: (s32[], f32[4])) -> pred[] {
  %p = (s32[], f32[4]{0}) parameter(0)
  ROOT %c = pred[] fusion(%p), kind=kLoop, calls=%fused_c
}

%back_body (p: (s32[], f32[4])) -> (s32[], f32[4]) {
  %p = (s32[], f32[4]{0}) parameter(0)
  ROOT %cb = (s32[], f32[4]{0}) call(%p), to_apply=%command_buffer.1
}

%command_buffer.1 (p: (s32[], f32[4])) -> (s32[], f32[4]) {
  %p = (s32[], f32[4]{0}) parameter(0)
  %x = f32[4]{0} get-tuple-element(%p), index=1
  %k.1 = f32[4]{0} fusion(%x), kind=kLoop, calls=%fused_a
  %k.2 = f32[4]{0} copy(%k.1)
  ROOT %t = (s32[], f32[4]{0}) tuple(%x, %k.2)
}

ENTRY %main (a: f32[4]) -> f32[4] {
  %a = f32[4]{0} parameter(0)
  %in = f32[4]{0} fusion(%a), kind=kCustom, calls=%fused_a, backend_config={"fusion_backend_config":{"kind":"__triton"}}
  %w.1 = (s32[], f32[4]{0}) while(%in), condition=%cond, body=%body, metadata={op_name="jit(step)/jvp(NTM)/while"}, backend_config={"known_trip_count":{"n":"10"}}
  %w.2 = (s32[], f32[4]{0}) while(%w.1), condition=%cond, body=%back_body, metadata={op_name="jit(step)/transpose(jvp(NTM))/while"}, backend_config={"known_trip_count":{"n":"10"}}
  ROOT %out = f32[4]{0} get-tuple-element(%w.2), index=1
}
"""


def test_the_kernel_count_reads_loops_calls_and_command_buffers_from_hlo():
  counts = hlo.count_kernels(_HLO, num_steps=5)
  # Forward: 3 kernels a body over 10 iterations and 1 a condition tested 11 times, over 5
  # time steps (an unroll of 2); backward: the command buffer's 2 kernels and the test.
  assert counts['forward_per_step'] == (3 * 10 + 11) / 5
  assert counts['backward_per_step'] == (2 * 10 + 11) / 5
  assert counts['outside_loops'] == 1 and counts['other_loops'] == 0
  assert counts['total'] == 1 + 41 + 31
  assert counts['custom_calls'] == 10 and counts['command_buffers'] == 1
  assert counts['triton'] == 1  # the fusion outside the loops
  assert counts['fusions'] == 1 + (20 + 11) + (10 + 11)  # not the custom call nor copy


@pytest.mark.slow
def test_the_gpu_smoke_script_runs_every_part_on_the_cpu(tmp_path):
  stdout = _run_benchmark(
      'gpu_smoke',
      '--accelerator=cpu',
      '--quick',
      '--command_buffers=off',
      '--batch_sizes=1',
      '--unrolls=1,2',
      f'--output_dir={tmp_path}',
  )
  results = json.loads((tmp_path / 'results.json').read_text())['parts']
  assert results['versions']['platform'] == 'cpu' and results['versions']['jax']
  assert results['tests']['status'] == 0 and 'passed' in results['tests']['summary']
  assert [
      (row['controller'], row['dtype'], row['batch_size'])
      for row in results['step_time']['rows']
  ] == [
      ('lstm', 'float32', 1),
      ('lstm', 'bfloat16', 1),
      ('feedforward', 'float32', 1),
      ('feedforward', 'bfloat16', 1),
  ]
  loop_rows = results['loop']['rows']
  assert [(row['unroll'], row['command_buffers']) for row in loop_rows] == [
      (1, 'off'),
      (2, 'off'),
  ]
  for row in loop_rows:  # the copy default's forward and backward time scans were found
    assert row['kernels']['forward_per_step'] > 10
    assert row['kernels']['backward_per_step'] > 10
  population = results['population']
  assert population['status'] == 0 and [r['members'] for r in population['rows']] == [
      1,
      2,
  ]
  assert all(r['sequences_per_second'] > 0 for r in population['rows'])
  copy = results['copy']
  assert copy['status'] == 0 and copy['resumed'] and copy['resumed_to'] == 22
  assert (
      copy['sequences_per_second'] > 0 and copy['cpu_reference']['sequences_per_second']
  )
  assert 'seq/s' in stdout and 'fwd/step' in stdout
  # The device tool returns at most 8 files from its output folder.
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      'children.log',
      'results.json',
      'step_time.json',
  ]
  assert '===== copy_resume: 0 =====' in (tmp_path / 'children.log').read_text()


@pytest.mark.slow
def test_the_population_command_benchmark_times_both_ways(tmp_path):
  output = tmp_path / 'commands.json'
  stdout = _run_benchmark(
      'population_commands', '--seeds=0-1', '--train_steps=2', f'--output={output}'
  )
  assert 'the population takes' in stdout
  row = json.loads(output.read_text())
  assert row['members'] == 2 and row['population_seconds'] > 0
  assert row['single_runs_seconds'] > 0


@pytest.mark.slow
def test_dispatch_benchmark_times_both_ways(tmp_path):
  output = tmp_path / 'dispatch.json'
  stdout = _run_benchmark(
      'dispatch', '--sizes=2', '--steps=3', '--rounds=1', f'--output={output}'
  )
  assert 'waiting is' in stdout and 'one run' in stdout
  rows = json.loads(output.read_text())['rows']
  assert rows[0]['population'] == 0 and rows[0]['devices'] == 1
  for row in rows:
    assert row['ahead_step_seconds'] > 0 and row['waiting_step_seconds'] > 0
