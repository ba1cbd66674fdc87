"""distill: the loss, the student's layer selection, the teacher checks, the
logits cache and the stage end to end (tiny random BERT/Llama models built from
configs with the packaged MiniLM tokenizer), and one real run on SMS spam."""

from __future__ import annotations

import json
import math
import random
import re
import time
from pathlib import Path

import pytest
import torch

from adaptctl.distill.losses import distillation_loss, divergence, response_rows
from adaptctl.distill.student import kept_layers, shrink
from adaptctl.core.errors import UserError

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


# ------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from adaptctl.models.resolve import resolve_model

    return AutoTokenizer.from_pretrained(str(resolve_model(MINILM).path))


def tiny_bert(vocab_size: int, layers: int, labels: dict | None = None, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128)
    if labels:
        config.label2id, config.id2label = dict(labels), {i: name for name, i in labels.items()}
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


def save_bert(folder: Path, tokenizer, layers: int, labels: dict | None = None, seed: int = 0) -> Path:
    tiny_bert(tokenizer.vocab_size, layers, labels, seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_llama(layers: int = 4, vocab_size: int = 96, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def write_csv(path: Path, rows_per_class: int = 60) -> Path:
    rnd = random.Random(0)
    words = {"billing": "refund invoice charge payment bill price".split(),
             "tech": "login password crash error bug screen".split()}
    lines = ["text,label"] + [f"{' '.join(rnd.choices(w, k=6))},{label}"
                              for _ in range(rows_per_class) for label, w in words.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_recipe(folder: Path, name: str = "tiny", **distill) -> Path:
    settings = {"teacher": "teacher", "student": {"layers": 2}, "temperature": 2.0, "alpha": 0.5, **distill}
    recipe = {
        "name": name, "task": "classification", "seed": 7, "model": {"base": "student"},
        "data": {"source": "data.csv", "text": "text", "label": "label", "max_length": 32},
        "train": {"epochs": 1, "batch_size": 16, "learning_rate": 1.0e-3, "precision": "fp32", "logging_steps": 2},
        "distill": settings,
    }
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tokenizer) -> Path:
    """data.csv, a 4-layer teacher that knows the labels, a 4-layer student base."""
    folder = tmp_path_factory.mktemp("distill")
    write_csv(folder / "data.csv")
    save_bert(folder / "teacher", tokenizer, 4, {"billing": 0, "tech": 1}, seed=1)
    save_bert(folder / "student", tokenizer, 4, seed=2)
    return folder


# --------------------------------------------------------------------- loss
def _softmax(row, t):
    exps = [math.exp(x / t) for x in row]
    return [e / sum(exps) for e in exps]


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


STUDENT = [[1.0, -0.5, 0.2], [0.3, 2.0, -1.0]]
TEACHER = [[2.0, 0.0, -1.0], [-0.2, 1.5, 0.4]]


@pytest.mark.parametrize("kind", ["kl", "reverse-kl", "jsd"])
@pytest.mark.parametrize("temperature,alpha", [(1.0, 1.0), (2.0, 0.3), (4.0, 0.7)])
def test_loss_equals_hand_computation(kind, temperature, alpha):
    per_row = []
    for s, t in zip(STUDENT, TEACHER):
        p, q = _softmax(t, temperature), _softmax(s, temperature)  # teacher p, student q
        if kind == "kl":
            per_row.append(_kl(p, q))
        elif kind == "reverse-kl":
            per_row.append(_kl(q, p))
        else:
            m = [(a + b) / 2 for a, b in zip(p, q)]
            per_row.append(0.5 * _kl(p, m) + 0.5 * _kl(q, m))
    label_loss = torch.tensor(0.8)
    expected = alpha * temperature ** 2 * sum(per_row) / len(per_row) + (1 - alpha) * 0.8
    got = distillation_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), label_loss,
                            temperature=temperature, alpha=alpha, kind=kind)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_divergence_is_zero_for_identical_logits_and_positive_otherwise():
    same = torch.tensor(STUDENT)
    for kind in ("kl", "reverse-kl", "jsd"):
        assert divergence(same, same.clone(), 2.0, kind).item() == pytest.approx(0.0, abs=1e-7)
        assert divergence(same, torch.tensor(TEACHER), 2.0, kind).item() > 1e-3


def test_alpha_zero_is_plain_label_cross_entropy():
    student, labels = torch.tensor(STUDENT, requires_grad=True), torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(student, labels)
    loss = distillation_loss(student, torch.tensor(TEACHER), ce, temperature=3.0, alpha=0.0, kind="kl")
    assert loss.item() == pytest.approx(ce.item())
    assert torch.equal(loss, ce)


def test_response_rows_take_positions_that_predict_response_tokens():
    logits = torch.arange(2 * 5 * 3, dtype=torch.float).reshape(2, 5, 3)
    labels = torch.tensor([[-100, -100, 7, 8, -100], [-100, 4, 5, 6, 9]])
    rows = response_rows(logits, labels)
    # row 0: labels at 2, 3 -> logits at 1, 2; row 1: labels at 1..4 -> logits at 0..3
    expected = torch.cat([logits[0, 1:3], logits[1, 0:4]])
    assert torch.equal(rows, expected)


