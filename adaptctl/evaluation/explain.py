"""Token attributions of a classifier's prediction: Captum's LayerIntegratedGradients over the input
embeddings (Sundararajan et al. 2017), from a baseline that keeps the special tokens and pads the rest,
to the text as it is.  Each token's score is its attribution summed over the embedding dimensions,
scaled so that the largest absolute score is 1; positive scores push towards the explained class."""

from __future__ import annotations

STEPS = 32      # integration steps: Captum's convergence delta stays small for short texts at 32
TOP = 5         # tokens marked in the report


def token_attributions(model, tokenizer, texts: list[str], targets: list[int], max_length: int) -> list[dict]:
    """{"tokens": [[token, score], ...], "top_tokens": [...], "delta": float} for each text and target class."""
    from captum.attr import LayerIntegratedGradients

    embeddings = model.get_input_embeddings()
    explainer = LayerIntegratedGradients(_logits_of(model), embeddings)
    return [_one(explainer, model, tokenizer, text, target, max_length) for text, target in zip(texts, targets)]


def _logits_of(model):
    def forward(input_ids, attention_mask):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits.float()

    return forward


def _one(explainer, model, tokenizer, text: str, target: int, max_length: int) -> dict:
    import torch

    device = next(model.parameters()).device
    encoded = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
    ids, mask = encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
    special = torch.tensor(tokenizer.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True),
                           dtype=torch.bool, device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    baseline = torch.where(special, ids[0], torch.full_like(ids[0], pad)).unsqueeze(0)
    with torch.enable_grad():  # evaluate runs under inference_mode; gradients are the point here
        attributions, delta = explainer.attribute(ids, baselines=baseline, additional_forward_args=(mask,),
                                                  target=target, n_steps=STEPS, return_convergence_delta=True)
    scores = attributions.sum(-1)[0]
    scores = scores / scores.abs().max().clamp(min=1e-12)
    tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    pairs = [[token, round(float(score), 4)] for token, score, is_special in zip(tokens, scores, special.tolist())
             if not is_special]
    top = [token for token, _ in sorted(pairs, key=lambda pair: -pair[1])[:TOP]]
    return {"tokens": pairs, "top_tokens": top, "delta": round(float(delta.abs().max()), 6)}


def marked_text(tokens: list[list], top: list[str]) -> str:
    """The tokens joined back into text (WordPiece '##' pieces glued on), the top tokens in bold."""
    marked, words = set(top), list[str]()
    for token, _ in tokens:
        shown = f"**{token.removeprefix('##')}**" if token in marked else token.removeprefix("##")
        if token.startswith("##") and words:
            words[-1] += shown
        else:
            words.append(shown.replace("Ġ", "").replace("▁", ""))
    return " ".join(words)
