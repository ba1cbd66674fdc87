"""evaluate.judge: an API model compares the adapted model's answer with the baseline's, prompt by prompt.

Each pair is judged twice, the adapted answer shown first and then second, because judges favour a
position (Zheng et al. 2023, "Judging LLM-as-a-Judge"): the adapted model scores 1 for a win, 0.5 for a
tie and 0 for a loss in each order, and the two orders' mean decides the example (orders that disagree
make a tie).  The rates come with Wilson 95% intervals, the mean score with a normal one; the judge's
reasons go into predictions.jsonl.  Every call is cached like any other API answer.
"""

from __future__ import annotations

import math
import re

from adaptctl.core import console
from adaptctl.api.client import ApiCaller

PROMPT = """You compare two answers to the same prompt.
Criteria: {criteria}

[Prompt]
{prompt}

[Answer A]
{first}

[Answer B]
{second}

Give your reason in one or two sentences, then end with one line: "Verdict: A", "Verdict: B" or "Verdict: tie"."""
VERDICT = re.compile(r"verdict\W*(?:answer\s+)?(a|b|tie)\b", re.IGNORECASE)
Z95 = 1.959964


def verdict(answer: str | None) -> str | None:
    """"a", "b" or "tie" from the judge's last verdict line; None when it gave none."""
    found = VERDICT.findall(answer or "")
    return found[-1].lower() if found else None


def adapted_score(first: str | None, second: str | None) -> float | None:
    """The adapted model's score over both orders (first: it was answer A; second: it was answer B)."""
    scores = [s for s in ({"a": 1.0, "b": 0.0, "tie": 0.5}.get(first or ""),
                          {"a": 0.0, "b": 1.0, "tie": 0.5}.get(second or "")) if s is not None]
    return sum(scores) / len(scores) if scores else None


def wilson(count: int, n: int) -> list[float] | None:
    """The Wilson score interval of a proportion, 95%: honest near 0 and 1 and for small n."""
    if n == 0:
        return None
    p, z2 = count / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def judge(caller: ApiCaller, settings, adapted: list[dict], baseline: list[dict], baseline_kind: str) -> dict:
    """Judge every example (or evaluate.judge.max_examples); each adapted prediction row gains `judge`."""
    from adaptctl.api.asking import describe

    n = min(len(adapted), len(baseline), settings.max_examples or len(adapted))
    pairs = [(adapted[i]["input"], adapted[i]["prediction"], baseline[i]["prediction"]) for i in range(n)]
    chats = [[{"role": "user", "content": PROMPT.format(criteria=settings.criteria, prompt=p, first=first,
                                                        second=second)}]
             for p, ours, theirs in pairs for first, second in ((ours, theirs), (theirs, ours))]
    answers = caller.ask_all(chats, "evaluate: judge")
    outcomes, unjudged, consistent = {"win": 0, "tie": 0, "loss": 0}, 0, 0
    scores: list[float] = []
    for i in range(n):
        first, second = answers[2 * i], answers[2 * i + 1]
        v1, v2 = verdict(first.text), verdict(second.text)
        score = adapted_score(v1, v2)
        outcome = None if score is None else "win" if score > 0.5 else "loss" if score < 0.5 else "tie"
        if outcome is None:
            unjudged += 1
        else:
            outcomes[outcome] += 1
            assert score is not None  # an outcome comes from a score
            scores.append(score)
            consistent += v1 is not None and v2 is not None and adapted_score(v1, None) == adapted_score(None, v2)
        adapted[i]["judge"] = {"outcome": outcome, "verdicts": [v1, v2], "reasons": [first.text, second.text]}
    judged = len(scores)
    document = {"against": baseline_kind, "criteria": settings.criteria, "examples": n, "judged": judged,
                "unjudged": unjudged,
                "position_consistency": round(consistent / judged, 4) if judged else None,
                **{f"{name}_rate": round(count / judged, 4) if judged else None for name, count in outcomes.items()},
                **{f"{name}_ci95": wilson(count, judged) for name, count in outcomes.items()},
                "score": round(sum(scores) / judged, 4) if judged else None, "score_ci95": _mean_interval(scores),
                "api": describe(caller)}
    console.info(f"evaluate: judge {settings.api.model}: win {outcomes['win']}, tie {outcomes['tie']}, loss "
                 f"{outcomes['loss']} of {judged} judged ({unjudged} without a verdict), against {baseline_kind}")
    return document


def _mean_interval(scores: list[float]) -> list[float] | None:
    if len(scores) < 2:
        return None
    mean = sum(scores) / len(scores)
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1))
    half = Z95 * sd / math.sqrt(len(scores))
    return [round(max(0.0, mean - half), 4), round(min(1.0, mean + half), 4)]
