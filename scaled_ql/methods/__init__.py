"""Methods: what a learning algorithm is, apart from the loop that trains it.

A method is a small frozen dataclass with plain-value fields (bound in gin) and three methods:
`build(game_names) -> base.Learner` (network, loss, optimizer, example batch, policy, transfer
of parameters from another run), `config() -> dict` (what run_info.json records) and the
classmethod `from_config(config)`, with which `load_method` rebuilds it. The trainer knows only `base.Learner`. A new method is a new module
here; nothing else changes.

Modules:
  base: the seam, `Method` and `Learner`.
  loading: rebuilding a run's method (`load_method`) and policy (`load_policy`).
  q_network: what the methods on the multi-game Q-network share (greedy policy, transfer).
  scaled_ql: Scaled QL (C51 or MSE TD, CQL).
  bc: behaviour cloning on the same network.
  decision_transformer: the Multi-Game Decision Transformer (on windowed batches).
  q_guided: a BC or DT policy's sampled actions re-ranked by a Scaled QL critic.
"""

from scaled_ql.methods.base import Learner, Method
from scaled_ql.methods.loading import load_method, load_policy, method_record

__all__ = ["Learner", "Method", "load_method", "load_policy", "method_record"]
