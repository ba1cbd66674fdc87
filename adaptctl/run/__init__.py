"""What a run is made of: which stages a recipe needs and whether their outputs are still current (freshness),
the context a stage runs in (context), and reading past runs (`adaptctl runs`: runs).  The driver that runs
the stages in order is adaptctl/pipeline.py, above the stages it calls."""
