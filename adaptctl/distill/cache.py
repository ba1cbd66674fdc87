"""The teacher's logits, computed once and kept with the prepared data.

With `distill.cache_teacher: true` the teacher runs once over the train and
validation rows; later epochs, evaluations and re-runs read its logits by
example index instead of running it again.  The cache lives under
RUN_DIR/prepare/teacher_logits/<key>/, the key hashing the teacher's weights,
the prepared data (prepare's cache key), the task, top_k, the precision the
teacher ran in and the augmented copies' settings, so a changed teacher or data
never reads stale logits.

Layout (safetensors):
  classification  logits [rows, labels] float32, in the data's label order
  causal-lm       values [tokens, k] float16 and indices [tokens, k] int32: the
                  teacher's top-k logits at every response token, rows of one
                  example contiguous; offsets [rows + 1] int64 delimit examples.
                  The loss then compares teacher and student over those k tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from adaptctl.core import console
from adaptctl.distill.losses import response_rows
from adaptctl.core.rundir import atomic_dir, json_hash

FILE = "logits.safetensors"
VERSION = 1


def cache_key(teacher_identity: str, prepare_key: str, rows: int, over: str, top_k: int, precision: str,
              augment: dict | None = None) -> str:
    parts = {"version": VERSION, "teacher": teacher_identity, "prepare": prepare_key, "rows": rows,
             "over": over, "top_k": top_k if over == "vocabulary" else None, "precision": precision}
    if augment:  # the augmented copies' settings and seed decide which rows the cache holds
        parts["augment"] = augment
    return json_hash(parts)


class LogitsCache:
    def __init__(self, folder: Path, tensors: dict):
        self.folder, self.tensors = Path(folder), tensors
        self.causal = "offsets" in tensors

    @classmethod
    def open(cls, folder: Path) -> "LogitsCache | None":
        from safetensors.torch import load_file

        path = Path(folder) / FILE
        return cls(folder, load_file(str(path))) if path.is_file() else None

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """classification: the teacher's logits for these examples, [batch, labels]."""
        return self.tensors["logits"][idx.cpu()]

    def tokens(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """causal-lm: (values, indices) [response tokens of these examples, k], in batch order."""
        offsets = self.tensors["offsets"]
        spans = [torch.arange(offsets[i], offsets[i + 1]) for i in idx.cpu().tolist()]
        select = torch.cat(spans) if spans else torch.zeros(0, dtype=torch.long)
        return self.tensors["values"][select].float(), self.tensors["indices"][select].long()


def build(folder: Path, model, dataset, collate, *, over: str, top_k: int, permutation, batch_size: int,
          precision: str) -> LogitsCache:
    """Run the teacher once over `dataset` (rows with a global `idx`) and save its logits under `folder`;
    `over`: "labels" (a row of logits per example) or "vocabulary" (the top_k per response token)."""
    from safetensors.torch import save_file

    from adaptctl.distill.teacher import teacher_forward
    from adaptctl.evaluation.inference import device, length_sorted_batches
    from adaptctl.data.tokens import MODEL_INPUTS

    rows = dataset.select_columns([c for c in dataset.column_names if c in MODEL_INPUTS or c == "idx"]).to_list()
    found: dict[int, object] = {}
    model = model.to(device())
    with console.Progress("distill: teacher logits", len(rows)) as progress:
        for indices in length_sorted_batches([len(r["input_ids"]) for r in rows], batch_size):
            batch = {k: v.to(device()) for k, v in collate([rows[i] for i in indices]).items()}
            logits = teacher_forward(model, batch, precision)
            if permutation is not None:
                logits = logits[..., permutation]
            found.update(_per_example(logits, batch, over, top_k))
            progress.advance(len(indices))
    tensors = _assemble(found, len(rows), over)
    with atomic_dir(folder) as tmp:
        save_file(tensors, str(tmp / FILE))
        (tmp / "meta.json").write_text(json.dumps({"over": over, "rows": len(rows), "top_k": top_k,
                                                   "precision": precision}, indent=2))
    return LogitsCache(folder, tensors)


def _per_example(logits, batch, over: str, top_k: int) -> dict:
    ids = batch["idx"].tolist()
    if over != "vocabulary":
        return dict(zip(ids, logits.cpu()))
    labels = batch["labels"]
    found = {}
    for b, i in enumerate(ids):  # one example at a time: the response tokens differ in number
        picked = response_rows(logits[b:b + 1], labels[b:b + 1])
        values, indices = picked.topk(min(top_k, picked.shape[-1]), dim=-1)
        found[i] = (values.half().cpu(), indices.int().cpu())
    return found


def _assemble(found: dict, rows: int, over: str) -> dict:
    if over != "vocabulary":
        return {"logits": torch.stack([found[i] for i in range(rows)]).contiguous()}
    counts = torch.tensor([found[i][0].shape[0] for i in range(rows)])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    return {"values": torch.cat([found[i][0] for i in range(rows)]).contiguous(),
            "indices": torch.cat([found[i][1] for i in range(rows)]).contiguous(),
            "offsets": offsets}
