r"""Memory and cost of a configuration's train step before a run: `python -m scaled_ql.plan`.

  python -m scaled_ql.plan --gin_file=pretrain_near_optimal.gin \
      [--per_device_batch=8] [--precision=bfloat16] [--remat=true] [--devices=v3,v4,h100,h200]

Compiles the configuration's train step ahead of time on the machine at hand (`jax.jit(step)
.lower(...).compile()`, no accelerator needed, nothing runs) for one device's share of the global
batch, in float32 and bfloat16, with and without rematerialisation, each at two per-device
batches (N and 4N), and prints:
  * parameters, FLOPs per example and per global step (XLA's cost analysis);
  * per-device bytes (XLA's memory analysis): arguments (the train state and the batch),
    temporaries, peak (arguments + outputs - donated + temporaries); and the backward pass's
    activations, traced without a compiler (`activation_bytes`: autodiff's residuals, plus the
    largest rematerialised block's own, live while the backward pass recomputes it);
  * the largest per-device batch that fits each device, b a divisor of the global batch (one
    device per b examples: data parallel, the state replicated), with
        peak(b) = fixed + b * activations per example <= usable_fraction * memory,
    fixed being the intercept of XLA's peak through the two compiles (state, gradients, the
    optimizer's temporaries).

Why autodiff's activations and not XLA's own slope: XLA:CPU computes bfloat16 products in float32
(its bfloat16 steps needed as many bytes per example as float32 ones) and its schedule does not
realise rematerialisation's savings (neither did fewer bytes per example), which GPU and TPU
compilers do. Autodiff's residuals are what any compiler must keep unless it recomputes them;
fusion can recompute cheap ones (XLA:CPU kept 22.5 MiB per ResNet-101 example in float32 where
autodiff saves 44), so the batches are conservative. A TPU also pads each array's two minor
dimensions to tiles (8 x 128). On an accelerator the XLA figures are that device's own.
"""

import dataclasses
import re
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import app, flags

from scaled_ql import cli, compute, configurables, train_step
from scaled_ql.cli import UserError

GIB, GB = 2**30, 10**9
# name: (label, bytes of memory of one device as the vendor states it).
DEVICES = {
  "v3": ("TPU v3 core", 16 * GIB),  # 32 GiB HBM per chip, 2 cores (cloud.google.com/tpu/docs/v3)
  "v4": ("TPU v4 chip", 32 * GIB),  # cloud.google.com/tpu/docs/v4
  "a100": ("A100 80GB", 80 * GIB),
  "h100": ("H100 80GB", 80 * GIB),
  "h200": ("H200", 141 * GB),
}

_PER_DEVICE_BATCH = flags.DEFINE_integer(
  "per_device_batch", 8, "Compile at this per-device batch and at 4x it (must divide the global)."
)
_PRECISION = flags.DEFINE_list(
  "precision", ["float32", "bfloat16"], f"Precisions to plan, of {', '.join(compute.PRECISIONS)}."
)
_REMAT = flags.DEFINE_list("remat", ["false", "true"], "Rematerialisation settings to plan.")
_DEVICES = flags.DEFINE_list(
  "devices", ["v3", "v4", "h100", "h200"], f"Of {', '.join(DEVICES)}, or sizes such as 24GiB."
)
_USABLE = flags.DEFINE_float(
  "usable_fraction", 0.9, "Share of a device's memory a run may fill (runtime, fragmentation)."
)


@dataclasses.dataclass(frozen=True)
class Training:
  """What a configuration trains (from its gin bindings of `train`)."""

  name: str
  method: Any
  game_names: tuple[str, ...]
  global_batch_size: int
  ema_decay: float