def test_transfer_set_loss_mixes_labelled_rows_and_teaches_copies_by_the_teacher_alone():
    from adaptctl.distill.losses import transfer_set_loss

    temperature, alpha = 2.0, 0.3
    p, q = [_softmax(row, temperature) for row in TEACHER], [_softmax(row, temperature) for row in STUDENT]
    kl = [_kl(a, b) for a, b in zip(p, q)]
    ce_first = -math.log(_softmax(STUDENT[0], 1.0)[0])
    expected = ((alpha * temperature ** 2 * kl[0] + (1 - alpha) * ce_first) + temperature ** 2 * kl[1]) / 2
    got = transfer_set_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor([0, -100]),
                            temperature=temperature, alpha=alpha, kind="kl")
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # with every row labelled it is the ordinary mixed loss
    labels = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(torch.tensor(STUDENT), labels)
    mixed = distillation_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), ce, temperature=temperature, alpha=alpha, kind="kl")
    assert transfer_set_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), labels, temperature=temperature,
                             alpha=alpha, kind="kl").item() == pytest.approx(mixed.item(), rel=1e-5)


def test_hidden_state_loss_is_one_minus_cosine_over_real_tokens_of_the_matched_layers():
    from adaptctl.distill.losses import hidden_state_loss

    torch.manual_seed(0)
    student = tuple(torch.randn(2, 3, 4) for _ in range(3))   # embeddings, 2 layers
    teacher = tuple(torch.randn(2, 3, 4) for _ in range(5))   # embeddings, 4 layers
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    real = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    per_layer = []
    for j, t in enumerate([1, 3]):
        cosines = [torch.dot(student[j + 1][b, i], teacher[t + 1][b, i])
                   / (student[j + 1][b, i].norm() * teacher[t + 1][b, i].norm()) for b, i in real]
        per_layer.append(sum(1 - c.item() for c in cosines) / len(real))
    got = hidden_state_loss(student, teacher, [1, 3], mask)
    assert got.item() == pytest.approx(sum(per_layer) / 2, rel=1e-5)
    # the same states at the real tokens give 0, whatever sits at the padding
    same = list(teacher)
    same[2], same[4] = student[1].clone() * 3.0, student[2].clone()  # cosine ignores scale
    same[2][0, 2] = same[4][0, 2] = torch.randn(4)
    assert hidden_state_loss(student, tuple(same), [1, 3], mask).item() == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------ student
def test_kept_layers_rule():
    assert kept_layers(6, 2) == [0, 5]
    assert kept_layers(6, 3) == [0, 2, 5]
    assert kept_layers(12, 6) == [0, 2, 4, 7, 9, 11]
    assert kept_layers(4, 4) == [0, 1, 2, 3]
    assert kept_layers(6, 1) == [0]


def test_shrink_bert_keeps_the_chosen_layers_embeddings_and_head(tmp_path):
    from transformers import BertForSequenceClassification

    model = tiny_bert(200, 6, {"a": 0, "b": 1})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kept = shrink(model, 3)
    assert kept == [0, 2, 5]
    assert len(model.bert.encoder.layer) == 3 and model.config.num_hidden_layers == 3
    after = model.state_dict()
    for new, old in enumerate(kept):
        for key in [k for k in before if k.startswith(f"bert.encoder.layer.{old}.")]:
            assert torch.equal(after[key.replace(f".layer.{old}.", f".layer.{new}.")], before[key]), key
    for key in [k for k in before if ".encoder.layer." not in k]:  # embeddings, pooler, classifier
        assert torch.equal(after[key], before[key]), key
    assert not any(".encoder.layer.3." in k or ".encoder.layer.5." in k for k in after)

    model.save_pretrained(tmp_path / "small")
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path / "small")
    assert reloaded.config.num_hidden_layers == 3 and len(reloaded.bert.encoder.layer) == 3
    ids = torch.randint(0, 200, (2, 9))
    model.eval()
    assert torch.allclose(reloaded.eval()(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6)


def test_shrink_llama_renumbers_layers_and_reloads(tmp_path):
    from transformers import LlamaForCausalLM

    model = tiny_llama(layers=4)
    old_last = {k: v.clone() for k, v in model.model.layers[3].state_dict().items()}
    assert shrink(model, 2) == [0, 3]
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
    for key, value in model.model.layers[1].state_dict().items():
        assert torch.equal(value, old_last[key])
    model.save_pretrained(tmp_path / "small")
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path / "small").eval()
    assert reloaded.config.num_hidden_layers == 2
    ids = torch.randint(0, 96, (1, 6))
    out = reloaded.generate(ids, max_new_tokens=3, do_sample=False)  # the KV cache indexes by layer_idx
    assert out.shape == (1, 9)
    assert torch.allclose(reloaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits, atol=1e-5)


def test_shrink_to_more_layers_than_the_model_has_is_a_user_error():
    with pytest.raises(UserError, match=r"distill.student.layers: 5 layers .* only 4"):
        shrink(tiny_bert(50, 4), 5)


def test_matched_teacher_layers_follow_the_layers_the_student_was_taken_from():
    from adaptctl.distill.student import matched_teacher_layers

    assert matched_teacher_layers([0, 5], 6, 6) == [0, 5]          # shrunk from the teacher itself
    assert matched_teacher_layers([0, 2, 5], 6, 6) == [0, 2, 5]
    assert matched_teacher_layers(None, 2, 6) == [2, 5]            # a 2-layer model against a 6-layer teacher
    assert matched_teacher_layers([0, 11], 12, 6) == [0, 5]        # shrunk from a model twice as deep
    assert matched_teacher_layers([0, 15, 29], 30, 30) == [0, 15, 29]


