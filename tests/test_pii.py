"""data.pii: personal data found by Presidio's pattern recognizers (checksums where the kind has one), counted
per kind and column into prepare/stats.json and the report, redacted with typed placeholders before
tokenizing, or refused at the first rows' file:line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

TEXT = ("Mail bob.smith@example.com or call 0906 170 1461, see www.win-cash.co.uk/claim. Card 4111 1111 1111 1111, "
        "not 4111 1111 1111 1112; IBAN GB82 WEST 1234 5698 7654 32, not GB82 WEST 1234 5698 7654 33; host 192.168.0.1. "
        "Stupid.it was late..so sorry.")


def test_each_kind_is_found_and_checksums_reject_lookalikes():
    from adaptctl.data import pii

    spans = pii.find(TEXT, tuple(pii.KINDS))
    found = [(s.kind, TEXT[s.start:s.end]) for s in spans]
    assert found == [("email", "bob.smith@example.com"), ("phone", "0906 170 1461"), ("url", "www.win-cash.co.uk/claim"),
                     ("credit_card", "4111 1111 1111 1111"), ("iban", "GB82 WEST 1234 5698 7654 32"),
                     ("ip_address", "192.168.0.1")]
    redacted = pii.redact(TEXT, spans)
    assert redacted.startswith("Mail [EMAIL] or call [PHONE], see [URL]. Card [CREDIT_CARD], not 4111")
    assert "IBAN [IBAN], not GB82" in redacted and "host [IP_ADDRESS]." in redacted
    query = "Claim at www.win-cash.com?n=QJKGIGHJ today, or http://x.co.uk/a?b=1."  # the query string too
    assert pii.redact(query, pii.find(query, ("url",))) == "Claim at [URL] today, or [URL]."


def pii_recipe(root: Path, action: str, rows: list[str]) -> Path:
    from tiny_classifier import tiny_classifier_recipe

    path = tiny_classifier_recipe(root)
    (root / "data.csv").write_text("text,label\n" + "".join(f'"{row}",{"pos" if i % 2 else "neg"}\n'
                                                           for i, row in enumerate(rows)))
    content = yaml.safe_load(path.read_text())
    content["data"]["pii"] = {"action": action, "detect": ["email", "phone", "url"]}
    path.write_text(yaml.safe_dump(content))
    return path


ROWS = [f"lovely item {i}" for i in range(16)] + ["write to ann@example.org today", "call 0906 170 1461 now",
                                                   "great deal at www.shop-now.com/x and ann@example.org"] * 2


def test_prepare_counts_per_kind_and_column_and_redacts_before_tokenizing(tmp_path, run_cli):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    action = "redact"
    path = pii_recipe(tmp_path, action, ROWS)
    code, _, err = run_cli(["prepare", path, "--run-dir", tmp_path / "run"])
    assert code == 0, err
    found = json.loads((tmp_path / "run" / "prepare" / "stats.json").read_text())["pii"]
    assert found["counts"] == {"email": 4, "phone": 2, "url": 2} and found["rows"] == 6
    assert found["by_column"] == {"text": {"email": 4, "phone": 2, "url": 2}} and found["action"] == action
    assert found["examples"] and not any("ann@example.org" in e for e in found["examples"])
    data = load_from_disk(str(tmp_path / "run" / "prepare" / "data"))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "base"))
    texts = " ".join(tokenizer.decode(ids) for split in data.values() for ids in split["input_ids"])
    assert "example" not in texts and "0906" not in texts and "shop" not in texts
    assert "[ email ]" in texts and "[ phone ]" in texts and "[ url ]" in texts


def test_refuse_stops_at_the_first_rows_with_their_file_and_line(tmp_path, run_cli):
    path = pii_recipe(tmp_path, "refuse", ROWS)
    code, _, err = run_cli(["prepare", path, "--run-dir", tmp_path / "run"])
    assert code == 1 and "Traceback" not in err
    assert f"{tmp_path / 'data.csv'}:18: text: email: personal data (data.pii.action: refuse)" in err, err
    assert "data.csv:19: text: phone" in err and "data.pii.action: redact" in err
    assert not (tmp_path / "run" / "prepare" / "data").exists()


def test_the_report_shows_counts_per_column_and_redacted_examples():
    from adaptctl.report import privacy_section

    pii = {"action": "redact", "detect": ["email", "phone"], "rows": 3, "counts": {"email": 2, "phone": 1},
           "by_column": {"text": {"email": 2, "phone": 1}}, "examples": ["write to [EMAIL] today"]}
    text = "\n".join(privacy_section({"pii": pii}))
    assert "2 email, 1 phone in 3 rows; each replaced by a typed placeholder" in text
    assert "| text | 2 | 1 |" in text and "`write to [EMAIL] today`" in text and "Names are not detected" in text


def test_predict_screens_generated_text_as_the_option_says():
    from adaptctl.core.errors import UserError
    from adaptctl.predict import _screened

    rows = [{"prompt": "a", "__line__": 1}, {"prompt": "b", "__line__": 2}]
    results = [{"prediction": "no contact details"}, {"prediction": "mail ann@example.org or call 0906 170 1461"}]
    assert _screened(results, rows, "in.jsonl", "report") == results
    redacted = _screened(results, rows, "in.jsonl", "redact")
    assert [r["prediction"] for r in redacted] == ["no contact details", "mail [EMAIL] or call [PHONE]"]
    with pytest.raises(UserError) as refused:
        _screened(results, rows, "in.jsonl", "refuse")
    assert refused.value.message == "in.jsonl:2: the generated text holds personal data (email, phone)"
