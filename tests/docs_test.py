"""The README and docs/ say only what exists: links, commands, flags, gin files, launchers.

Read from the Markdown itself:
  * every relative link and image points to a file, and every `#anchor` to a heading there;
  * every `python -m scaled_ql.X` / `python -m data_prep.X` names a runnable module, and every
    `--flag` written after it is a flag that module defines when run (its own `DEFINE_*` calls,
    those of the modules it imports at their top level, such as `scaled_ql/cli.py`, and absl's);
  * every gin file named exists (braces and `*` expanded) and parses;
  * every `launch/...` file named exists;
and from the launchers: every environment variable a launcher documents in its header comment
is read by its code.
"""

import ast
import functools
import itertools
import pathlib
import re

import pytest
from absl import flags

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
GIN_DIR = ROOT / "gin"
# Gin files the docs name that are not in gin/: a run directory's own record, and the example
# of how to add an ablation.
NOT_IN_GIN_DIR = {"operative_config.gin", "my_idea.gin"}
# absl's own flags, defined by absl.app at start-up or handled by its parser.
ABSL_FLAGS = {"help", "helpfull", "helpshort", "helpxml", "flagfile", "undefok", "v"}
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_INLINE_CODE = re.compile(r"`([^`]+)`")
_MODULE = re.compile(r"python -m ((?:scaled_ql|data_prep)(?:\.\w+)*)")
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9_]*)")
_GIN = re.compile(r"(?<![\w/.{},*-])([\w/.{},*-]*[\w}*]\.gin)\b")
_LAUNCHER = re.compile(r"(?<![\w/.])launch/[\w.-]*\w")


def _text(path: pathlib.Path) -> str:
  return path.read_text()


def _code(text: str) -> list[str]:
  """The fenced blocks and inline code spans of a Markdown text."""
  blocks = [m.group(0) for m in _FENCE.finditer(text)]
  prose = _FENCE.sub("", text)
  return blocks + [m.group(1) for m in _INLINE_CODE.finditer(prose)]


def _slug(heading: str) -> str:
  """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.

  Underscores inside a word (`data_quality.sh`) stay, as on GitHub; those of emphasis go.
  """
  text = re.sub(r"[`*\[\]]|(?<!\w)_|_(?!\w)|\(([^)]*)\)", lambda m: m.group(1) or "",
                heading.strip().lower())
  return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: pathlib.Path) -> set[str]:
  anchors, seen = set(), {}
  for line in _FENCE.sub("", _text(path)).splitlines():
    if line.startswith("#"):
      slug = _slug(line.lstrip("#"))
      n = seen.get(slug, 0)
      seen[slug] = n + 1
      anchors.add(slug if n == 0 else f"{slug}-{n}")
  return anchors


def _commands(code: str) -> list[tuple[str, list[str]]]:
  """(module, flags written after it) for each `python -m` command in a piece of code."""
  found = []
  for line in code.replace("\\\n", " ").splitlines():
    line = re.split(r"(?:^|\s)#", line)[0]
    for m in _MODULE.finditer(line):
      rest = re.split(r"&&|;|\||python -m ", line[m.end() :])[0]
      found.append((m.group(1), _FLAG.findall(rest)))
  return found


# -- Flags a module defines when run as a program.


def _module_file(module: str) -> pathlib.Path | None:
  path = ROOT / module.replace(".", "/")
  for candidate in (path.with_suffix(".py"), path / "__init__.py"):
    if candidate.exists():
      return candidate
  return None


def _is_main_block(node: ast.stmt) -> bool:
  return isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)


def _imports(nodes) -> set[str]:
  """Modules of this repository that the statements import (and the packages above them)."""
  names = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      names |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
  local = set()
  for name in names:
    if name.split(".")[0] in ("scaled_ql", "data_prep"):
      parts = name.split(".")
      local |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
  return {name for name in local if _module_file(name)}


def _defined(nodes) -> set[str]:
  names = set()
  for node in nodes:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
      if node.func.attr.startswith("DEFINE_"):
        arg = node.args[0] if node.args else next(
          (k.value for k in node.keywords if k.arg == "name"), None
        )
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
          names.add(arg.value)
  return names


