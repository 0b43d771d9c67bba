"""Test-session set-up, run before any test touches a JAX device."""

from ntm_jax.training import backend

# The same CPU compiler flags as the experiment runners, so that the tests compile and
# run the code the way users' runs do (and faster).
backend.tune_cpu_compiler()
