"""A fix to peft that adaptctl installs before it builds or loads a prefix-tuning adapter."""

from __future__ import annotations


def install_prefix_tuning_fix():
    """Let peft's prefix tuning reach encoder models (BERT and kin) under transformers 5.

    peft (0.21) injects the prefix as `past_key_values` and, for classification and QA, first
    looks for a parameter of that name on the model's forward; transformers 5 renamed it
    `cache`, so peft refuses with "Model does not support past key values".  The models
    still take the prefix as `cache` (through the head's **kwargs to the backbone), which is
    all this patch does.  Idempotent; call it before building or loading a prefix adapter.
    """
    from peft import peft_model

    for cls in (peft_model.PeftModelForSequenceClassification, peft_model.PeftModelForQuestionAnswering,
                peft_model.PeftModelForTokenClassification):
        if not getattr(cls._prefix_tuning_forward, "adaptctl_fix", False):
            cls._prefix_tuning_forward = _prefix_forward_via_cache(cls._prefix_tuning_forward)


def _prefix_forward_via_cache(original):
    import functools

    @functools.wraps(original)
    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        backbone = self.base_model.get_submodule(self.transformer_backbone_name)
        if _takes(self.base_model, "past_key_values") or not _takes(backbone, "cache"):
            return original(self, input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                            return_dict=return_dict, **kwargs)
        batch_size = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        # Heads pass return_dict=True to their backbone themselves; passing it again is a TypeError.
        extra = {k: v for k, v in (("output_attentions", output_attentions),
                                   ("output_hidden_states", output_hidden_states)) if v}
        return self.base_model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                               cache=self.get_prompt(batch_size), **extra, **kwargs)

    forward.adaptctl_fix = True
    return forward


def _takes(module, name: str) -> bool:
    import inspect

    return name in inspect.signature(module.forward).parameters
