import os

# Tests run on the CPU, in float32 unless a test asks for float64 with jax.experimental.enable_x64.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Eight simulated CPU devices, so that the distributed tests can build real meshes; everything
# else still runs on the default device (jax.devices()[0]). Must be set before JAX starts.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

# Opt-in persistent compilation cache (e.g. in CI, with the directory kept between runs):
#   GENPPL_TEST_COMPILATION_CACHE=~/.cache/genppl-jax pytest
# Compile counts (tests/compile_count.py) are unaffected: JAX records its compile event on a
# disk-cache hit too.
_CACHE = os.environ.get("GENPPL_TEST_COMPILATION_CACHE")
if _CACHE:
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(_CACHE))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
