"""Running one batch of jobs on the model, on the worker thread.

Classification goes through the task's own predict hook (predict.Predictor.predict): the label names,
the calibration temperature, the rounding of the probabilities are `adaptctl predict`'s because the
code is.

Generation encodes each input with the task's prompt_ids hook (the one predict's hook calls) or, for
a conversation, through the run's chat template (chat_prompt_ids); a question to a model that retrieves
(questions.py) becomes predict's row and input text first (Predictor.inputs).  It decodes with predict's own
pieces: decoding_kwargs over the request's settings, left padding (pad_batch), end tokens, and the
answer text (answer_text).  Where predict makes one model.generate call per batch of its inputs,
the server makes one per batch of requests: the rows of all the requests with the same decoding
settings, each with its own max_tokens and stop strings.

Streaming is done over the batch, not with one transformers streamer per request (those take a batch
of one): a stopping criterion sees every row's new token at each step, hands it to the row's
AnswerText (which streams the text that cannot change any more), and tells generate which rows are
finished (their end token, their own max_tokens, a stop string, or a client that went away).  So a
streamed answer is the same tokens, in the same batch, as the non-streamed one.  Beam search
(evaluate.generation.num_beams > 1) has no per-step rows to watch: the answers are read from the
finished beams, and a streaming request gets its answer in one piece.
"""

from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass
from itertools import groupby

from transformers import LogitsProcessor, StoppingCriteria

from adaptctl.core import console
from adaptctl.core.errors import UserError
from adaptctl.core.redact import redact
from adaptctl.retrieval import PASSAGE_IDS
from adaptctl.serve.answers import AnswerText
from adaptctl.serve.jobs import Echo, Job
from adaptctl.serve.logprobs import TokenLogprob, entries, prompt_entries
from adaptctl.serve.questions import KIND as QUESTION
from adaptctl.serve.schemas import ServeError


def can_serve(spec) -> str | None:
    """What the server answers for a task ('classify' or 'generate'), or None."""
    if spec.generates and spec.prompt_ids is not None:
        return "generate"
    if spec.has_label_map and spec.predict is not None:
        return "classify"
    return None


