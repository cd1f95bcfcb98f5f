"""Expert and gate blocks for multi-task learning: CGC, PLE, and MMoE / shared-bottom as special cases.

One customized gate control (CGC) level has ``task_experts`` experts per task plus
``shared_experts`` shared ones; each task's gate mixes its own experts and the shared ones. PLE stacks
CGC levels (inner levels also emit a shared output through a gate over all experts). MMoE is one
level with only shared experts; shared-bottom is one level with a single shared expert (no gate).
"""

from __future__ import annotations

from typing import List, Sequence

import tensorflow as tf

from models.layers.blocks import MLP, PACKAGE


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class ExpertGate(tf.keras.layers.Layer):
  """Softmax gate: ``(gate_input [B, D], experts [B, E, H]) -> ([B, H], weights [B, E])``.

  With a single expert there is nothing to choose: the expert passes through with weight 1.
  """

  def __init__(self, num_experts: int, **kwargs):
    super().__init__(**kwargs)
    if int(num_experts) < 1:
      raise ValueError(f"ExpertGate num_experts must be >= 1, got {num_experts}")
    self.num_experts = int(num_experts)

  def build(self, input_shape):
    self._logits = (tf.keras.layers.Dense(self.num_experts, name="logits")
                    if self.num_experts > 1 else None)
    super().build(input_shape)

  def call(self, inputs):
    gate_input, experts = inputs
    if self._logits is None:
      weights = tf.ones([tf.shape(experts)[0], 1], experts.dtype)  # [B, 1]
    else:
      weights = tf.nn.softmax(self._logits(gate_input), axis=-1)  # [B, E]
    return tf.einsum("be,beh->bh", weights, experts), weights

  def get_config(self):
    return dict(super().get_config(), num_experts=self.num_experts)


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class CGC(tf.keras.layers.Layer):
  """One customized-gate-control level.

  Call with one tensor [B, D] (every task and the shared path read it) or a list of
  ``num_tasks + 1`` tensors (per-task inputs, then the shared input, as PLE passes between levels).
  Returns a list of ``num_tasks`` outputs [B, H] (+ the shared output when ``emit_shared``).

  Args:
    num_tasks: number of tasks (>= 1).
    task_experts: experts owned by each task (>= 0).
    shared_experts: experts shared by all tasks (>= 0; task_experts + shared_experts >= 1).
    expert_units: hidden sizes of each expert MLP; the last is the output size H.
    emit_shared: also output a shared representation (inner PLE levels).
  """

  def __init__(self, num_tasks: int, task_experts: int, shared_experts: int,
               expert_units: Sequence[int], emit_shared: bool = False, **kwargs):
    super().__init__(**kwargs)
    if int(num_tasks) < 1:
      raise ValueError(f"CGC num_tasks must be >= 1, got {num_tasks}")
    if int(task_experts) < 0 or int(shared_experts) < 0 or task_experts + shared_experts < 1:
      raise ValueError(f"CGC needs task_experts >= 0, shared_experts >= 0 and at least one expert; "
                       f"got task_experts={task_experts}, shared_experts={shared_experts}")
    if emit_shared and shared_experts < 1:
      raise ValueError("CGC emit_shared needs shared_experts >= 1")
    self.num_tasks, self.task_experts = int(num_tasks), int(task_experts)
    self.shared_experts, self.expert_units = int(shared_experts), [int(u) for u in expert_units]
    self.emit_shared = bool(emit_shared)

  def build(self, input_shape):
    mlp = lambda name: MLP(self.expert_units, name=name)  # noqa: E731
    self._task = [[mlp(f"task{t}_expert{e}") for e in range(self.task_experts)]
                  for t in range(self.num_tasks)]
    self._shared = [mlp(f"shared_expert{e}") for e in range(self.shared_experts)]
    per_task = self.task_experts + self.shared_experts
    self._gates = [ExpertGate(per_task, name=f"task{t}_gate") for t in range(self.num_tasks)]
    all_experts = self.num_tasks * self.task_experts + self.shared_experts
    self._shared_gate = ExpertGate(all_experts, name="shared_gate") if self.emit_shared else None
    super().build(input_shape)

  def call(self, inputs, training=None) -> List[tf.Tensor]:
    if isinstance(inputs, (list, tuple)):
      if len(inputs) != self.num_tasks + 1:
        raise ValueError(f"CGC expects 1 or {self.num_tasks + 1} inputs, got {len(inputs)}")
      task_in, shared_in = list(inputs[:-1]), inputs[-1]
    else:
      task_in, shared_in = [inputs] * self.num_tasks, inputs
    shared = [e(shared_in, training=training) for e in self._shared]  # E_s x [B, H]
    task_outs, owned_all = [], []
    for t in range(self.num_tasks):
      owned = [e(task_in[t], training=training) for e in self._task[t]]  # E_t x [B, H]
      owned_all += owned
      experts = tf.stack(owned + shared, axis=1)  # [B, E_t + E_s, H]
      task_outs.append(self._gates[t]([task_in[t], experts])[0])  # [B, H]
    if self._shared_gate is not None:
      experts = tf.stack(owned_all + shared, axis=1)  # [B, T*E_t + E_s, H]
      task_outs.append(self._shared_gate([shared_in, experts])[0])
    return task_outs

  def get_config(self):
    return dict(super().get_config(), num_tasks=self.num_tasks, task_experts=self.task_experts,
                shared_experts=self.shared_experts, expert_units=self.expert_units,
                emit_shared=self.emit_shared)


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class PLE(tf.keras.layers.Layer):
  """Progressive layered extraction: ``num_levels`` stacked CGC levels. [B, D] -> T x [B, H]."""

  def __init__(self, num_tasks: int, num_levels: int = 2, task_experts: int = 1,
               shared_experts: int = 1, expert_units: Sequence[int] = (64,), **kwargs):
    super().__init__(**kwargs)
    if int(num_levels) < 1:
      raise ValueError(f"PLE num_levels must be >= 1, got {num_levels}")
    self.num_tasks, self.num_levels = int(num_tasks), int(num_levels)
    self.task_experts, self.shared_experts = int(task_experts), int(shared_experts)
    self.expert_units = [int(u) for u in expert_units]

  def build(self, input_shape):
    self._levels = [CGC(self.num_tasks, self.task_experts, self.shared_experts, self.expert_units,
                        emit_shared=level < self.num_levels - 1, name=f"level{level}")
                    for level in range(self.num_levels)]
    super().build(input_shape)

  def call(self, x, training=None):
    out = x
    for level in self._levels:
      out = level(out, training=training)
    return out

  def get_config(self):
    return dict(super().get_config(), num_tasks=self.num_tasks, num_levels=self.num_levels,
                task_experts=self.task_experts, shared_experts=self.shared_experts,
                expert_units=self.expert_units)


def mmoe(num_tasks: int, num_experts: int, expert_units: Sequence[int], name: str = "mmoe") -> CGC:
  """MMoE: one level of shared experts with a gate per task."""
  return CGC(num_tasks, task_experts=0, shared_experts=num_experts, expert_units=expert_units,
             name=name)


def shared_bottom(num_tasks: int, expert_units: Sequence[int], name: str = "shared_bottom") -> CGC:
  """Shared-bottom: one shared expert every task reads (its gate is the identity)."""
  return CGC(num_tasks, task_experts=0, shared_experts=1, expert_units=expert_units, name=name)