def test_augmented_copies_keep_special_tokens_and_mask_or_cut_the_rest(tokenizer):
    from datasets import Dataset

    from adaptctl.distill.augment import augmented_rows
    from adaptctl.recipe.schema import Augment

    encoded = tokenizer("please refund my invoice for the broken screen and the second charge")
    train = Dataset.from_list([{**encoded, "labels": 1, "num_tokens": len(encoded["input_ids"])}])
    settings = Augment(copies=40, mask=0.3, span=0.5, max_span=3)
    copies = augmented_rows(train, tokenizer, settings, seed=0)
    assert len(copies) == 40 and set(copies["labels"]) == {-100}
    original = encoded["input_ids"][1:-1]
    masked = cut = 0
    for row in copies:
        ids = row["input_ids"]
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert len(row["attention_mask"]) == len(row["token_type_ids"]) == len(ids) == row["num_tokens"]
        inner = ids[1:-1]
        assert 1 <= len(inner) <= len(original)
        if len(inner) < len(original):
            cut += 1
            assert len(inner) <= settings.max_span
        # each kept token is the original's at a contiguous run of positions, or the mask token
        assert any(all(t in (tokenizer.mask_token_id, original[start + k]) for k, t in enumerate(inner))
                   for start in range(len(original) - len(inner) + 1))
        masked += inner.count(tokenizer.mask_token_id)
    assert cut > 5 and masked > 20
    assert augmented_rows(train, tokenizer, settings, seed=0)["input_ids"] == copies["input_ids"]
    assert augmented_rows(train, tokenizer, settings, seed=1)["input_ids"] != copies["input_ids"]


def test_masking_with_a_tokenizer_that_has_no_mask_or_unknown_token_is_a_user_error():
    from datasets import Dataset
    from transformers import AutoTokenizer

    from adaptctl.distill.augment import augmented_rows
    from adaptctl.models.resolve import resolve_model
    from adaptctl.recipe.schema import Augment

    smollm = AutoTokenizer.from_pretrained(str(resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct").path))
    smollm.unk_token = None  # SmolLM2's byte-level BPE needs no unknown token; not every tokenizer has one
    assert smollm.mask_token_id is None and smollm.unk_token_id is None
    train = Dataset.from_list([{**smollm("refund my invoice"), "labels": 0, "num_tokens": 3}])
    with pytest.raises(UserError, match="distill.augment.mask: this tokenizer has neither a mask nor an unknown token"):
        augmented_rows(train, smollm, Augment(copies=1), seed=0)
    cut_only = augmented_rows(train, smollm, Augment(copies=4, mask=0.0, span=1.0, max_span=1), seed=0)
    assert all(len(ids) == 1 for ids in cut_only["input_ids"])  # no special tokens here: one token kept


# ----------------------------------------------------------- teacher checks
def test_label_sets_must_match_and_order_is_mapped():
    from adaptctl.distill.teacher import label_permutation

    assert label_permutation({"ham": 0, "spam": 1}, {"ham": 0, "spam": 1}, "t") is None
    assert label_permutation({"spam": 0, "ham": 1}, {"ham": 0, "spam": 1}, "t") == [1, 0]
    with pytest.raises(UserError) as caught:
        label_permutation({"LABEL_0": 0, "LABEL_1": 1}, {"ham": 0, "spam": 1}, "t")
    assert "distill.teacher" in caught.value.message
    assert "LABEL_0" in caught.value.message and "spam" in caught.value.message


def test_a_teacher_with_another_tokenizer_is_a_user_error(tmp_path, tokenizer):
    from transformers import BertTokenizerFast

    from adaptctl.distill.teacher import Teacher, check_tokenizers

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]) + "\n")
    other = BertTokenizerFast(vocab_file=str(vocab))
    teacher_dir = tmp_path / "teacher"
    tiny_bert(other.vocab_size, 2, {"a": 0, "b": 1}).save_pretrained(teacher_dir)
    other.save_pretrained(teacher_dir)
    student_dir = save_bert(tmp_path / "student", tokenizer, 2)
    teacher = Teacher("teacher", teacher_dir, None, f"model folder {teacher_dir}")
    with pytest.raises(UserError, match=r"distill.teacher: the teacher .* different tokenizer .* \d+ tokens against 30522"):
        check_tokenizers(teacher, tokenizer, student_dir, "the student")
    same = Teacher("student", student_dir, None, "model folder")
    check_tokenizers(same, tokenizer, student_dir, "the student")  # no error


def test_causal_lm_vocabulary_sizes_must_match():
    from adaptctl.distill.teacher import check_output_size

    check_output_size(tiny_llama(vocab_size=96), tiny_llama(layers=2, vocab_size=96), "vocabulary")
    with pytest.raises(UserError, match=r"distill.teacher: the teacher's vocabulary size .* 128, the student's 96"):
        check_output_size(tiny_llama(vocab_size=128), tiny_llama(vocab_size=96), "vocabulary")