class Engine:
    def __init__(self, predictor, batch_size: int, question_field: str | None = None, screen=None):
        """question_field: where a question goes in predict's row, for a model that retrieves (questions.py);
        screen: what `--pii` does to each generated answer (screening.py), or None."""
        self.predictor, self.batch_size, self.question_field = predictor, batch_size, question_field
        self.screen = screen
        self.kind = can_serve(predictor.spec)

    @contextlib.contextmanager
    def worker_context(self):
        """On the worker thread for its whole life: no autograd, and under bf16 autocast the fp32 weights
        cast once, not at every batch (evaluation.inference, as predict runs its batches)."""
        from adaptctl.evaluation.inference import autocast, weights_cast_once

        with weights_cast_once(self.predictor.model), autocast(self.predictor.recipe.train.precision):
            yield

    def run(self, jobs: list[Job]):
        if self.kind == "classify":
            self._classify(jobs)
        else:
            self._generate(jobs)

    # ------------------------------------------------------------------------ classification
    def _classify(self, jobs: list[Job]):
        texts = [text for job in jobs for text in job.inputs]
        results = self.predictor.predict(texts, self.batch_size)
        tokenizer, max_length = self.predictor.tokenizer, self.predictor.recipe.data.max_length
        counts = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
        start = 0
        for job in jobs:
            end = start + len(job.inputs)
            job.report_done((results[start:end], counts[start:end]))
            start = end

    # ---------------------------------------------------------------------------- generation
    def _generate(self, jobs: list[Job]):
        rows = []
        for job in jobs:
            try:
                prompts = self._encode(job)
                if job.decoding.echo:
                    job.echoes = self._echoes(job, prompts)
            # a UserError: the run cannot take the request as sent (a conversation without a chat template,
            # token ids it does not have, echo from an encoder-decoder)
            except UserError as exc:
                job.report_failure(ServeError(400, f"{exc.message}{f' ({exc.hint})' if exc.hint else ''}"))
                continue
            except Exception as exc:  # noqa: BLE001 (one request's input broke the tokenizer: not the others')
                console.error(redact(f"serve: encoding a request failed:\n{traceback.format_exc()}"))
                job.report_failure(exc)
                continue
            job.report_encoded(sum(len(ids) for ids in prompts))
            answers = _Answers(job, len(prompts) * job.n, sum(len(ids) for ids in prompts))
            rows += [_Row(job, answers, i * job.n + j, ids) for i, ids in enumerate(prompts) for j in range(job.n)]
        # the rows of requests with the same decoding settings share a model.generate call
        ordered = sorted(rows, key=lambda row: _sort_key(row.job))
        for _, same in groupby(ordered, key=lambda row: _sort_key(row.job)):
            group = list(same)
            for start in range(0, len(group), self.batch_size):
                self._generate_rows(group[start:start + self.batch_size])

    def _encode(self, job: Job) -> list[list[int]]:
        spec, tokenizer, recipe = self.predictor.spec, self.predictor.tokenizer, self.predictor.recipe
        if job.kind == QUESTION:  # predict's rows: the passages retrieved, data.prompt rendered with them
            with _as_predict_retrieves():
                rows, texts = self.predictor.inputs([{self.question_field: q} for q in job.inputs], None, "the request")
            job.passage_ids = [row[PASSAGE_IDS] for row in rows]
            return spec.prompt_ids(tokenizer, texts, recipe)
        if job.kind == "complete":
            texts = [prompt for prompt in job.inputs if isinstance(prompt, str)]
            encoded = iter(spec.prompt_ids(tokenizer, texts, recipe) if texts else [])
            return [next(encoded) if isinstance(prompt, str) else self._given_ids(prompt, f"prompt[{i}]")
                    for i, prompt in enumerate(job.inputs)]
        found = []
        for chat in job.inputs:
            ids = spec.chat_prompt_ids(tokenizer, [chat], recipe) if spec.chat_prompt_ids else None
            if ids is None:  # the run renders no chat template: its prompt is one user message's text
                if [m["role"] for m in chat] != ["user"]:
                    raise UserError("this model was trained on single prompts without a chat template, so it "
                                    "cannot read a conversation",
                                    hint="send one user message holding the prompt, or use /v1/completions")
                ids = spec.prompt_ids(tokenizer, [chat[0]["content"]], recipe)
            found += ids
        return found

    def _given_ids(self, ids: list[int], place: str) -> list[int]:
        """A prompt sent as token ids, read as it is: every id in the model's vocabulary, within the run's
        data.max_length (cut, its figures would no longer line up with the ids the client sent)."""
        vocabulary = self.predictor.model.get_input_embeddings().num_embeddings
        wrong = next((token for token in ids if not 0 <= token < vocabulary), None)
        if wrong is not None:
            raise UserError(f"{place}: token id {wrong} is not in this model's vocabulary (0 to {vocabulary - 1})")
        limit = self.predictor.recipe.data.max_length
        if len(ids) > limit:
            raise UserError(f"{place}: {len(ids)} token ids, over this run's data.max_length of {limit}",
                            hint="send a shorter prompt, or text, which is cut keeping its end as in training")
        return ids

    def _echoes(self, job: Job, prompts: list[list[int]]) -> list[Echo]:
        """Each prompt as echo gives it back: the text sent (token ids decoded), and with logprobs its tokens'."""
        tokenizer, asked = self.predictor.tokenizer, job.decoding.logprobs
        if getattr(self.predictor.model.config, "is_encoder_decoder", False):
            raise UserError("echo: an encoder-decoder reads its prompt with its encoder, which gives the prompt's "
                            "tokens no probabilities", hint="ask without echo")
        texts = [prompt if isinstance(prompt, str) else tokenizer.decode(prompt) for prompt in job.inputs]
        if asked is None:
            return [Echo(text) for text in texts]
        return [Echo(text, [entry.named(tokenizer) for entry in self._prompt_logprobs(ids, asked)])
                for text, ids in zip(texts, prompts)]

    def _prompt_logprobs(self, ids: list[int], top: int) -> list[TokenLogprob]:
        """One forward pass over the prompt alone (a batch of them would hold every position's logits at once)."""
        import torch

        from adaptctl.evaluation.inference import device

        logits = self.predictor.model(input_ids=torch.tensor([ids], device=device())).logits[0, :-1]
        return prompt_entries(logits.float().log_softmax(-1), ids, top)

    def _generate_rows(self, rows: list[_Row]):
        """One model.generate call over rows that share their sampling settings."""
        from adaptctl.evaluation.generation import pad_batch
        from adaptctl.evaluation.inference import device

        rows = [row for row in rows if not row.job.cancelled.is_set()]
        if not rows:
            return
        model = self.predictor.model
        encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        tokenizer, end_ids = self.predictor.tokenizer, self._end_ids
        texts = [AnswerText(tokenizer, row.index, end_ids, row.job.decoding.generation.max_new_tokens,
                            row.job.decoding.stops, row.job.stream, row.job.report_text, row.answers.add,
                            self.screen, scored=row.job.decoding.logprobs is not None)
                 for row in rows]
        decoding, kwargs = rows[0].job.decoding, self._generate_kwargs(rows, texts)
        batch = pad_batch([{"input_ids": row.prompt} for row in rows], self._pad_id, left=not encoder_decoder)
        if decoding.seed is not None:
            import torch

            torch.manual_seed(decoding.seed)
        output = model.generate(input_ids=batch["input_ids"].to(device()),
                                attention_mask=batch["attention_mask"].to(device()), **kwargs)
        if "stopping_criteria" not in kwargs:  # beam search: the finished beams' tokens, read as steps are
            new = output[:, 1:] if encoder_decoder else output[:, batch["input_ids"].shape[1]:]
            for text, ids in zip(texts, new.tolist()):
                for token in ids:
                    text.step(token)
        for text in texts:
            text.finish("length")  # no-op for answers that ended; generate's own limit ends the others

    def _generate_kwargs(self, rows: list[_Row], texts: list[AnswerText]) -> dict:
        """predict's decoding arguments for the rows' settings, up to the longest max_tokens among them; the
        per-step criterion where the search has one row per answer (not beam search)."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from adaptctl.evaluation.generation import decoding_kwargs

        decoding = rows[0].job.decoding
        longest = max(row.job.decoding.generation.max_new_tokens for row in rows)
        kwargs = decoding_kwargs(decoding.generation.model_copy(update={"max_new_tokens": longest}), self._pad_id,
                                 self._eos_ids)
        if decoding.generation.do_sample and decoding.top_p is not None:
            kwargs["top_p"] = decoding.top_p
        if decoding.generation.num_beams == 1:
            recorder = StepLogprobs() if any(row.job.decoding.logprobs is not None for row in rows) else None
            if recorder is not None:
                kwargs["logits_processor"] = LogitsProcessorList([recorder])
            kwargs["stopping_criteria"] = StoppingCriteriaList([_EveryToken(texts, [row.job for row in rows],
                                                                            recorder)])
        return kwargs

    @property
    def _pad_id(self) -> int:
        from adaptctl.data.tokens import pad_token_id

        return pad_token_id(self.predictor.tokenizer)

    @property
    def _eos_ids(self) -> list[int]:
        from adaptctl.evaluation.generation import eos_token_ids

        return eos_token_ids(self.predictor.model, self.predictor.tokenizer)

    @property
    def _end_ids(self) -> set[int]:
        """The tokens that end an answer, as predict's until_stop reads them: the end tokens and padding."""
        return set(self._eos_ids) | {self._pad_id}


