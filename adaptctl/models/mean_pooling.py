"""A BERT sequence classifier that reads the mean of the token states instead of the [CLS] pooler.

Sentence-transformers checkpoints such as all-MiniLM-L6-v2 were trained for mean pooling: their [CLS]
state and pooler carry little of the sentence, and BertForSequenceClassification reads exactly those
(bench/RESULTS-defaults.md).  This class keeps BertForSequenceClassification's weight names (`bert.*`,
`classifier.*`) and drops the pooler; logits = classifier(dropout(masked mean of the last hidden states)).

This file stands alone (torch and transformers only): a model saved with this class carries a copy of it
and an `auto_map`, so plain Transformers loads the folder with
`AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)`, and without that
flag says it needs it.  adaptctl registers the class itself (register()) and never runs the folder's copy;
it accepts the copy only when it is byte for byte this file (loading.check_loadable).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    BertConfig,
    BertModel,
    BertPreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "bert-mean-pooling"


class BertMeanPoolingConfig(BertConfig):
    model_type = MODEL_TYPE

    @classmethod
    def get_config_dict(cls, *args, **kwargs):
        """A BERT checkpoint's config is where a mean-pooling classifier starts from: read it as this type (else
        transformers warns that a `bert` config builds another model type)."""
        config, rest = super().get_config_dict(*args, **kwargs)
        if config.get("model_type") == "bert":
            config = {**config, "model_type": MODEL_TYPE}
        return config, rest


class BertMeanPoolingForSequenceClassification(BertPreTrainedModel):
    config_class = BertMeanPoolingConfig
    # A BERT checkpoint's pooler is left out by design: not news worth a load warning on every train and predict.
    _keys_to_ignore_on_load_unexpected = [r"pooler\."]

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, **kwargs):
        kwargs.pop("return_dict", None)  # the pooled logits need the hidden states by name
        outputs = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs)
        logits = self.classifier(self.dropout(mean_pool(outputs.last_hidden_state, attention_mask)))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels).float(), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The mean over the positions the mask keeps (sentence-transformers' Pooling(mean)); padding counts for nothing."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def register():
    """Make the Auto classes know the model type (idempotent), and have save_pretrained ship this file."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if MODEL_TYPE not in CONFIG_MAPPING:
        AutoConfig.register(MODEL_TYPE, BertMeanPoolingConfig)
        AutoModelForSequenceClassification.register(BertMeanPoolingConfig, BertMeanPoolingForSequenceClassification)
    BertMeanPoolingConfig.register_for_auto_class()
    BertMeanPoolingForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
