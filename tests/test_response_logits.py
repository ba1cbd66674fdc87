"""The response-only LM-head lever computes exactly the model's own causal-LM loss and gradients."""

import pytest
import torch

from adaptctl.training.response_logits import response_only_loss, trained_positions


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=80, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def batch():
    """Two right-padded rows, prompts of different lengths, labels -100 on prompt and padding."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 80, (2, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    labels = ids.clone()
    labels[0, :7] = -100
    labels[1, :3] = -100
    labels[1, 9:] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_trained_positions_are_those_before_a_labelled_token():
    mask, targets = trained_positions(batch()["labels"])
    assert mask[0].nonzero().flatten().tolist() == [6, 7, 8, 9, 10]  # predicts tokens 7..11
    assert mask[1].nonzero().flatten().tolist() == [2, 3, 4, 5, 6, 7]  # predicts tokens 3..8
    assert targets.tolist() == batch()["labels"][0, 7:].tolist() + batch()["labels"][1, 3:9].tolist()


@pytest.mark.parametrize("items", [None, 23])
def test_loss_and_gradients_equal_the_models_own(items):
    reference, lever = tiny_llama(), tiny_llama()
    inputs = batch()
    kwargs = {} if items is None else {"num_items_in_batch": torch.tensor(items)}
    expected = reference(**inputs, **kwargs).loss
    loss, outputs = response_only_loss(lever, lever.get_output_embeddings(), inputs, kwargs.get("num_items_in_batch"))
    assert outputs.logits.shape == (11, 80)  # 5 + 6 trained positions, not 2 x 12
    torch.testing.assert_close(loss, expected)
    expected.backward(), loss.backward()
    for (name, a), (_, b) in zip(reference.named_parameters(), lever.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_the_head_is_whole_again_afterwards():
    model = tiny_llama()
    inputs = batch()
    response_only_loss(model, model.get_output_embeddings(), inputs)
    assert model(input_ids=inputs["input_ids"]).logits.shape == (2, 12, 80)


def test_prompt_tuning_virtual_tokens_are_skipped():
    from peft import PromptTuningConfig, get_peft_model

    model = get_peft_model(tiny_llama(), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    inputs = batch()
    expected = model(**inputs).loss  # peft pads the labels with -100 for the virtual tokens
    loss, _ = response_only_loss(model, model.get_output_embeddings(), inputs)
    torch.testing.assert_close(loss, expected)
