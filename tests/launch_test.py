"""The multi-host launchers, through their dry runs: the commands they would run, parsed back.

launch/pretrain.sh (TPU pod) prints each command as `+ command` (POSIX-quoted); the scripts it
sends to the workers are parsed again, and the run script is executed in a scratch home with a
fake `.venv/bin/python`, so that a binding with spaces and both kinds of quotes is checked to
arrive intact. A fake `gcloud` first on PATH records any call: a dry run must make none.
"""

import json
import os
import pathlib
import shlex
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PRETRAIN_SH = ROOT / "launch" / "pretrain.sh"
SLURM_SBATCH = ROOT / "launch" / "slurm.sbatch"

POD = {
  "TPU_NAME": "sql-v4-64",
  "ZONE": "us-central2-b",
  "WORKDIR": "gs://bucket/runs/sql",
  "SHARD_DIR": "/mnt/shards",
}
BINDINGS = [
  "train.seed = 3",
  "train.game_names = ['Pong', \"Breakout\"]",
  "evaluate.make_eval_fn.games = ['Pong']",
  'x.note = "it\'s a \\"test\\" with $HOME and `id`; done"',
]
EXPECTED_ARGS = [
  "--distributed",
  "--workdir=gs://bucket/runs/sql",
  "--gin_file=pretrain_near_optimal.gin",
  '--gin_bindings=data.ReplayDataset.shard_dir = "/mnt/shards"',
  *[f"--gin_bindings={b}" for b in BINDINGS],
  "--heartbeat_timeout_s=300",
]
_SHELL_OPERATORS = {";", "&", "&&", "||", "|", ">", ">>", "<", ">&"}


@pytest.fixture
def fake_gcloud(tmp_path):
  """A `gcloud` that records being called (and fails), first on PATH."""
  bin_dir, marker = tmp_path / "bin", tmp_path / "gcloud_called"
  bin_dir.mkdir()
  for name in ("gcloud", "srun", "sbatch"):
    (bin_dir / name).write_text(f'#!/bin/sh\necho "$0 $*" >> {marker}\nexit 1\n')
    (bin_dir / name).chmod(0o755)
  return bin_dir, marker


def _run(script, args, fake_gcloud, env=None, unset=()):
  bin_dir, _ = fake_gcloud
  full_env = {k: v for k, v in os.environ.items() if k not in {*POD, "DRY_RUN", "CREATE", *unset}}
  full_env.update(env or {})
  full_env["PATH"] = f"{bin_dir}:{full_env['PATH']}"
  return subprocess.run(
    ["bash", str(script), *args], env=full_env, capture_output=True, text=True, timeout=60
  )


