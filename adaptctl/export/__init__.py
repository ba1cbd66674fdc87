"""Helpers of the export stage: model card and reload verification."""
