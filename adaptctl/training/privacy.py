"""DP-SGD inside the Transformers Trainer, through Opacus (train.privacy; docs/privacy.md).

Opacus needs three things of a training loop: batches drawn by Poisson sampling, hooks that compute
each example's gradient, and an optimizer that clips those gradients, sums them, adds Gaussian noise
and tells the accountant.  Everything else a run needs (checkpoints, resume, schedulers, logging, the
finite-loss guard, the graceful stop) is the Trainer's, so DP-SGD is a mixin on the session's Trainer
class rather than a loop of our own:

- get_train_dataloader: Opacus' DPDataLoader (Poisson sampling at rate 1 / batches per epoch, as
  PrivacyEngine.make_private derives it), kept out of accelerate's prepare, which would re-batch it;
- create_optimizer: the Trainer's AdamW, handed to PrivacyEngine.make_private with the noise
  multiplier that reaches the target epsilon over the run's steps; Opacus 1.6 attaches its hooks
  without wrapping the model (wrap_model=False), so the Trainer saves a normal model or adapter;
- compute_loss: the mean of per-example losses, so that no example's gradient depends on another
  example (a causal LM's token mean over the whole batch would couple them);
- the accountant's history is saved in every checkpoint and restored on resume, so a resumed run
  reports the epsilon an undisturbed one does.

The sampling and noise generators are seeded from the operating system, never from the recipe's seed:
a seed written in recipe.yaml and the model card would let anyone replay the noise and the batches.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from adaptctl.core import console
from adaptctl.core.errors import RunFailed

if TYPE_CHECKING:  # a mixin: mypy sees it as the Trainer it is mixed into (private()); at run time its base is object
    from transformers import Trainer as _MixedInto
else:
    _MixedInto = object

LEDGER = "privacy.json"   # in each checkpoint: the accountant's history and the mechanism's settings


def default_delta(rows: int) -> float:
    """The largest power of ten at or below 1 / (10 x rows): well under 1 / rows, as DP-SGD needs."""
    return 10.0 ** -math.ceil(math.log10(10 * rows))


def data_problems(privacy, train, rows: int, world_size: int) -> list[tuple[tuple, str, str]]:
    """What only the prepared data and the launch decide: (recipe field, message, hint) triples."""
    problems: list[tuple[tuple, str, str]] = []
    if world_size > 1:
        problems.append((("train", "privacy"), (f"DP-SGD runs in one process here, and {world_size} were started (each "
                         "would sample and add noise on its own, which the accountant does not cover)"),
                         "run without --nproc / torchrun"))
    if train.batch_size >= rows:
        problems.append((("train", "batch_size"), (f"Poisson sampling draws each of the {rows} training rows with "
                         f"probability batch_size / rows, and batch_size {train.batch_size} leaves nothing to sample"),
                         f"set train.batch_size below {rows} (a few percent of the rows is usual)"))
    if privacy.delta is not None and privacy.delta >= 1 / rows:
        problems.append((("train", "privacy", "delta"), (f"delta {privacy.delta:g} is not below 1 / training rows "
                         f"(1/{rows} = {1 / rows:.3g}): a mechanism that may publish one row outright would meet it"),
                         f"use {default_delta(rows):g} (or remove delta for that default)"))
    return problems


def secret_generator() -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(int.from_bytes(os.urandom(8), "little"))
    return generator


@dataclass
class Spent:
    """The privacy figures of a run, for the manifest, metrics, report and model card."""
    epsilon: float
    delta: float
    target_epsilon: float
    noise_multiplier: float
    sample_rate: float
    expected_batch_size: float
    steps: int
    max_grad_norm: float
    accountant: str
    training_rows: int

    def document(self) -> dict:
        return {"epsilon": round(self.epsilon, 4), "delta": self.delta, "target_epsilon": self.target_epsilon,
                "noise_multiplier": round(self.noise_multiplier, 6), "sample_rate": round(self.sample_rate, 8),
                "expected_batch_size": round(self.expected_batch_size, 2), "steps": self.steps,
                "max_grad_norm": self.max_grad_norm, "accountant": self.accountant,
                "training_rows": self.training_rows, "sampling": "poisson", "clipping": "per-example, flat"}


class PrivateTraining(_MixedInto):
    """Mixed into the session's Trainer class (before it) when the recipe sets train.privacy."""

    privacy: Any = None             # the recipe's train.privacy section (set by the session)
    noise_generator: torch.Generator | None = None    # tests pass a seeded one to replay a step
    sampler_generator: torch.Generator | None = None

    # ------------------------------------------------------------- the data
    def get_train_dataloader(self):
        from opacus.data_loader import DPDataLoader
        from torch.utils.data import DataLoader

        plain = DataLoader(self.train_dataset, batch_size=self._train_batch_size, collate_fn=self.data_collator,
                           num_workers=self.args.dataloader_num_workers)
        loader = DPDataLoader.from_data_loader(plain, generator=self.sampler_generator or secret_generator())
        loader.batch_sampler.steps = len(plain)  # its own int(1 / (1 / batches)) may round one below
        # An empty first Poisson batch is built by Opacus from dataset[0]'s Python types, which torch.zeros
        # refuses; with a collated row as its model, an empty batch is every tensor with 0 rows.
        if len(self.train_dataset):
            loader.collate_fn.first_batch = self.data_collator([self.train_dataset[0]])
        self._private_loader = loader
        return loader

    # -------------------------------------------------------- the optimizer
    def create_optimizer(self, model=None):
        from opacus.optimizers import DPOptimizer

        optimizer = super().create_optimizer(model)
        if isinstance(optimizer, DPOptimizer):
            return optimizer
        from opacus import PrivacyEngine

        loader, settings = self._private_loader, self.privacy
        rows = len(loader.dataset)
        self._delta = settings.delta if settings.delta is not None else default_delta(rows)
        sample_rate = 1 / len(loader)
        sigma = noise_multiplier(settings, self._delta, sample_rate, self.state.max_steps)
        from opacus.validators.errors import UnsupportedModuleError

        self.model.train()  # Opacus' validator checks the mode; the Trainer sets it only at the first step
        with warnings.catch_warnings():  # "Secure RNG turned off": the generators above are seeded from os.urandom
            warnings.simplefilter("ignore")
            self._engine = PrivacyEngine(accountant=settings.accountant)
            try:
                self._hooks, self.optimizer, _ = self._engine.make_private(
                    module=self.model, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma,
                    max_grad_norm=settings.max_grad_norm, poisson_sampling=False, wrap_model=False,
                    noise_generator=self.noise_generator or secret_generator())
            except UnsupportedModuleError as exc:
                from adaptctl.core.errors import UserError

                raise UserError(f"train.privacy: Opacus cannot compute per-example gradients of this model: {exc}",
                                hint="use method lora (its adapters are plain linear layers), or remove train.privacy") from None
        self._hooks.forbid_grad_accumulation()  # a second backward before the step would be an error, not a mix
        self._dp_optimizer = self.optimizer
        console.info(f"train: DP-SGD: noise multiplier {sigma:.4f} reaches epsilon {settings.epsilon:g} at delta "
                     f"{self._delta:g} over {self.state.max_steps} steps ({settings.accountant} accountant); "
                     f"Poisson batches of {rows * sample_rate:.1f} rows expected (rate {sample_rate:.4g}), "
                     f"each example's gradient clipped to {settings.max_grad_norm:g}")
        return self.optimizer

    # -------------------------------------------------------------- the step
    def training_step(self, model, inputs, num_items_in_batch=None):
        # The Trainer clears the model's gradients after a step (model.zero_grad), not Opacus' per-example
        # ones, which would pile up into the next step: clear them before each backward.
        self._dp_optimizer.zero_grad(set_to_none=True)
        if _rows(inputs) == 0:
            return self._empty_step(model)
        with warnings.catch_warnings():  # "Full backward hook is firing ...": the frozen inputs of adapter layers
            warnings.filterwarnings("ignore", message="Full backward hook")
            return super().training_step(model, inputs, num_items_in_batch)

    def _empty_step(self, model):
        """An empty Poisson batch still takes a step: no example's gradient, only noise.  A model's forward
        on 0 rows may fail (BERT's attention cannot reshape an empty batch), and nothing would be learnt
        from it, so each trained parameter is handed the 0-row per-example gradient Opacus would compute."""
        for param in self._dp_optimizer.params:
            param.grad_sample = torch.zeros((0, *param.shape), dtype=param.dtype, device=param.device)
        return torch.zeros((), device=self.args.device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The mean of per-example losses, each a function of its own example only."""
        losses, outputs = self._example_losses(model, inputs)
        loss = losses.sum() / max(losses.shape[0], 1)  # an empty Poisson batch: 0, and only noise is added
        return (loss, outputs) if return_outputs else loss

    def _example_losses(self, model, inputs):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        if "position_ids" not in inputs and self._takes_position_ids(model):
            # one row per example: BERT's default [1, length] would reach a trained position embedding as a
            # batch of one, mixing every example's gradient into one
            ids = inputs["input_ids"]
            inputs["position_ids"] = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        if self.response_only_logits:
            return causal_example_losses(model, self.accelerator.unwrap_model(model).get_output_embeddings(),
                                         inputs, labels)
        outputs = model(**inputs)
        if self.label_loss is not None:
            return self.label_loss.rows(outputs.logits, labels), outputs
        return F.cross_entropy(outputs.logits.float(), labels, reduction="none"), outputs

    def _takes_position_ids(self, model) -> bool:
        import inspect

        if not hasattr(self, "_position_ids"):
            model = self.accelerator.unwrap_model(model)
            model = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft's forward takes **kwargs
            self._position_ids = "position_ids" in inspect.signature(model.forward).parameters
        return self._position_ids

    def _get_grad_norm(self, model, grad_norm=None):
        return None  # the norm of the gradient before clipping and noise is not private: never logged

    # ----------------------------------------------------------- accounting
    def spent(self) -> Spent:
        loader, settings = self._private_loader, self.privacy
        rows, rate = len(loader.dataset), 1 / len(loader)
        accountant = self._engine.accountant
        steps = sum(entry[2] for entry in accountant.history)
        epsilon = accountant.get_epsilon(delta=self._delta) if steps else 0.0
        return Spent(epsilon=epsilon, delta=self._delta, target_epsilon=settings.epsilon,
                     noise_multiplier=self._dp_optimizer.noise_multiplier, sample_rate=rate,
                     expected_batch_size=rows * rate, steps=steps, max_grad_norm=settings.max_grad_norm,
                     accountant=settings.accountant, training_rows=rows)

    def log(self, logs: dict, *args, **kwargs):
        if ("loss" in logs or "train_loss" in logs) and getattr(self, "_engine", None) is not None:
            logs["epsilon"] = round(self.spent().epsilon, 4)
        super().log(logs, *args, **kwargs)

    def _save_optimizer_and_scheduler(self, output_dir: str):
        super()._save_optimizer_and_scheduler(output_dir)
        state = self._engine.accountant.state_dict()
        ledger = {"mechanism": state["mechanism"], "history": [list(entry) for entry in state["history"]],
                  "noise_multiplier": self._dp_optimizer.noise_multiplier, "delta": self._delta}
        (Path(output_dir) / LEDGER).write_text(json.dumps(ledger, indent=2))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = Path(checkpoint) / LEDGER
        if not path.is_file():
            raise RunFailed(f"{checkpoint} has no {LEDGER}: the privacy spent before it is unknown",
                            hint=f"delete {Path(checkpoint).parent} to train again from the start")
        ledger = json.loads(path.read_text())
        if not math.isclose(ledger["noise_multiplier"], self._dp_optimizer.noise_multiplier, rel_tol=1e-9):
            raise RunFailed(f"{checkpoint} was trained with noise multiplier {ledger['noise_multiplier']}, this "
                            f"run calibrates {self._dp_optimizer.noise_multiplier}",
                            hint=f"delete {Path(checkpoint).parent} to train again from the start")
        self._engine.accountant.load_state_dict(
            {"mechanism": ledger["mechanism"], "history": [tuple(entry) for entry in ledger["history"]]})


def _rows(inputs) -> int:
    first = next((value for value in inputs.values() if isinstance(value, torch.Tensor)), None)
    return -1 if first is None else int(first.shape[0])


def noise_multiplier(settings, delta: float, sample_rate: float, steps: int) -> float:
    """Opacus' search for the smallest noise multiplier that spends at most epsilon over `steps`."""
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return get_noise_multiplier(target_epsilon=settings.epsilon, target_delta=delta, sample_rate=sample_rate,
                                    steps=steps, accountant=settings.accountant, epsilon_tolerance=0.005)
    except ValueError as exc:  # "The privacy budget is too low."
        from adaptctl.core.errors import UserError

        raise UserError(f"train.privacy.epsilon: no noise reaches epsilon {settings.epsilon:g} at delta {delta:g} "
                        f"over {steps} steps at sampling rate {sample_rate:.4g} ({exc})",
                        hint="raise train.privacy.epsilon, or train fewer steps or smaller batches") from None


def causal_example_losses(model, head, inputs: dict, labels: torch.Tensor):
    """(each example's mean loss over its trained tokens, outputs).  The LM head runs on the trained positions
    only (training/response_logits.py) unless it is trained itself: its per-example gradients need every row
    of the batch to stay an example."""
    from adaptctl.training.response_logits import head_sees_only, trained_positions

    mask, targets = trained_positions(labels)
    if head is not None and not any(p.requires_grad for p in head.parameters()):
        with head_sees_only(head, mask):
            outputs = model(**inputs)
        logits = outputs.logits
    else:
        outputs = model(**inputs)
        logits = outputs.logits[:, -mask.shape[1]:][mask]
    token_losses = F.cross_entropy(logits.float(), targets, reduction="none")
    rows = mask.nonzero()[:, 0]
    count = labels.shape[0]
    sums = torch.zeros(count, device=token_losses.device).index_add(0, rows, token_losses)
    tokens = torch.zeros(count, device=token_losses.device).index_add(0, rows, torch.ones_like(token_losses))
    return sums / tokens.clamp(min=1), outputs


def private(trainer_class):
    """The Trainer class with DP-SGD mixed in (first, so that its loss, loader and optimizer win)."""
    if issubclass(trainer_class, PrivateTraining):
        return trainer_class
    return type(f"Private{trainer_class.__name__}", (PrivateTraining, trainer_class), {})