def _top_level(tree: ast.Module) -> list[ast.AST]:
  """The nodes that run on import: not in functions, classes or the `__main__` block."""
  nodes, stack = [], [n for n in tree.body if not _is_main_block(n)]
  while stack:
    node = stack.pop()
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
      continue
    nodes.append(node)
    stack.extend(ast.iter_child_nodes(node))
  return nodes


@functools.cache
def _on_import(module: str) -> tuple[frozenset[str], frozenset[str]]:
  """(flags defined, modules imported) when `module` is imported."""
  nodes = _top_level(ast.parse(_module_file(module).read_text()))
  return frozenset(_defined(nodes)), frozenset(_imports(nodes))


def _import_time_flags(modules: set[str]) -> set[str]:
  """The flags defined by importing `modules` and, in turn, everything they import."""
  names, seen, todo = set(), set(), list(modules)
  while todo:
    module = todo.pop()
    if module not in seen:
      seen.add(module)
      defined, imported = _on_import(module)
      names |= defined
      todo.extend(imported)
  return names


@functools.cache
def _absl_flags() -> frozenset[str]:
  from absl import app, logging  # noqa: F401  (they define absl's own flags)

  by_module = flags.FLAGS.flags_by_module_dict()
  names = {f.name for m, fs in by_module.items() if m.startswith("absl.") for f in fs}
  return frozenset(names | ABSL_FLAGS)


def program_flags(module: str) -> set[str]:
  """The flags `python -m module` accepts: everything its file defines when run as the main
  program, with what its imports define on import."""
  path = _module_file(module)
  if path.name == "__init__.py":  # `python -m package` runs package/__main__.py.
    module, path = f"{module}.__main__", path.with_name("__main__.py")
  nodes = list(ast.walk(ast.parse(path.read_text())))
  return _defined(nodes) | set(_absl_flags()) | _import_time_flags(_imports(nodes) - {module})


def _runnable(module: str) -> bool:
  path = _module_file(module)
  if path is None:
    return False
  if path.name == "__init__.py":
    return path.with_name("__main__.py").exists()
  return any(_is_main_block(n) for n in ast.parse(path.read_text()).body)


# -- Gin files.


def _expand_braces(name: str) -> list[str]:
  m = re.search(r"\{([^{}]*)\}", name)
  if not m:
    return [name]
  return list(
    itertools.chain.from_iterable(
      _expand_braces(name[: m.start()] + option + name[m.end() :])
      for option in m.group(1).split(",")
    )
  )


def _gin_files(name: str) -> list[pathlib.Path]:
  """The files in gin/ that a name in the docs means: a path under gin/ (with or without
  `gin/`), or a file name found in one of its folders (`dt_40m.gin` beside `models/dt_10m.gin`)."""
  name = name.removeprefix("gin/")
  found = sorted(GIN_DIR.glob(name))
  return found or sorted(GIN_DIR.rglob(pathlib.PurePath(name).name))


# -- The tests.


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_images_resolve(doc):
  prose = _FENCE.sub("", _text(doc))
  bad = []
  for target in _LINK.findall(prose):
    if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
      continue
    file, _, anchor = target.partition("#")
    path = (doc.parent / file).resolve() if file else doc
    if not path.exists():
      bad.append(f"{target}: no such file")
    elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
      bad.append(f"{target}: no heading with that anchor")
  assert not bad, f"{doc.relative_to(ROOT)}: {bad}"


def test_docs_link_back_to_the_readme():
  for doc in DOCS:
    if doc.parent == ROOT / "docs":
      assert "](../README.md)" in _text(doc).split("\n\n")[0], f"{doc.name}: no link back"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_name_modules_and_their_flags(doc):
  commands = [c for code in _code(_text(doc)) for c in _commands(code)]
  bad = []
  for module, written in commands:
    if not _runnable(module):
      bad.append(f"python -m {module}: no such program")
      continue
    accepted = program_flags(module)
    unknown = [f for f in written if f not in accepted and f.removeprefix("no") not in accepted]
    if unknown:
      bad.append(f"python -m {module}: unknown flags {unknown}")
  assert not bad, f"{doc.relative_to(ROOT)}: {bad}"


