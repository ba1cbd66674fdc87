"""The recipe: its pydantic schema and the rules spanning sections (schema), loading a YAML file with positions,
`extends` and `--set` (loader), `adaptctl init`'s commented starter (starter), and the part of a recipe that
inference needs (inference)."""
