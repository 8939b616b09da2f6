"""Multi-process runs: ``distributed.launch.initialize`` and SMC over a mesh of two processes.

The slow tests start two CPU processes on the loopback interface (a free port, each process
with 2 simulated devices, so the mesh has 4), each bounded by SIGKILL after a timeout (JAX's
preemption handling catches SIGTERM). Worker: tests/distributed/multiprocess_worker.py.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from genppl import distributed, models
from genppl.inference import smc
from genppl.models.interface import InputError
from tests.checkpoints import save_llama
from tests.distributed import multiprocess_worker as worker

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 240  # seconds a worker may run (two processes compiling on a shared 2-core machine)


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:", ":1234", "host:99999", "host:port"])
def test_coordinator_must_be_host_and_port(address):
    with pytest.raises(InputError, match="HOST:PORT"):
        distributed.launch.parse_coordinator(address)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_processes=2, process_id=2), "below num_processes=2"),
    (dict(num_processes=0, process_id=0), "num_processes must be an integer >= 1"),
    (dict(num_processes=2, process_id=-1), "process_id must be an integer >= 0"),
    (dict(num_processes=2, process_id=0, heartbeat_timeout_s=0), "heartbeat_timeout_s"),
])
def test_bad_launch_arguments_are_input_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        distributed.initialize("127.0.0.1:1234", **kwargs)


def test_one_process_needs_no_runtime():
    distributed.initialize("127.0.0.1:1234", num_processes=1, process_id=0)  # a no-op
    assert distributed.is_main() and not distributed.spans_processes(distributed.make_mesh(2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(checkpoint, out, *extra, processes=2):
    port = free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=str(ROOT))
    return [subprocess.Popen(["timeout", "-s", "KILL", str(LIMIT), sys.executable, "-m",
                              "tests.distributed.multiprocess_worker", f"127.0.0.1:{port}", str(processes), str(i),
                              str(checkpoint), str(out), *extra],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(processes)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama-mp")
    save_llama(path)
    return path


@pytest.mark.slow  # two processes compile the SMC sweep: about a minute per case on 2 CPU cores
@pytest.mark.parametrize("model_parallel", [1, 2])
def test_two_processes_give_the_one_process_answer(checkpoint, tmp_path, model_parallel):
    out = tmp_path / "result.json"
    procs = start(checkpoint, out, "--model-parallel", str(model_parallel))
    logs = [p.communicate() for p in procs]
    for i, (p, (_, err)) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"process {i} failed:\n{err[-3000:]}"
    assert "mesh {'data': %d, 'model': %d}" % (4 // model_parallel, model_parallel) in logs[0][1]
    got = json.loads(out.read_text())
    lm = models.load(checkpoint)
    want = smc.run(worker.program(lm), worker.N, key=worker.KEY)  # one process, one device
    assert got["token_ids"] == [list(map(int, t)) for t in want.token_ids]
    np.testing.assert_allclose(got["log_z"], want.log_z, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["log_weights"], want.log_weights, rtol=0, atol=1e-5)


@pytest.mark.slow  # two processes and a heartbeat timeout: about a minute on 2 CPU cores
@pytest.mark.parametrize("dead", [1, 0])  # a worker, then the coordinator's own process
def test_a_dead_process_stops_the_others_within_a_minute(checkpoint, tmp_path, dead):
    procs = start(checkpoint, tmp_path / "result.json", "--die", str(dead))
    victim, survivor = procs[dead], procs[1 - dead]
    victim.wait(timeout=LIMIT)
    died = time.monotonic()
    assert victim.returncode == 3, victim.stderr.read()[-3000:]
    survivor.wait(timeout=LIMIT)
    waited = time.monotonic() - died
    err = survivor.stderr.read()
    assert survivor.returncode not in (0, -9, 137), err[-3000:]  # stopped by an error, not by the timeout
    assert waited < 60, f"the survivor took {waited:.0f} s to stop"
    assert "distributed service detected fatal errors" in err or "another task died" in err, err[-3000:]
    print(f"process {1 - dead} stopped {waited:.1f} s after process {dead} died, with:",
          next(line for line in err.splitlines() if "fatal errors" in line or "task died" in line)[:300])


CLI = ["--method", "smc", "--prompt", "the cat", "--ban", "e", "--n", "8", "--max-new-tokens", "8", "--seed", "5",
       "--json"]


@pytest.mark.slow  # two processes run the genppl command: about a minute on 2 CPU cores
def test_the_command_over_two_processes_prints_once_the_one_process_summary(checkpoint, capsys):
    from genppl.cli.main import main

    port = free_port()
    args = ["--model", str(checkpoint)] + CLI
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen(["timeout", "-s", "KILL", str(LIMIT), sys.executable, "-m", "genppl.cli", *args,
                               "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate() for p in procs]
    for i, (p, (_, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i} failed:\n{err[-3000:]}"
    assert main(args) == 0  # the same command in this one process, one device
    want = json.loads(capsys.readouterr().out)
    text = outs[0][0]
    got = json.loads(text[text.index("{"):])  # gloo's connection lines may come first
    assert got["log_z"] == pytest.approx(want["log_z"], abs=1e-4)  # the summary rounds to 4 decimals
    assert got["examples"] == want["examples"] and got["mean_ess"] == want["mean_ess"]
    assert '"log_z"' not in outs[1][0]  # process 1 stays quiet
