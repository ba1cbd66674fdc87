"""API models: any OpenAI-compatible endpoint as a baseline, a distillation teacher or a judge
(docs/api-models.md).  One recipe block (recipe.Api) configures it; every answer is cached under the run."""