def test_missing_teacher_names_the_field(tmp_path):
    from adaptctl.distill.teacher import resolve_teacher

    with pytest.raises(UserError, match="distill.teacher: cannot find the teacher 'no/such-model'"):
        resolve_teacher("no/such-model", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a model folder"):
        resolve_teacher("empty", tmp_path)
    (tmp_path / "run" / "prepare").mkdir(parents=True)
    (tmp_path / "run" / "prepare" / "manifest.json").write_text('{"status": "complete"}')
    with pytest.raises(UserError, match="no trained model"):
        resolve_teacher("run", tmp_path)


# --------------------------------------------------------- causal-lm cache
def test_causal_lm_top_k_cache_holds_the_teachers_response_token_logits(tmp_path):
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq

    from adaptctl.distill.cache import LogitsCache, build
    from adaptctl.distill.teacher import teacher_forward
    from adaptctl.distill.trainer import IndexCollator

    class Pad:  # DataCollatorForSeq2Seq pads labels with -100; it needs a tokenizer only for pad ids
        pad_token_id, padding_side = 0, "right"

        def pad(self, features, **kwargs):
            from transformers.tokenization_utils_base import BatchEncoding

            width = max(len(f["input_ids"]) for f in features)
            return BatchEncoding({"input_ids": torch.tensor([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features]),
                                  "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features])})

    teacher = tiny_llama(layers=2).eval()
    rows = [{"input_ids": [5, 6, 7, 8, 9], "labels": [-100, -100, 7, 8, 9], "idx": 0},
            {"input_ids": [3, 4, 10], "labels": [-100, 4, 10], "idx": 1},
            {"input_ids": [11, 12, 13, 14, 15, 16, 17], "labels": [-100, -100, -100, -100, 15, 16, 17], "idx": 2}]
    collate = IndexCollator(DataCollatorForSeq2Seq(Pad(), padding=True))
    cache = build(tmp_path / "c", teacher, Dataset.from_list(rows), collate, over="vocabulary", top_k=5,
                  permutation=None, batch_size=2, precision="fp32")
    reopened = LogitsCache.open(tmp_path / "c")
    assert torch.equal(reopened.tensors["offsets"], torch.tensor([0, 3, 2 + 3, 3 + 2 + 3]))
    batch = collate([rows[2], rows[0]])
    live = response_rows(teacher_forward(teacher, batch, "fp32"), batch["labels"])
    values, indices = reopened.tokens(batch["idx"])
    expected_values, expected_indices = live.topk(5, dim=-1)
    assert torch.equal(indices, expected_indices)
    assert torch.allclose(values, expected_values, atol=2e-3)  # stored as float16
    assert cache.causal and values.shape == (3 + 3, 5)


# ------------------------------------------------------------------ trainer
def test_trainer_loss_mixes_teacher_soft_targets_and_labels(tmp_path, tokenizer):
    from transformers import DataCollatorWithPadding, TrainingArguments

    from adaptctl.distill.trainer import DistillTrainer, SoftTargets

    student = tiny_bert(tokenizer.vocab_size, 2, {"a": 0, "b": 1}, seed=3).eval()
    teacher = tiny_bert(tokenizer.vocab_size, 2, {"b": 0, "a": 1}, seed=4).eval()  # labels in the other order
    soft = SoftTargets(temperature=3.0, alpha=0.25, kind="kl", causal=False, precision="fp32", teacher=teacher,
                       permutation=[1, 0])
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = DistillTrainer(model=student, args=args, soft=soft, data_collator=DataCollatorWithPadding(tokenizer))
    rows = [{**tokenizer(text), "labels": label, "idx": i}
            for i, (text, label) in enumerate([("refund my invoice", 0), ("the screen is broken", 1)])]
    batch = trainer.data_collator(rows)
    assert batch["idx"].tolist() == [0, 1]
    loss = trainer.compute_loss(student, dict(batch))
    inputs = {k: v for k, v in batch.items() if k != "idx"}
    with torch.no_grad():
        s = student(**inputs).logits
        t = teacher(**{k: v for k, v in inputs.items() if k != "labels"}).logits[:, [1, 0]]
    p, q = torch.softmax(t / 3, -1), torch.softmax(s / 3, -1)
    kl = (p * (p.log() - q.log())).sum(-1).mean()
    ce = torch.nn.functional.cross_entropy(s, batch["labels"])
    assert loss.item() == pytest.approx((0.25 * 9 * kl + 0.75 * ce).item(), rel=1e-5)


# -------------------------------------------------------------- end to end
def _distill(run_cli, recipe: Path, run_dir: Path, *extra):
    code, out, err = run_cli(["run", recipe, "--run-dir", run_dir, "--stages", "prepare,distill", *extra])
    assert code == 0, err
    return json.loads((run_dir / "distill" / "manifest.json").read_text()), err


def test_distill_end_to_end_writes_a_reloadable_smaller_student(workspace, run_cli, tmp_path):
    from transformers import AutoModelForSequenceClassification

    recipe = write_recipe(workspace, "e2e")
    manifest, _ = _distill(run_cli, recipe, tmp_path / "run")
    model_dir = tmp_path / "run" / "distill" / "model"
    student = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert student.config.num_hidden_layers == 2 and student.config.label2id == {"billing": 0, "tech": 1}
    assert json.loads((model_dir / "adaptctl.json").read_text())["stage"] == "distill"
    assert manifest["status"] == "complete" and manifest["student_layers"] == [0, 3]
    assert manifest["teacher_parameters"] > manifest["student_parameters"] == manifest["total_parameters"]
    lines = (tmp_path / "run" / "distill" / "metrics.jsonl").read_text().splitlines()
    assert any("loss" in json.loads(line) for line in lines)
    # the student learned: its weights moved away from the base model's kept layers
    base = AutoModelForSequenceClassification.from_pretrained(workspace / "student")
    assert not torch.equal(student.bert.encoder.layer[1].output.dense.weight, base.bert.encoder.layer[3].output.dense.weight)


def test_cache_teacher_writes_once_and_is_reused(workspace, run_cli, tmp_path, monkeypatch):
    from adaptctl.distill import cache as caches
    from adaptctl.distill import trainer as trainers

    recipe = write_recipe(workspace, "cached", cache_teacher=True)
    run_dir = tmp_path / "run"
    first, _ = _distill(run_cli, recipe, run_dir)
    assert first["teacher_cache_hit"] is False
    files = list((run_dir / "prepare" / "teacher_logits").glob("*/logits.safetensors"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns

    # The cached logits are the teacher's, in the data's label order, found by example index.
    from datasets import load_from_disk
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

    cache = caches.LogitsCache.open(files[0].parent)
    train = load_from_disk(str(run_dir / "prepare" / "data"))["train"]
    teacher = AutoModelForSequenceClassification.from_pretrained(workspace / "teacher").eval()
    rows = train.select([0, 5]).select_columns(["input_ids", "attention_mask", "token_type_ids"]).to_list()
    with torch.no_grad():
        live = teacher(**DataCollatorWithPadding(_tok(workspace))(rows)).logits
    assert torch.allclose(cache.rows(torch.tensor([0, 5])), live, atol=1e-5)

    # A fresh distillation reuses the cache: the teacher never runs (both paths would raise).
    def boom(*args, **kwargs):
        raise AssertionError("the teacher ran although its logits are cached")

    monkeypatch.setattr(caches, "build", boom)
    monkeypatch.setattr(trainers, "teacher_outputs", boom)
    import shutil

    shutil.rmtree(run_dir / "distill")
    code, _, err = run_cli(["prepare", recipe, "--run-dir", run_dir])  # re-preparing the same data keeps the cache
    assert code == 0, err
    assert files[0].is_file()
    second, err = _distill(run_cli, recipe, run_dir)
    assert second["teacher_cache_hit"] is True and "reusing the teacher's logits" in err
    assert files[0].stat().st_mtime_ns == stamp
    assert (run_dir / "distill" / "model" / "config.json").is_file()


def _tok(workspace):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(workspace / "teacher"))


def test_alpha_zero_trains_exactly_like_train(workspace, run_cli, tmp_path):
    """With alpha 0 and the whole student, distill is label-only training: the same weights as `train`."""
    from safetensors.torch import load_file

    recipe = write_recipe(workspace, "alpha0", alpha=0.0, student={})
    _distill(run_cli, recipe, tmp_path / "run", "--set", "train.max_steps=4")
    code, _, err = run_cli(["train", recipe, "--run-dir", tmp_path / "run", "--set", "train.max_steps=4"])
    assert code == 0, err
    distilled = load_file(tmp_path / "run" / "distill" / "model" / "model.safetensors")
    trained = load_file(tmp_path / "run" / "train" / "model" / "model.safetensors")
    assert distilled.keys() == trained.keys()
    for key in trained:
        assert torch.equal(distilled[key], trained[key]), key


def test_lora_student_with_fewer_layers_reloads_over_its_saved_base(workspace, run_cli, tmp_path):
    from adaptctl.models.loading import load_adapted
    from adaptctl.recipe.loader import load_recipe
    from adaptctl.tasks import get_task

    from transformers import AutoModelForSequenceClassification

    recipe = write_recipe(workspace, "lora", augment={"copies": 1})
    code, _, err = run_cli(["run", recipe, "--run-dir", tmp_path / "run", "--stages", "prepare,distill,export",
                            "--set", "method.name=lora", "--set", "method.target_modules=[query,value]"])
    assert code == 0, err
    base = tmp_path / "run" / "distill" / "student_base"
    assert json.loads((base / "config.json").read_text())["num_hidden_layers"] == 2
    loaded = load_recipe(recipe, ["method.name=lora"]).recipe
    model = load_adapted(tmp_path / "run" / "distill" / "model", get_task(loaded.task), loaded, {"billing": 0, "tech": 1})
    assert len(model.base_model.model.bert.encoder.layer) == 2
    # export merges the adapter into the 2-layer student, and the card says what it was distilled from
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "export" / "model")
    assert exported.config.num_hidden_layers == 2
    card = (tmp_path / "run" / "export" / "model" / "README.md").read_text()
    assert "Distilled from the teacher" in card and "keeping layers [0, 3]" in card
    assert "96 augmented training rows" in card  # one copy of each of the 96 training rows


def test_teacher_with_other_labels_is_a_clear_user_error(workspace, run_cli, tmp_path, tokenizer):
    save_bert(workspace / "wrong-teacher", tokenizer, 2, {"ham": 0, "spam": 1})
    recipe = write_recipe(workspace, "wrong", teacher="wrong-teacher")
    code, _, err = run_cli(["run", recipe, "--run-dir", tmp_path / "run", "--stages", "prepare,distill"])
    assert code == 1
    assert "distill.teacher: the teacher's labels differ from the data's" in err
    assert "Traceback" not in err


def test_teacher_from_a_run_directory(workspace, run_cli, tmp_path):
    recipe = write_recipe(workspace, "teacher-run", alpha=0.0, student={})
    code, _, err = run_cli(["run", recipe, "--run-dir", tmp_path / "teacher-run", "--stages", "prepare,train",
                            "--set", "train.max_steps=2"])
    assert code == 0, err
    student_recipe = write_recipe(workspace, "from-run", teacher=str(tmp_path / "teacher-run"))
    manifest, err = _distill(run_cli, student_recipe, tmp_path / "run", "--set", "train.max_steps=2")
    assert manifest["teacher"] == str((tmp_path / "teacher-run" / "train" / "model").resolve())


def _with_labels_swapped(model_dir: Path, folder: Path, tokenizer) -> Path:
    """The same classifier with its two label rows (and label names) in the other order: the same predictions by name."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    names = [model.config.id2label[i] for i in (1, 0)]
    model.config.id2label, model.config.label2id = dict(enumerate(names)), {n: i for i, n in enumerate(names)}
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_evaluate_puts_the_teacher_beside_the_distilled_student(workspace, run_cli, tmp_path, tokenizer):
    """evaluate scores the teacher on the same split, in the data's label order although the teacher's head
    orders the labels the other way, and reports what the student kept, both sizes and both speeds."""
    from datasets import load_from_disk
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

    recipe = write_recipe(workspace, "teacher-to-evaluate", alpha=0.0, student={})
    code, _, err = run_cli(["run", recipe, "--run-dir", tmp_path / "teacher", "--stages", "prepare,train",
                            "--set", "train.epochs=8", "--set", "train.learning_rate=3e-3"])
    assert code == 0, err
    swapped = _with_labels_swapped(tmp_path / "teacher" / "train" / "model", tmp_path / "swapped", tokenizer)
    assert AutoModelForSequenceClassification.from_pretrained(swapped).config.label2id == {"tech": 0, "billing": 1}
    student_recipe = write_recipe(workspace, "evaluated-student", teacher=str(swapped))
    code, _, err = run_cli(["run", student_recipe, "--run-dir", tmp_path / "run", "--stages", "prepare,distill,evaluate",
                            "--set", "train.max_steps=2"])
    assert code == 0, err
    assert re.search(r"evaluate: accuracy = [\d.]+ \(teacher [\d.]+\)", err)  # the log shows both

    document = json.loads((tmp_path / "run" / "evaluate" / "metrics.json").read_text())
    teacher = document["teacher"]
    test = load_from_disk(str(tmp_path / "run" / "prepare" / "data"))["test"]
    model = AutoModelForSequenceClassification.from_pretrained(swapped).eval()
    rows = test.select_columns(["input_ids", "attention_mask", "token_type_ids"]).to_list()
    with torch.no_grad():
        predicted = model(**DataCollatorWithPadding(tokenizer)(rows)).logits.argmax(-1).tolist()
    direct = sum(model.config.id2label[p] == gold for p, gold in zip(predicted, test["label"])) / len(test)
    assert direct > 0.5  # the teacher learned the task, so a label mix-up would show
    assert teacher["metrics"]["accuracy"] == pytest.approx(direct)
    assert teacher["metrics"].keys() == document["metrics"].keys()
    student_accuracy = document["metrics"]["accuracy"]
    assert teacher["retained_percent"]["accuracy"] == pytest.approx(100 * student_accuracy / direct, abs=0.01)
    manifest = json.loads((tmp_path / "run" / "distill" / "manifest.json").read_text())
    assert teacher["parameters"] == manifest["teacher_parameters"] > teacher["student_parameters"] == manifest["student_parameters"]
    assert teacher["examples_per_second"] > 0 and teacher["speedup"] > 0
    report = (tmp_path / "run" / "evaluate" / "report.md").read_text()
    assert "## Teacher vs student" in report and f"| parameters | {manifest['student_parameters']:,} |" in report
    assert "x the teacher's speed" in report

    # the same --set as the run that distilled: evaluate alone never scores a model of another recipe
    code, _, err = run_cli(["evaluate", student_recipe, "--run-dir", tmp_path / "run", "--set", "train.max_steps=2",
                            "--set", "evaluate.compare_with_teacher=false"])
    assert code == 0, err
    assert "teacher" not in json.loads((tmp_path / "run" / "evaluate" / "metrics.json").read_text())


def test_retained_is_the_students_share_of_the_teachers_quality_for_lower_and_higher_is_better():
    from adaptctl.evaluation import EvalResult
    from adaptctl.stages.evaluate import _teacher_document

    student = {"metrics": {"loss": 2.0, "perplexity": 8.0, "rougeL": 0.2, "bleu": 30.0}, "examples_per_second": 9.0}
    teacher = {"result": EvalResult(metrics={"loss": 1.0, "perplexity": 4.0, "rougeL": 0.4, "bleu": 20.0},
                                    examples_per_second=3.0),
               "model": "t", "parameters": 100, "student_parameters": 40}
    document = _teacher_document(student, teacher, None)
    assert document["retained_percent"] == {"loss": 50.0, "perplexity": 50.0, "rougeL": 50.0, "bleu": 150.0}
    assert document["speedup"] == 3.0


def test_causal_lm_distillation_end_to_end(tmp_path, run_cli):
    """A tiny Llama teacher -> a 1-layer student of a tiny Llama, on prompt/response pairs with the SmolLM2
    tokenizer: with the top-k cache (reverse-kl) and with the live teacher (jsd)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from adaptctl.models.resolve import resolve_model

    tok = AutoTokenizer.from_pretrained(str(resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct").path))
    for name, seed in (("teacher", 1), ("student", 2)):
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
        LlamaForCausalLM(config).save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    rnd = random.Random(0)
    words = "apple river stone cloud green quick seven table".split()
    pairs = [rnd.sample(words, 3) for _ in range(40)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"q": " ".join(w), "a": " ".join(reversed(w))}) + "\n"
                                                  for w in pairs))
    recipe = {"name": "tiny-lm", "task": "causal-lm", "seed": 7, "model": {"base": "student"},
              "data": {"source": "pairs.jsonl", "prompt": "Reverse: {q}\nAnswer: ", "response": "{a}",
                       "splits": {"validation": 0.2, "test": 0.1}, "max_length": 48},
              "train": {"max_steps": 3, "batch_size": 8, "learning_rate": 5e-3, "precision": "fp32", "logging_steps": 1},
              "evaluate": {"batch_size": 8},
              "distill": {"teacher": "teacher", "student": {"layers": 1}, "loss": "reverse-kl", "cache_teacher": True,
                          "top_k": 16}}
    (tmp_path / "lm.yaml").write_text(json.dumps(recipe))
    manifest, _ = _distill(run_cli, tmp_path / "lm.yaml", tmp_path / "cached")
    cache = next((tmp_path / "cached" / "prepare" / "teacher_logits").glob("*/logits.safetensors"))
    from safetensors.torch import load_file

    stored = load_file(cache)
    splits = json.loads((tmp_path / "cached" / "prepare" / "stats.json").read_text())["splits"]
    assert stored["offsets"].shape[0] == splits["train"]["rows"] + splits["validation"]["rows"] + 1
    assert stored["values"].shape[1] == 16
    assert stored["values"].shape[0] == int(stored["offsets"][-1]) > 0
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "cached" / "distill" / "model")
    assert student.config.num_hidden_layers == 1 and manifest["student_layers"] == [0]
    live, _ = _distill(run_cli, tmp_path / "lm.yaml", tmp_path / "live", "--set", "distill.cache_teacher=false",
                       "--set", "distill.loss=jsd")
    assert "teacher_cache" not in live and live["metrics"]["train_loss"] > 0


def test_augmented_copies_join_the_training_rows_and_the_teacher_cache(workspace, run_cli, tmp_path):
    from safetensors.torch import load_file

    recipe = write_recipe(workspace, "augmented", augment={"copies": 2}, cache_teacher=True)
    manifest, err = _distill(run_cli, recipe, tmp_path / "run")
    splits = json.loads((tmp_path / "run" / "prepare" / "stats.json").read_text())["splits"]
    train, validation = splits["train"]["rows"], splits["validation"]["rows"]
    assert manifest["augmented_rows"] == 2 * train and f"{2 * train} augmented copies" in err
    cache = load_file(next((tmp_path / "run" / "prepare" / "teacher_logits").glob("*/logits.safetensors")))
    assert cache["logits"].shape == (3 * train + validation, 2)
    # the rows after the originals hold the teacher's logits on the (seeded) copies, in order
    from datasets import load_from_disk
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

    from adaptctl.distill.augment import augmented_rows
    from adaptctl.recipe.schema import Augment

    originals = load_from_disk(str(tmp_path / "run" / "prepare" / "data"))["train"]
    copies = augmented_rows(originals, _tok(workspace), Augment(copies=2), seed=7).select([0, train + 5])
    teacher = AutoModelForSequenceClassification.from_pretrained(workspace / "teacher").eval()
    with torch.no_grad():
        live = teacher(**DataCollatorWithPadding(_tok(workspace))(copies.remove_columns(["labels", "num_tokens"]).to_list())).logits
    assert torch.allclose(cache["logits"][[train, 2 * train + 5]], live, atol=1e-5)
    assert copies["input_ids"][0] != originals["input_ids"][0]
    assert math.isfinite(manifest["metrics"]["train_loss"])
    # other augmentation settings are other rows: a cache of their own
    _distill(run_cli, recipe, tmp_path / "run", "--set", "distill.augment.mask=0.3")
    assert len(list((tmp_path / "run" / "prepare" / "teacher_logits").glob("*/logits.safetensors"))) == 2


def test_hidden_state_term_brings_the_students_layers_towards_the_teachers(workspace, run_cli, tmp_path):
    from datasets import load_from_disk
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

    from adaptctl.distill.losses import hidden_state_loss

    recipe = write_recipe(workspace, "hidden", alpha=0.0, hidden_weight=1.0)
    manifest, _ = _distill(run_cli, recipe, tmp_path / "run", "--set", "train.epochs=3",
                           "--set", "train.learning_rate=3e-3")
    assert manifest["teacher_layers_matched"] == [0, 3] and manifest["hidden_weight"] == 1.0
    rows = load_from_disk(str(tmp_path / "run" / "prepare" / "data"))["test"]
    batch = DataCollatorWithPadding(_tok(workspace))(
        rows.select_columns(["input_ids", "attention_mask", "token_type_ids"]).to_list())

    def distance(student) -> float:
        teacher = AutoModelForSequenceClassification.from_pretrained(workspace / "teacher").eval()
        with torch.no_grad():
            ours = student.eval()(**batch, output_hidden_states=True).hidden_states
            theirs = teacher(**batch, output_hidden_states=True).hidden_states
        return hidden_state_loss(ours, theirs, [0, 3], batch["attention_mask"]).item()

    base = AutoModelForSequenceClassification.from_pretrained(workspace / "student")
    shrink(base, 2)
    trained = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "distill" / "model")
    assert distance(trained) < 0.5 * distance(base)