class Footprint(NamedTuple):
  """XLA's analysis of one device's train step at one per-device batch, and the activation bytes
  of its backward pass (`activation_bytes`)."""

  per_device_batch: int
  flops: float
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  activation_bytes: int
  compile_seconds: float

  @property
  def peak_bytes(self) -> int:
    """Live at once: the arguments, the outputs not written over donated arguments, temporaries."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes


def configured_training(name: str) -> Training:
  """The training the parsed gin configures (`configurables.parse_gin` first)."""
  arguments = configurables.train_arguments()
  for needed, example in (("method", "@methods.ScaledQL()"), ("game_names", "['Pong']")):
    if needed not in arguments:  # e.g. finetune_*.gin, whose games the finetune command binds
      raise UserError(
        f'{name} binds no train.{needed}: add --gin_bindings="train.{needed} = {example}"'
      )
  return Training(
    name=name,
    method=arguments["method"],
    game_names=tuple(arguments["game_names"]),
    global_batch_size=arguments["global_batch_size"],
    ema_decay=arguments["ema_decay"],
  )


def _shapes(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), tree)


def _nbytes(tree) -> int:
  """Bytes of the arrays (or their shapes) in a tree; PRNG keys (a few bytes each) not counted."""
  return sum(
    int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
    for x in jax.tree.leaves(tree)
    if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended)
  )


_REMAT_PRIMITIVES = ("checkpoint", "remat2")  # jax.checkpoint's, by jax version


def activation_bytes(learner, state, batch) -> int:
  """Activation bytes of the loss's backward pass, traced on shapes alone (no compiler): what it
  keeps from the forward pass (the residuals of `jax.vjp`; a rematerialised block keeps only its
  input), plus the largest rematerialised block's own residuals, live while its backward pass
  runs."""
  args = (state.params, state.target_params, batch, state.rng)

  def loss(params, target_params, batch, rng):
    return learner.loss_fn(params, target_params, batch, rng)[0]

  saved = _residual_bytes(lambda p, *rest: loss(p, *rest), args, argnums=1)
  blocks = [e.params["jaxpr"] for e in equations(jax.make_jaxpr(loss)(*args).jaxpr)
            if e.primitive.name in _REMAT_PRIMITIVES]  # fmt: skip
  recomputed = [
    _residual_bytes(
      jax.extend.core.jaxpr_as_fun(jax.extend.core.ClosedJaxpr(block, [])),
      [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in block.invars],
      argnums=len(block.invars),
    )
    for block in blocks
  ]
  return saved + max(recomputed, default=0)


def _residual_bytes(fn, args, argnums: int) -> int:
  """Bytes of the residuals of `jax.vjp` of fn with respect to its first `argnums` arguments."""

  def residuals(*args):
    return jax.vjp(lambda *diff: fn(*diff, *args[argnums:]), *args[:argnums])[1]

  return _nbytes(jax.eval_shape(residuals, *args))


def equations(jaxpr):
  """Every equation of a jaxpr and of the jaxprs nested in it (jit, remat, custom_jvp)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, tuple | list) else (value,):
        inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
        if hasattr(inner, "eqns"):
          yield from equations(inner)


def footprint(training: Training, compute_config, per_device_batch: int) -> Footprint:
  """Compiles the trainer's own step (`train_step.make_train_step` on the method's learner) for
  `per_device_batch` examples on one device; nothing is allocated or run."""
  learner = training.method.build(training.game_names, compute_config)
  target = learner.target_update_period is not None
  state = jax.eval_shape(
    lambda: train_step.init_train_state(
      jax.random.PRNGKey(0), learner.init, learner.optimizer, target=target,
      ema=training.ema_decay > 0,
    )
  )  # fmt: skip
  step_fn = train_step.make_train_step(
    learner.loss_fn, learner.optimizer, learner.target_update_period, ema_decay=training.ema_decay
  )
  batch = _shapes(learner.example_batch(per_device_batch))
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  seconds = time.perf_counter() - start
  memory, cost = compiled.memory_analysis(), compiled.cost_analysis()
  if isinstance(cost, list | tuple):  # Older jax: one dict per program.
    cost = cost[0]
  return Footprint(
    per_device_batch, float(cost["flops"]), memory.argument_size_in_bytes,
    memory.output_size_in_bytes, memory.alias_size_in_bytes, memory.temp_size_in_bytes,
    activation_bytes(learner, state, batch), seconds,
  )  # fmt: skip


class Line(NamedTuple):
  """Peak bytes ~ fixed_bytes + per_example_bytes * per-device batch, from two footprints: the
  intercept of XLA's peak, the slope of the activation bytes (see the module's docstring)."""

  fixed_bytes: float
  per_example_bytes: float
  xla_per_example_bytes: float  # XLA's own slope, for comparison

  @classmethod
  def through(cls, a: Footprint, b: Footprint) -> "Line":
    extra = b.per_device_batch - a.per_device_batch
    xla_slope = (b.peak_bytes - a.peak_bytes) / extra
    activation_slope = (b.activation_bytes - a.activation_bytes) / extra
    return cls(a.peak_bytes - xla_slope * a.per_device_batch, activation_slope, xla_slope)

  def peak_bytes(self, per_device_batch: int) -> float:
    return self.fixed_bytes + self.per_example_bytes * per_device_batch


def largest_batch(line: Line, memory_bytes: float, global_batch_size: int) -> int | None:
  """The largest divisor of the global batch whose predicted peak fits `memory_bytes`; None when
  not even one example fits (the state alone may not: split it with `train.fsdp = True`)."""
  fitting = [b for b in _divisors(global_batch_size) if line.peak_bytes(b) <= memory_bytes]
  return max(fitting, default=None)


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def parse_devices(names: Sequence[str]) -> dict[str, int]:
  """{column label: bytes} for device names or sizes ("24GiB", "40GB"); a UserError otherwise."""
  devices = {}
  for name in names:
    size = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(GiB|GB)", name.strip(), re.IGNORECASE)
    if size:
      unit = GIB if size.group(2).lower() == "gib" else GB
      devices[name.strip()] = int(float(size.group(1)) * unit)
    elif name.strip().lower() in DEVICES:
      label, memory = DEVICES[name.strip().lower()]
      devices[f"{label} {_size(memory)}"] = memory
    else:
      known = ", ".join(f"{k} ({label}, {_size(m)})" for k, (label, m) in DEVICES.items())
      raise UserError(
        f"unknown device {name!r} in --devices; known: {known}; or a size, e.g. 24GiB"
      )
  return devices