def _commands(stdout: str) -> list[list[str]]:
  """Each printed `+ command` line, parsed back into its argv."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _remote_script(argv: list[str]) -> str:
  (command,) = [a.removeprefix("--command=") for a in argv if a.startswith("--command=")]
  return command


def _words(script: str) -> list[str]:
  lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  return list(lexer)


def _pretrain_args(script: str) -> list[str]:
  words = _words(script)
  start = words.index("scaled_ql.pretrain") + 1
  end = next(i for i in range(start, len(words)) if words[i] in _SHELL_OPERATORS)
  return words[start:end]


def _head_commit() -> str:
  return subprocess.run(
    ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
  ).stdout.strip()


def _pod_launch(fake_gcloud, *extra_args, env=None):
  result = _run(
    PRETRAIN_SH,
    ["--dry_run", "pretrain_near_optimal.gin", *BINDINGS, "--heartbeat_timeout_s=300", *extra_args],
    fake_gcloud,
    env={**POD, **(env or {})},
  )
  assert result.returncode == 0, result.stderr
  assert not fake_gcloud[1].exists(), "a dry run called gcloud"
  return result.stdout, _commands(result.stdout)


def _ssh_scripts(commands):
  return [
    _remote_script(c) for c in commands if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
  ]


def test_scripts_are_valid_bash():
  for script in (PRETRAIN_SH, SLURM_SBATCH):
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_pod_dry_run_copies_the_commit_sets_up_and_runs_on_every_worker(fake_gcloud):
  stdout, commands = _pod_launch(fake_gcloud)
  commit = _head_commit()
  tpu = [c for c in commands if c[0] == "gcloud"]
  assert all(c[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] for c in tpu)
  assert not [c for c in tpu if c[4] == "create"], "no CREATE=1: no create command"
  # Every gcloud command addresses this slice on every worker.
  for c in tpu:
    assert "--zone=us-central2-b" in c and "--worker=all" in c
    assert "sql-v4-64" in c or any(a.startswith("sql-v4-64:") for a in c)
  for script in _ssh_scripts(commands):  # every remote script is valid shell
    subprocess.run(["bash", "-n", "-c", script], check=True)

  # The code: a git archive of HEAD, copied to all workers and unpacked there; the log names it.
  (archive,) = [c for c in commands if c[0] == "git"]
  assert "archive" in archive and archive[-1] == commit
  (scp,) = [c for c in tpu if c[4] == "scp"]
  assert f"sql-v4-64:scaled_ql-{commit}.tar.gz" in scp
  assert any(a.startswith("--output=") and a[len("--output=") :] in scp for a in archive)
  scripts = _ssh_scripts(commands)
  assert len(scripts) == 3  # unpack, set up, run
  unpack, setup, launch = scripts
  assert f"tar -xzf ~/scaled_ql-{commit}.tar.gz" in unpack
  assert f"commit {commit}" in stdout

  # Set-up: launch/setup.sh with the TPU extra, on every worker, before the run.
  words = _words(setup)
  i = words.index("launch/setup.sh")
  assert words[i - 1] == "bash" and "EXTRAS=tpu" in words[i - 3 : i - 1]
  assert "scaled_ql.pretrain" not in setup

  # The run: one command on every worker, with every argument intact, detached, logged.
  assert sum("scaled_ql.pretrain" in s for s in scripts) == 1
  assert _pretrain_args(launch) == EXPECTED_ARGS
  words = _words(launch)
  i = words.index("scaled_ql.pretrain")
  assert words[i - 4 : i - 1] == ["nohup", "setsid", ".venv/bin/python"]
  after = words[i + 1 + len(EXPECTED_ARGS) :]
  assert after[:2] == [">>", "logs/pretrain.log"] and after[5:8] == ["<", "/dev/null", "&"]


def test_the_run_script_passes_every_argument_intact(fake_gcloud, tmp_path):
  """Executes the worker's run script in a scratch home: the fake python records its argv."""
  _, commands = _pod_launch(fake_gcloud)
  launch = _ssh_scripts(commands)[-1]
  home = tmp_path / "home"
  venv_bin = home / "scaled_ql" / ".venv" / "bin"
  venv_bin.mkdir(parents=True)
  argv_file = tmp_path / "argv.json"
  (venv_bin / "python").write_text(
    "#!/usr/bin/env python3\nimport json, sys\n"
    f"json.dump(sys.argv[1:], open({str(argv_file)!r}, 'w'))\n"
  )
  (venv_bin / "python").chmod(0o755)
  result = subprocess.run(
    ["bash", "-c", launch], cwd=home, env={**os.environ, "HOME": str(home)},
    capture_output=True, text=True, timeout=30,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  for _ in range(100):  # the run is detached: wait for it
    if argv_file.exists() and argv_file.stat().st_size:
      break
    time.sleep(0.05)
  assert json.loads(argv_file.read_text()) == ["-m", "scaled_ql.pretrain", *EXPECTED_ARGS]
  assert (home / "scaled_ql" / "logs" / "pretrain.pid").read_text().strip().isdigit()
  assert "started pid" in result.stdout


def test_worker_scripts_refuse_a_missing_shard_dir_and_a_run_still_going(fake_gcloud, tmp_path):
  _, commands = _pod_launch(fake_gcloud, env={"SHARD_DIR": str(tmp_path / "no_shards")})
  _, setup, launch = _ssh_scripts(commands)
  home = tmp_path / "home"
  (home / "scaled_ql" / "logs").mkdir(parents=True)

  def on_worker(script):
    return subprocess.run(
      ["bash", "-c", script], cwd=home, env={**os.environ, "HOME": str(home)},
      capture_output=True, text=True, timeout=30,
    )  # fmt: skip

  result = on_worker(setup)
  assert result.returncode != 0 and f"no SHARD_DIR here: {tmp_path}/no_shards" in result.stderr
  assert "setup.sh" not in result.stdout
  (home / "scaled_ql" / "logs" / "pretrain.pid").write_text(str(os.getpid()))  # a live process
  result = on_worker(launch)
  assert result.returncode != 0 and "a run is still going" in result.stderr
  assert not (home / "scaled_ql" / "logs" / "pretrain.log").exists()


def test_create_only_with_create_1(fake_gcloud):
  env = {"CREATE": "1", "ACCELERATOR_TYPE": "v4-64", "PROVISIONING": "spot"}
  _, commands = _pod_launch(fake_gcloud, env=env)
  creates = [c for c in commands if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]]
  assert len(creates) == 1 and commands.index(creates[0]) == 0  # before the code is copied
  (create,) = creates
  assert create[5] == "sql-v4-64"
  assert {"--accelerator-type=v4-64", "--version=tpu-ubuntu2204-base", "--spot"} <= set(create)
  assert "--zone=us-central2-b" in create
  env.update(RUNTIME_VERSION="tpu-vm-base", PROVISIONING="preemptible", ACCELERATOR_TYPE="v3-128")
  _, commands = _pod_launch(fake_gcloud, env=env)
  (create,) = [c for c in commands if c[4:5] == ["create"]]
  assert {"--accelerator-type=v3-128", "--version=tpu-vm-base", "--preemptible"} <= set(create)
  assert "--spot" not in create