def test_hidden_state_term_needs_equal_widths(workspace, run_cli, tmp_path, tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(workspace / "wide-student")
    tokenizer.save_pretrained(workspace / "wide-student")
    recipe = write_recipe(workspace, "wide", hidden_weight=1.0, student={"base": "wide-student"})
    code, _, err = run_cli(["run", recipe, "--run-dir", tmp_path / "run", "--stages", "prepare,distill"])
    assert code == 1 and "Traceback" not in err
    assert "distill.hidden_weight: the student's hidden size is 48, the teacher's 32" in err


@pytest.mark.parametrize("settings,field,words", [
    ({"hidden_weight": 1.0, "cache_teacher": True}, "distill.hidden_weight", "the cache holds logits only"),
    ({"augment": {"copies": 2}, "alpha": 0.0}, "distill.augment.copies", "distill.alpha is 0"),
])
def test_distillation_settings_that_cannot_work_together_are_located_errors(workspace, run_cli, settings, field, words):
    recipe = write_recipe(workspace, "conflict", **settings)
    code, _, err = run_cli(["validate", recipe])
    assert code == 1 and f"{field}: " in err and words in err and "hint" in err


def test_augmented_copies_are_for_classification(workspace, run_cli):
    recipe = json.loads(write_recipe(workspace, "lm-augment", augment={"copies": 2}).read_text())
    recipe.update(task="causal-lm", data={"source": "data.csv", "prompt": "{text}", "response": "{label}"})
    (workspace / "lm-augment.yaml").write_text(json.dumps(recipe))
    code, _, err = run_cli(["validate", workspace / "lm-augment.yaml"])
    assert code == 1 and "distill.augment.copies: augmented copies are for classification, not causal-lm" in err


# ---------------------------------------------------------------- real data
PROJECT = Path(__file__).resolve().parents[1]
SMS_TEACHER = PROJECT / "bench" / "recipes" / "sms-spam-teacher.yaml"
SMS_STUDENT = PROJECT / "bench" / "recipes" / "sms-spam-distill.yaml"


def _accuracy(model_dirs: dict, test, tokenizer) -> dict:
    """name -> test accuracy, batch 32, bf16 where fitting (evaluate's own batching, so its figure must agree).
    No timing here: speed belongs in bench/, and a timed assertion on a shared CI machine tests its load."""
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

    from adaptctl.evaluation.inference import autocast, length_sorted_batches

    rows = test.select_columns(["input_ids", "attention_mask", "token_type_ids"]).to_list()
    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    batches = [(idx, collate([rows[i] for i in idx]))
               for idx in length_sorted_batches([len(r["input_ids"]) for r in rows], 32)]
    models = {name: AutoModelForSequenceClassification.from_pretrained(d).eval() for name, d in model_dirs.items()}
    predicted = {name: [0] * len(rows) for name in models}
    for name, model in models.items():
        with torch.inference_mode(), autocast("auto"):
            for idx, batch in batches:
                for i, p in zip(idx, model(**batch).logits.argmax(-1).tolist()):
                    predicted[name][i] = p
    gold = test["labels"]
    return {name: sum(p == g for p, g in zip(predicted[name], gold)) / len(rows) for name in models}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sms_spam_two_layer_student_beats_labels_alone_and_keeps_the_teachers_accuracy(shared_data, run_cli, tmp_path):
    """bench/recipes/sms-spam-teacher.yaml (MiniLM, 6 layers, fine-tuned fully on 500 labelled messages) distilled
    into 2 of MiniLM's layers by bench/recipes/sms-spam-distill.yaml, beside the same student trained on the
    labels alone.  Prints the accuracy of all three; the student's size is checked, its speed is bench's."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    clock = time.monotonic()
    code, _, err = run_cli(["run", SMS_TEACHER, "--run-dir", tmp_path / "teacher", "--stages", "prepare,train"])
    assert code == 0, err
    # 2 augmented copies of each row, not the recipe's 4: half the distillation time, and still ahead of the labels
    teacher = ["--set", f"distill.teacher={tmp_path / 'teacher'}", "--set", "distill.augment.copies=2"]
    labels_only = ["--set", "distill.alpha=0", "--set", "distill.hidden_weight=0", "--set", "distill.augment.copies=0"]
    for run_dir, settings in (("student", teacher), ("labels-only", teacher + labels_only)):
        code, _, err = run_cli(["run", SMS_STUDENT, "--run-dir", tmp_path / run_dir, "--stages", "prepare,distill,evaluate",
                                *settings])
        assert code == 0, err

    test = load_from_disk(str(tmp_path / "teacher" / "prepare" / "data"))["test"]
    teacher_model = tmp_path / "teacher" / "train" / "model"
    accuracy = _accuracy({"teacher": teacher_model, "student": tmp_path / "student" / "distill" / "model",
                                   "labels-only": tmp_path / "labels-only" / "distill" / "model"}, test,
                                  AutoTokenizer.from_pretrained(str(teacher_model)))
    manifest = json.loads((tmp_path / "student" / "distill" / "manifest.json").read_text())
    report = {name: {"accuracy": round(acc, 4), "errors": round((1 - acc) * len(test))}
              for name, acc in accuracy.items()}
    report.update(test_rows=len(test), teacher_parameters=manifest["teacher_parameters"],
                  student_parameters=manifest["student_parameters"], augmented_rows=manifest["augmented_rows"],
                  seconds=round(time.monotonic() - clock, 1))
    print("\nSMS spam distillation:", json.dumps(report))
    teacher_acc, student_acc, labels_acc = accuracy["teacher"], accuracy["student"], accuracy["labels-only"]
    assert teacher_acc >= 0.95 and len(test) > 1000
    assert student_acc >= 0.97 * teacher_acc
    assert student_acc >= labels_acc  # measured: 18 errors against 24 (seed 42; 16-18 against 21-24 over 3 seeds)
    # 2 of 6 layers: a third of the encoder's compute per example (the embeddings are a lookup)
    layers = {name: json.loads((path / "config.json").read_text())["num_hidden_layers"]
              for name, path in (("teacher", teacher_model), ("student", tmp_path / "student" / "distill" / "model"))}
    assert layers == {"teacher": 6, "student": 2}

    # evaluate's report puts the teacher beside the student, on the same test rows
    document = json.loads((tmp_path / "student" / "evaluate" / "metrics.json").read_text())
    assert document["num_examples"] == len(test)
    assert document["metrics"]["accuracy"] == pytest.approx(student_acc)  # the same batches as above
    assert document["teacher"]["metrics"]["accuracy"] == pytest.approx(teacher_acc)
    assert document["teacher"]["retained_percent"]["accuracy"] >= 97
    assert document["teacher"]["parameters"] == manifest["teacher_parameters"]