def _as_predict_retrieves():
    """Without the worker's bf16/fp16 autocast (worker_context): predict and prepare embed questions in the
    embedder's own precision, and other embeddings could rank other passages."""
    import torch

    from adaptctl.evaluation.inference import device

    return torch.autocast(device().type, enabled=False)


def _sort_key(job: Job) -> tuple:
    return tuple(str(part) for part in job.decoding.batch_key(job.id))


@dataclass
class _Row:
    """One answer to generate: the request it is for, where its answer goes, its index there, its prompt."""
    job: Job
    answers: _Answers
    index: int
    prompt: list[int]


class _Answers:
    """A generation job's answers as they finish; the job is done when all of them are."""

    def __init__(self, job: Job, count: int, prompt_tokens: int):
        self.job, self.count, self.prompt_tokens, self.found = job, count, prompt_tokens, list[str]()

    def add(self, answer):
        self.found.append(answer)
        if len(self.found) == self.count:
            self.job.report_done((sorted(self.found, key=lambda a: a.index), self.prompt_tokens))


class StepLogprobs(LogitsProcessor):
    """Keeps the log-softmax of the latest step's scores (logprobs.py), changing nothing.  Custom processors
    run ahead of generate's temperature and top_p warpers: these are the model's own log-probabilities."""

    def __init__(self):
        self.latest = None

    def __call__(self, input_ids, scores):
        self.latest = scores.float().log_softmax(-1)
        return scores


class _EveryToken(StoppingCriteria):
    """Called by generate after each step with the whole batch: the new tokens go to their answers (with
    their log-probabilities where asked), and the rows whose answer ended (or whose client left) are
    reported finished."""

    def __init__(self, texts: list[AnswerText], jobs: list[Job], recorder: StepLogprobs | None = None):
        self.texts, self.jobs, self.recorder = texts, jobs, recorder
        self.tops = [job.decoding.logprobs for job in jobs]

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        tokens = input_ids[:, -1].tolist()
        found = entries(self.recorder.latest, tokens, self.tops) if self.recorder else [None] * len(tokens)
        for text, token, entry in zip(self.texts, tokens, found):
            text.step(token, entry)
        done = [text.done or job.cancelled.is_set() for text, job in zip(self.texts, self.jobs)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
