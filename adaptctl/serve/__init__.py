"""`adaptctl serve RUN_DIR|EXPORT_DIR`: an OpenAI-compatible HTTP API over an adapted model (docs/serve.md).

The model is adaptctl predict's (predict.Predictor: the same folder resolution, safety checks, label
names, calibration temperature, prompt and chat templates, retrieval and generation settings), loaded once;
requests become jobs on a short queue that one worker thread runs in batches (the model is not
thread-safe, and batching is what makes throughput grow with load).

  options.py    the command's flags, checked before anything loads
  schemas.py    the request bodies (OpenAI's and vLLM's /classify), validated strictly; the error shape
  decoding.py   a request's decoding settings over the run's evaluate.generation
  questions.py  a knowledge-base run (data.retrieval): a request's questions, and the field they fill
  jobs.py       a request as the worker sees it, and how results get back to the event loop
  batching.py   the queue that gathers jobs into batches, and the one worker thread
  engine.py     running one batch on the model: classification through the task's predict hook,
                generation token by token over the batch (streaming, stop strings, per-row limits)
  app.py        the FastAPI routes, API key, body cap, errors in OpenAI's shape, server-sent events
  server.py     load, bind, announce, serve until SIGTERM/Ctrl-C, stop cleanly
  vllm.py       --engine vllm: the same folder handed to vLLM's own OpenAI server

Imports of torch, transformers, fastapi and uvicorn stay inside the modules that need them, which
only `adaptctl serve` imports.
"""