def _named_gin_files() -> dict[str, list[pathlib.Path]]:
  named = {}
  for doc in DOCS:
    for name in _GIN.findall(_text(doc)):
      for expanded in _expand_braces(name):
        if pathlib.PurePath(expanded).name not in NOT_IN_GIN_DIR:
          named[expanded] = _gin_files(expanded)
  return named


def test_gin_files_named_exist_and_parse():
  from scaled_ql import configurables

  named = _named_gin_files()
  assert "local.gin" in named and "pretrain_near_optimal.gin" in named  # the scan finds them
  missing = [name for name, files in named.items() if not files]
  assert not missing, f"gin files named in the docs that do not exist: {missing}"
  for path in sorted(set(itertools.chain.from_iterable(named.values()))):
    configurables.parse_gin([str(path.relative_to(GIN_DIR))], [])


def test_launchers_named_exist():
  named = {name for doc in DOCS for name in _LAUNCHER.findall(_text(doc))}
  assert "launch/local.sh" in named
  missing = sorted(name for name in named if not (ROOT / name).exists())
  assert not missing, f"launchers named in the docs that do not exist: {missing}"


def _header_and_body(script: pathlib.Path) -> tuple[str, str]:
  lines = script.read_text().splitlines()
  start = 1 if lines and lines[0].startswith("#!") else 0
  end = next((i for i in range(start, len(lines)) if not lines[i].startswith("#")), len(lines))
  return "\n".join(lines[start:end]), "\n".join(lines[end:])


def documented_variables(header: str) -> set[str]:
  """Upper-case names a header documents as settings: `NAME=...`, `# NAME: ...` at the start
  of a comment line, or `NAME (default ...)` / `NAME, default ...`."""
  name = r"([A-Z][A-Z0-9_]{2,})"
  return (
    set(re.findall(rf"(?<![\w$]){name}=", header))
    | set(re.findall(rf"^#\s*{name}:", header, re.M))
    | set(re.findall(rf"(?<![\w$]){name},?\s+\(?default\b", header))
  )


@pytest.mark.parametrize(
  "script", sorted((ROOT / "launch").glob("*.s*")), ids=lambda p: p.name
)
def test_launchers_read_the_variables_their_header_documents(script):
  header, body = _header_and_body(script)
  documented = documented_variables(header)
  # Read (`$NAME`, `${NAME:-...}`), or set by the script for a command it runs
  # (pretrain.sh's `EXTRAS=tpu bash launch/setup.sh`).
  unread = sorted(v for v in documented if not re.search(rf"\$\{{?{v}\b|(?<![\w$]){v}=", body))
  assert not unread, f"{script.name} documents {unread} but does not read them"


def test_the_scans_find_what_they_look_for():
  """The parsers above on known text, so that a test passing on nothing cannot pass."""
  code = 'python -m scaled_ql.evaluate --workdir=RUN \\\n  [--games=Pong] # --not_a_flag\n'
  assert _commands(code) == [("scaled_ql.evaluate", ["workdir", "games"])]
  assert {"workdir", "games", "gin_file", "verbosity"} <= program_flags("scaled_ql.evaluate")
  assert "games" not in program_flags("scaled_ql.pretrain")  # evaluate's own, not imported
  assert "workdir" in program_flags("scaled_ql.pretrain")  # from scaled_ql/cli.py
  assert "runs" in program_flags("scaled_ql.report")  # a package's __main__.py
  assert _expand_braces("finetune_{online,offline}.gin") == [
    "finetune_online.gin",
    "finetune_offline.gin",
  ]
  assert _slug("The paper's findings in `miniature`") == "the-papers-findings-in-miniature"
  header = "# WORKDIR (default x) holds it\n#   ONLINE=B:1   GAME:VARIANT pairs\n# SHARD_DIR: shards"
  assert documented_variables(header) == {"WORKDIR", "ONLINE", "SHARD_DIR"}
