"""TRL's GRPOTrainer as adaptctl's TrainingSession builds trainers (tasks/reinforcement.py makes the plan).

What it changes in TRL's trainer, and why:
- the prompts are generated from the token ids that prepare made (`input_ids`: data.prompt through the chat
  template, cut to data.max_length as causal-lm cuts prompts), the very ids evaluate and predict generate
  from; TRL would tokenize the prompt text again, without the truncation;
- the rewards are built when the training split is known (label_match's default labels come from it);
- with an adapter and beta > 0 the reference is the base model with the adapter off, not a copy of it;
- the sampling time and the tokens sampled are counted: the manifest's generation figures, and the
  per-step `completions/tokens_per_second` in metrics.jsonl;
- the session's data collator is refused politely: GRPO collates nothing (it generates its batches).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def grpo_trainer(rewards_for: Callable) -> type:
    """A GRPOTrainer class; rewards_for(train split) -> (reward functions, their manifest description)."""
    from trl import GRPOTrainer

    from adaptctl.training.reference import drop_reference_copy

    class AdaptctlGRPOTrainer(GRPOTrainer):
        def __init__(self, *args, data_collator=None, **kwargs):
            functions, self.reward_description = rewards_for(kwargs.get("train_dataset"))
            super().__init__(*args, reward_funcs=functions, **kwargs)
            drop_reference_copy(self)
            self.generation_seconds, self.generated_tokens, self.batch_tokens = 0.0, 0, []
            self._prompt_ids = None

        def _generate_and_score_completions(self, inputs):
            self._prompt_ids = [list(row["input_ids"]) for row in inputs]
            out = super()._generate_and_score_completions(inputs)
            width = out["prompt_ids"].shape[1] + out["completion_ids"].shape[1]
            self.batch_tokens.append(width * self.args.per_device_train_batch_size)  # `adaptctl plan`'s batch size
            return out

        def _tokenize_prompts(self, prompts):
            return self._prompt_ids, None, {}  # (ids, images, multimodal fields)

        def _generate(self, prompts):
            start = time.perf_counter()
            out = super()._generate(prompts)
            seconds, tokens = time.perf_counter() - start, sum(len(ids) for ids in out[1])
            if self.model.training:
                self.generation_seconds += seconds
                self.generated_tokens += tokens
                self._metrics["train"]["completions/tokens_per_second"].append(tokens / seconds if seconds else 0.0)
            return out

        def manifest_figures(self) -> dict:
            seconds = self.generation_seconds
            return {"generation_seconds": round(seconds, 2), "generated_tokens": self.generated_tokens,
                    "generation_tokens_per_second": round(self.generated_tokens / seconds, 1) if seconds else None,
                    "rewards": self.reward_description}

    return AdaptctlGRPOTrainer
