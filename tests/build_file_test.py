"""BUILD lists every module and every test file, so Bazel users build what exists."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _value(node: ast.expr):
  """Starlark values: literals and lists; a call such as `requirement("jax")` becomes a string."""
  if isinstance(node, ast.List):
    return [_value(element) for element in node.elts]
  if isinstance(node, ast.Call):
    return f"{node.func.id}({ast.literal_eval(node.args[0])!r})"
  return ast.literal_eval(node)


def _build_targets() -> dict[str, dict]:
  """Parses BUILD (Starlark, a Python subset) into {target name: keyword arguments}."""
  targets = {}
  for node in ast.parse((ROOT / "BUILD").read_text()).body:
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and node.value.keywords:
      call = node.value
      kwargs = {kw.arg: _value(kw.value) for kw in call.keywords}
      targets[kwargs["name"]] = dict(rule=call.func.id, **kwargs)
  return targets


def _sources(rule: str) -> set[str]:
  return {src for t in _build_targets().values() if t["rule"] == rule for src in t["srcs"]}


def test_every_module_has_a_py_library():
  modules = {
    str(p.relative_to(ROOT))
    for package in ("scaled_ql", "data_prep")
    for p in (ROOT / package).rglob("*.py")
  }
  missing = modules - _sources("py_library") - _sources("py_binary")
  assert not missing, f"modules missing from BUILD: {sorted(missing)}"


def test_every_test_file_has_a_py_test():
  tests = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*_test.py")}
  missing = tests - _sources("py_test")
  assert not missing, f"test files missing from BUILD: {sorted(missing)}"


def test_deps_name_existing_targets():
  targets = _build_targets()
  for name, target in targets.items():
    for dep in target.get("deps", []):
      if dep.startswith(":"):
        assert dep[1:] in targets, f"{name} depends on unknown target {dep}"
