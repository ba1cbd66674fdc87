"""`adaptctl serve`: resolve and check the model (predict.Predictor), bind the port, open its retrieval
(data.retrieval: questions.py), load, serve until SIGTERM or Ctrl-C, then finish the requests in flight
and exit 0.

The port is bound before the model loads, so that a port in use fails in milliseconds, and it listens
only once the server runs (a client never waits in the backlog through a load).  The signals: uvicorn
catches SIGTERM and SIGINT, stops taking connections and waits for the requests in flight (a second
Ctrl-C forces it), then hands the signal back to the handlers it found, which here only note it: a
server stopped on purpose has done its job and exits 0.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
from pathlib import Path

from adaptctl.core import console, redact
from adaptctl.core.errors import UserError
from adaptctl.serve.options import ServeOptions


def serve(model_dir: Path, options: ServeOptions):
    options.check()
    if options.engine == "vllm":
        from adaptctl.serve.vllm import hand_to_vllm

        return hand_to_vllm(model_dir, options)
    listener = _bind(options.host, options.port)  # first: a port in use fails before the imports (seconds)
    try:
        from adaptctl.core.library_output import quiet_libraries
        from adaptctl.predict import Predictor
        from adaptctl.serve.engine import can_serve

        quiet_libraries()
        predictor = Predictor.resolve(model_dir)
        if can_serve(predictor.spec) is None:
            raise UserError(f"serve answers classification and text-generation models, and this is a "
                            f"{predictor.task} model", hint=f"use adaptctl predict {model_dir} --input FILE")
        if options.api_key_env:
            redact.watch([options.api_key_env])  # the key never reaches a log line, whatever prints it
        _serve_on(listener, predictor, model_dir, options, _question_field(predictor))
    finally:
        listener.close()


def _question_field(predictor) -> str | None:
    """For a model that answers from a knowledge base (data.retrieval), where a request's question goes;
    its index and embedder open here, before the model loads, so that a changed embedder fails first."""
    from adaptctl.serve.engine import can_serve
    from adaptctl.serve.questions import question_field

    field = question_field(predictor) if can_serve(predictor.spec) == "generate" else None
    if field is not None:
        retriever = predictor.retriever.retriever
        console.info(f"serve: each request's question is the '{field}' of data.retrieval.query: the top "
                     f"{retriever.k} of {len(retriever.index.ids)} passages are retrieved for it, as predict does")
    return field


def _serve_on(listener: socket.socket, predictor, model_dir: Path, options: ServeOptions,
              question_field: str | None = None):
    from adaptctl.serve.app import ServeState, create_app
    from adaptctl.serve.batching import BatchQueue
    from adaptctl.serve.engine import Engine
    from adaptctl.training.hardware import set_threads

    count, source = set_threads(options.threads, "--threads")
    console.info(f"serve: loading {predictor.folder} ({predictor.task}, {count} CPU thread{'s' * (count != 1)} "
                 f"from {source})")
    predictor.load()
    batch_size = options.batch_size or predictor.recipe.evaluate.batch_size
    from adaptctl.serve.screening import screen_for

    screen = screen_for(predictor, options.pii)
    engine = Engine(predictor, batch_size, question_field, screen)
    assert engine.kind is not None  # a task the server cannot answer was refused before loading
    queue = BatchQueue(engine.run, batch_size, options.max_wait_ms / 1000, engine.worker_context)
    state = ServeState(names=options.model_names(predictor, model_dir), task=predictor.task,
                       kind=engine.kind, defaults=_defaults(predictor, options.max_tokens), queue=queue,
                       max_tokens=options.max_tokens, created=int(predictor.folder.stat().st_mtime),
                       retrieves=question_field is not None, screened=screen is not None and screen.holds)
    app = create_app(state, options.api_key(), options.max_request_bytes)
    console.hide_progress()  # predict's per-batch progress lines: the server logs its batches itself
    queue.start()
    stopped_by = _run_uvicorn(app, listener, lambda: _announce(listener, state, batch_size, options))
    queue.stop(timeout=60)
    stats = queue.stats
    console.info(f"serve: stopped{f' ({stopped_by})' if stopped_by else ''} after {stats['requests']} requests "
                 f"in {stats['batches']} batches" + (f"; {screen.summary()}" if screen is not None else ""))


def _defaults(predictor, max_tokens: int):
    """The run's evaluate.generation, with max_new_tokens no more than --max-tokens (said when cut)."""
    from adaptctl.serve.decoding import capped_defaults

    generation = predictor.recipe.evaluate.generation
    capped = capped_defaults(generation, max_tokens)
    if capped is not generation:
        console.warn(f"serve: the run generates up to {generation.max_new_tokens} tokens (evaluate.generation."
                     f"max_new_tokens); requests without max_tokens get {max_tokens} (--max-tokens)")
    return capped


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except OSError as exc:
        raise UserError(f"serve: cannot listen on {host}:{port} ({exc.strerror or exc})",
                        hint="pick another --port (0 takes a free one), or stop what uses this one") from None
    return listener


def _url(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _announce(listener: socket.socket, state, batch_size: int, options: ServeOptions):
    url = _url(listener)
    routes = "/v1/chat/completions, /v1/completions" if state.kind == "generate" else "/classify"
    console.info(f"serve: {state.names[0]} ({state.task}) at {url}/v1 ({routes}); batches of up to {batch_size} "
                 f"within {options.max_wait_ms:g} ms; {'API key required' if options.api_key_env else 'no API key'}; "
                 "Ctrl-C stops")
    line: dict | str = {"stage": "serve", "status": "listening", "url": url, "base_url": f"{url}/v1", "model": state.names[0],
            "task": state.task} if options.as_json else f"{url}/v1"
    sys.stdout.write((json.dumps(line) if options.as_json else str(line)) + "\n")
    sys.stdout.flush()


def _run_uvicorn(app, listener: socket.socket, on_start) -> str | None:
    """Serve until a signal; the name of the signal that stopped it (None: uvicorn stopped on its own)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if not self.should_exit:
                on_start()

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False,
                            timeout_graceful_shutdown=None)
    seen: list[str] = []

    def note(signum, frame):  # uvicorn hands the signal back here once it has finished the requests in flight
        seen.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        Server(config).run(sockets=[listener])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return seen[0] if seen else None

