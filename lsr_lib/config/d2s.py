"""Hyperparameters of one Dense2Sparse run (DESIGN.md section 2), validated on load."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .expansion_schedule import GATE_MODES, REGULARIZERS, SCHEDULES, expansion_probability
from .typed import check, each, non_negative, one_of, opt_in, positive


@dataclass(frozen=True)
class D2SConfig:
    """Hyperparameters of one D2S run; comments cite DESIGN.md section 2 (paper A / reference code)."""

    # s2: BERT-uncased MLM tied embeddings; paper: distilbert-base-uncased; "minilm" | MLM name/folder | .safetensors
    vocab_init: str = "minilm"
    hidden_dim: Optional[int] = None  # H; None = taken from vocab_init (paper 768, minilm 384)
    shared_head: bool = True  # s2: one head for both modalities in the reference code
    epochs: int = 200  # s2: 200 epochs in the paper
    batch_size: int = 512  # s2
    drop_last: bool = False  # reference DataLoader keeps the last partial batch
    # here: cut each epoch after this many steps (the LR schedule counts the cut epochs); the paper-size rehearsal
    # bounds training with it
    max_steps_per_epoch: Optional[int] = opt_in(None)
    lr_projection: float = 1e-3  # s2: first projection Linear(d, H)
    lr_vocab: float = 5e-5  # s2: LayerNorm + vocabulary layer
    weight_decay: float = 0.0  # s2: AdamW, weight decay 0
    adam_eps: float = 1e-8  # reference code
    warmup_fraction: float = 0.2  # s2: linear warm-up over 20% of steps, then linear decay to 0
    teacher_tau: float = 1e-3  # s2: teacher softmax temperature
    regularizer: str = "l1"  # s2: "l1" (paper) | "flops"
    reg_weight_image: float = 1e-3  # s2: 1e-3 each side; the reference code halves the sum ((q + d) / 2)
    reg_weight_text: float = 1e-3  # s2
    expansion_schedule: str = "linear"  # s2: linear (paper) | constant (p0 = 0: without control) | cosine | step
    expansion_p0: float = 1.0  # s2: p starts at 1.0
    expansion_end_fraction: float = 0.95  # s2: p reaches 0 at 95% of the epochs
    expansion_step_every: float = 0.25  # step schedule: share of the epochs between steps
    expansion_step_gamma: float = 0.5  # step schedule: factor per step
    gate: str = "batch"  # s2: one z per batch (paper) | "example"
    mixed_precision: bool = True  # s2: mixed precision on GPU; ignored on CPU
    amp_dtype: str = "bf16"  # bf16 | fp16 (fp16 uses a GradScaler)
    # bf16 autocast for training on CPU (about 2x faster matmuls on AVX512-BF16 / AMX CPUs); evaluation stays fp32
    cpu_bf16: bool = False
    seed: int = 0  # projection initialisation
    data_seed: int = 1  # batch order
    gate_seed: int = 2  # Bernoulli expansion gate
    eval_every_epochs: int = 1  # s2: reference evaluates every epoch; the last epoch is always evaluated
    # s2 selects the best val R@1 over all epochs (0.0); > 0 skips the first share of epochs, before L1 has sparsified
    # the vectors
    select_from_fraction: float = 0.0
    eval_batch_size: int = 1024

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        check(
            self,
            [
                one_of(self, "expansion_schedule", SCHEDULES),
                one_of(self, "gate", GATE_MODES),
                one_of(self, "regularizer", REGULARIZERS),
                one_of(self, "amp_dtype", ("bf16", "fp16")),
                ("vocab_init", bool(self.vocab_init), '"minilm", an MLM name or folder, or a .safetensors file'),
                ("hidden_dim", self.hidden_dim is None or self.hidden_dim > 0, "> 0 or null"),
                (
                    "max_steps_per_epoch",
                    self.max_steps_per_epoch is None or self.max_steps_per_epoch > 0,
                    "> 0 or null",
                ),
                *positive(
                    self,
                    "epochs batch_size lr_projection lr_vocab adam_eps teacher_tau eval_every_epochs eval_batch_size",
                ),
                *non_negative(self, "weight_decay reg_weight_image reg_weight_text seed data_seed gate_seed"),
                *each(self, "warmup_fraction select_from_fraction", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
                *each(self, "expansion_p0 expansion_step_gamma", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
                *each(self, "expansion_end_fraction expansion_step_every", lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
            ],
        )

    def p(self, epoch: int) -> float:
        """Expansion-control probability for the 0-based ``epoch``."""
        return expansion_probability(
            self.expansion_schedule,
            epoch,
            self.epochs,
            p0=self.expansion_p0,
            end_fraction=self.expansion_end_fraction,
            step_every=self.expansion_step_every,
            step_gamma=self.expansion_step_gamma,
        )