def check_per_device_batch(per_device_batch: int, global_batch_size: int) -> None:
  """A per-device batch must split the global batch evenly (one device per share)."""
  if per_device_batch < 1 or global_batch_size % per_device_batch:
    divisors = ", ".join(map(str, _divisors(global_batch_size)))
    raise UserError(
      f"--per_device_batch={per_device_batch} does not divide the global batch "
      f"{global_batch_size} (train.global_batch_size); use one of {divisors}"
    )


def _size(num_bytes: float) -> str:
  """3 significant digits in GiB, or MiB below 1000 MiB."""
  mib = num_bytes / 2**20
  return f"{num_bytes / GIB:.3g} GiB" if mib >= 999.5 else f"{mib:.3g} MiB"


def _num_params(training: Training) -> int:
  learner = training.method.build(training.game_names)
  shapes = jax.eval_shape(learner.init, jax.random.PRNGKey(0))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


def main() -> None:
  gin_files, gin_bindings = cli.gin_files_and_bindings()
  # -- Every flag and the configuration checked before anything compiles.
  devices = parse_devices(_DEVICES.value)
  if set(_REMAT.value) - {"true", "false"}:
    raise UserError(f"--remat={','.join(_REMAT.value)}: give true and/or false")
  if set(_PRECISION.value) - set(compute.PRECISIONS):
    raise UserError(
      f"--precision={','.join(_PRECISION.value)}: give {', '.join(compute.PRECISIONS)}"
    )
  if not 0 < _USABLE.value <= 1:
    raise UserError(f"--usable_fraction={_USABLE.value}: give a fraction in (0, 1]")
  configs = [compute.resolve(p, r == "true") for p in _PRECISION.value for r in _REMAT.value]
  configurables.parse_gin(gin_files, gin_bindings)
  training = configured_training(", ".join(gin_files))
  batch = _PER_DEVICE_BATCH.value
  check_per_device_batch(batch, training.global_batch_size)

  # -- Two compiles per precision and remat setting.
  start = time.perf_counter()
  print(
    f"{training.name}: {training.method.name}, {len(training.game_names)} games, global batch "
    f"{training.global_batch_size}, {_num_params(training) / 1e6:.2f}M parameters (as "
    f"allocated); compiled for {jax.devices()[0].platform} (jax {jax.__version__}) at per-device "
    f"batch {batch} and {4 * batch}\n"
  )
  print("| precision | remat | per-device batch | GFLOP / example | TFLOP / global step | "
        "arguments | temporaries | peak (XLA) | activations (autodiff) | compile s |\n"
        "|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
  lines = {}
  for config in configs:
    pair = [footprint(training, config, b) for b in (batch, 4 * batch)]
    for f in pair:
      per_example = f.flops / f.per_device_batch
      print(f"| {_label(config)} | {f.per_device_batch} | {per_example / 1e9:.3g} | "
            f"{per_example * training.global_batch_size / 1e12:.3g} | {_size(f.argument_bytes)} | "
            f"{_size(f.temp_bytes)} | {_size(f.peak_bytes)} | {_size(f.activation_bytes)} | "
            f"{f.compile_seconds:.0f} |",
            flush=True)  # fmt: skip
    lines[config] = Line.through(*pair)
  _print_fits(lines, devices, training.global_batch_size, _USABLE.value)
  print(f"\nplanned in {time.perf_counter() - start:.0f} s ({2 * len(configs)} compiles)")


def _print_fits(lines: dict, devices: dict[str, int], global_batch_size: int, usable: float):
  print(f"\nLargest per-device batch b with fixed + b x activations per example within "
        f"{usable:.0%} of the device's memory (devices for the global batch of "
        f"{global_batch_size} in brackets):\n")  # fmt: skip
  print("| precision | remat | fixed (XLA) | per example: activations (XLA's slope) | "
        + " | ".join(devices) + " |")  # fmt: skip
  print("|---|---|---|---|" + "---|" * len(devices))
  for config, line in lines.items():
    cells = []
    for memory in devices.values():
      fits = largest_batch(line, usable * memory, global_batch_size)
      cells.append(
        "state does not fit" if fits is None else f"{fits} ({global_batch_size // fits})"
      )
    print(f"| {_label(config)} | {_size(line.fixed_bytes)} | {_size(line.per_example_bytes)} "
          f"({_size(line.xla_per_example_bytes)}) | " + " | ".join(cells) + " |")  # fmt: skip


def _label(config: compute.ComputeConfig) -> str:
  return f"{config.dtype.name} | {'yes' if config.remat else 'no'}"


if __name__ == "__main__":
  app.run(lambda argv: cli.run_main(main))