def test_clone_mode_checks_out_one_commit_on_every_worker(fake_gcloud):
  env = {"REPO": "https://example.com/scaled_ql.git", "COMMIT": "v1.0"}
  _, commands = _pod_launch(fake_gcloud, env=env)
  assert not [c for c in commands if c[0] == "git" or c[4] == "scp"]
  clone = _ssh_scripts(commands)[0]
  words = _words(clone)
  assert ["git", "clone", "--quiet", "https://example.com/scaled_ql.git", "scaled_ql"] == words[
    words.index("clone") - 1 : words.index("clone") + 4
  ]
  assert words[words.index("--detach") + 1] == "v1.0"
  del env["COMMIT"]  # default: this checkout's HEAD, as a commit id
  _, commands = _pod_launch(fake_gcloud, env=env)
  words = _words(_ssh_scripts(commands)[0])
  assert words[words.index("--detach") + 1] == _head_commit()


def test_dry_run_env_variable_equals_the_flag(fake_gcloud):
  flag = _run(PRETRAIN_SH, ["--dry_run", "a.gin", "b = 1"], fake_gcloud, env=POD)
  env = _run(PRETRAIN_SH, ["a.gin", "b = 1"], fake_gcloud, env={**POD, "DRY_RUN": "1"})
  assert flag.returncode == env.returncode == 0
  assert _commands(flag.stdout) == _commands(env.stdout) != []
  assert not fake_gcloud[1].exists()


@pytest.mark.parametrize(
  "unset",
  [("TPU_NAME",), ("ZONE",), ("WORKDIR", "SHARD_DIR"), tuple(POD)],
)
def test_missing_variables_fail_in_one_line(fake_gcloud, unset):
  env = {k: v for k, v in POD.items() if k not in unset}
  result = _run(PRETRAIN_SH, ["--dry_run", "a.gin"], fake_gcloud, env=env, unset=unset)
  assert result.returncode != 0
  (line,) = result.stderr.splitlines()
  assert line.startswith("error: set ") and all(var in line for var in unset)
  assert not _commands(result.stdout) and not fake_gcloud[1].exists()


@pytest.mark.parametrize(
  "env, args, named",
  [
    ({"CREATE": "1"}, ["a.gin"], "ACCELERATOR_TYPE"),
    (
      {"CREATE": "1", "ACCELERATOR_TYPE": "v4-8", "PROVISIONING": "cheap"},
      ["a.gin"],
      "PROVISIONING",
    ),
    ({}, ["b = 1"], "gin file"),
    ({"WORKDIR": "runs/relative"}, ["a.gin"], "WORKDIR"),
    ({"SHARD_DIR": "gs://bucket/shards"}, ["a.gin"], "SHARD_DIR"),
  ],
)
def test_bad_settings_fail_in_one_line(fake_gcloud, env, args, named):
  result = _run(PRETRAIN_SH, ["--dry_run", *args], fake_gcloud, env={**POD, **env})
  assert result.returncode != 0
  (line,) = result.stderr.splitlines()
  assert line.startswith("error: ") and named in line
  assert not _commands(result.stdout)


def test_logs_and_stop_reach_every_worker(fake_gcloud):
  env = {"TPU_NAME": "sql-v4-64", "ZONE": "us-central2-b"}  # no WORKDIR or SHARD_DIR needed
  for action, word in (("--logs", "tail"), ("--stop", "kill")):
    result = _run(PRETRAIN_SH, ["--dry_run", action], fake_gcloud, env=env)
    assert result.returncode == 0, result.stderr
    (command,) = _commands(result.stdout)
    assert command[4] == "ssh" and "--worker=all" in command
    assert word in _words(_remote_script(command))
  assert not fake_gcloud[1].exists()


def test_slurm_script_runs_one_process_per_gpu_with_distributed(fake_gcloud):
  sbatch_options = [
    line.split()[1] for line in SLURM_SBATCH.read_text().splitlines() if line.startswith("#SBATCH")
  ]
  options = dict(o.removeprefix("--").split("=", 1) for o in sbatch_options if "=" in o)
  # JAX's Slurm detection gives each process one GPU (SLURM_LOCALID): one task per GPU.
  assert options["ntasks-per-node"] == options["gpus-per-node"]
  assert "gpus-per-task" not in options and "--requeue" in sbatch_options

  env = {"WORKDIR": "gs://bucket/runs/sql", "SHARD_DIR": "/mnt/shards"}
  args = ["--dry_run", "pretrain_near_optimal.gin", *BINDINGS, "--heartbeat_timeout_s=300"]
  result = _run(SLURM_SBATCH, args, fake_gcloud, env=env)
  assert result.returncode == 0, result.stderr
  (srun,) = _commands(result.stdout)
  assert srun[0] == "srun" and "--kill-on-bad-exit=1" in srun
  i = srun.index("scaled_ql.pretrain")
  assert srun[i - 2 : i] == [".venv/bin/python", "-m"] and srun[i + 1 :] == EXPECTED_ARGS
  assert not fake_gcloud[1].exists(), "a dry run called srun"

  result = _run(SLURM_SBATCH, ["--dry_run", "a.gin"], fake_gcloud, unset=("WORKDIR", "SHARD_DIR"))
  assert result.returncode != 0
  (line,) = result.stderr.splitlines()
  assert line.startswith("error: set ") and "WORKDIR" in line and "SHARD_DIR" in line
