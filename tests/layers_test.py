"""The architecture's import rules, read from the source (imports inside functions included),
and the environment that launch/setup.sh makes."""

import ast
import importlib.metadata
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENTRY_POINTS = {"scaled_ql.pretrain", "scaled_ql.finetune", "scaled_ql.evaluate", "scaled_ql.count_params",
                "scaled_ql.plan", "scaled_ql.configurables", "scaled_ql.cli"}  # fmt: skip


def _module_path(name: str) -> pathlib.Path | None:
  path = ROOT / name.replace(".", "/")
  for candidate in (path.with_suffix(".py"), path / "__init__.py"):
    if candidate.exists():
      return candidate
  return None


def _imports(name: str) -> set[str]:
  """Every module `name` imports anywhere in its source (`from a import b` gives a and a.b)."""
  tree = ast.parse(_module_path(name).read_text())
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      found.add(node.module)
      found.update(f"{node.module}.{alias.name}" for alias in node.names)
  return found


def _closure(name: str) -> set[str]:
  """The project modules `name` reaches through imports, and the third-party ones they name."""
  seen, todo = set(), [name]
  while todo:
    module = todo.pop()
    if module in seen:
      continue
    seen.add(module)
    if _module_path(module) is not None:
      todo.extend(_imports(module))
  return {m for m in seen if _module_path(m) is not None or not m.startswith("scaled_ql")}


@pytest.mark.parametrize("model_module", ["scaled_ql.networks", "scaled_ql.losses"])
def test_the_model_layer_imports_no_data_config_entry_point_or_tensorflow(model_module):
  reached = _closure(model_module)
  forbidden = sorted(
    m for m in reached
    if m.startswith(("scaled_ql.data", "data_prep", "tensorflow", "scaled_ql.report"))
    or m in ENTRY_POINTS or m in {"gin", "scaled_ql.trainer", "scaled_ql.methods"}
  )  # fmt: skip
  assert not forbidden, f"{model_module} reaches {forbidden}"


def test_the_network_loads_no_tensorflow_at_run_time():
  # losses.py's only TensorFlow is rlax's: its TFP JAX backend imports TensorFlow when it is
  # installed (to copy docstrings), which no import of ours can avoid; the network has none.
  code = "import sys, scaled_ql.networks; print('tensorflow' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-3000:]


def test_the_data_layer_never_imports_the_learner():
  for path in sorted((ROOT / "scaled_ql" / "data").glob("*.py")):
    name = "scaled_ql.data." + path.stem if path.stem != "__init__" else "scaled_ql.data"
    reached = _closure(name)
    learner = sorted(m for m in reached if m.split(".")[0] in ("jax", "haiku", "optax", "rlax")
                     or m in ENTRY_POINTS or m.startswith(("scaled_ql.methods", "scaled_ql.train")))  # fmt: skip
    assert not learner, f"{name} reaches {learner}"


def test_rlax_works_in_the_environment_setup_makes():
  # tfp-nightly, not the stable tensorflow-probability that breaks rlax with this jax.
  with pytest.raises(importlib.metadata.PackageNotFoundError):
    importlib.metadata.version("tensorflow-probability")
  assert importlib.metadata.version("tfp-nightly")
  code = ("import jax.numpy as jnp, rlax; "
          "print(rlax.categorical_l2_project(jnp.array([0.25]), jnp.array([1.0]), "
          "jnp.array([0.0, 0.5])))")  # fmt: skip
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.split() == ["[0.5", "0.5]"], out.stdout
