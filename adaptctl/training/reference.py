"""The reference model of TRL's trainers that keep one (DPO, KTO, GRPO with a KL term), for an adapter model:
the base model itself, with the adapter switched off."""

from __future__ import annotations


def drop_reference_copy(trainer):
    """Handed a PeftModel without ref_model, TRL 1.13 adds a "ref" adapter, a copy of the untrained adapter,
    and scores the reference with it; removing it makes TRL's use_adapter(model, None) disable the adapters
    instead: the same base model, with nothing copied."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")
        model.set_adapter("default")


def base_as_reference(trainer_class):
    """A TRL trainer class whose reference, for an adapter model, is the base model with the adapter off."""

    class BaseAsReference(trainer_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            drop_reference_copy(self)

    BaseAsReference.__name__ = trainer_class.__name__
    return BaseAsReference
