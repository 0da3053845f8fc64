"""The LLM labeller: an explanation from activating examples (highlighted) and contrasting ones.

The prompt shows the strongest and quantile-sampled activating windows with the strongest word marked
<<like this>> and its activation relative to the maximum, then windows that do not activate (hard
negatives from similar documents, and random ones), and asks for JSON:
{"label": short name, "description": one sentence}.
"""

from __future__ import annotations

from dataclasses import dataclass

from saeembed.interp.examples import FeatureExamples
from saeembed.interp.llm import LLMResult, MalformedAnswer

EXPLAIN_PROMPT = """You are interpreting one feature (a neuron) of a sparse autoencoder on a language model.

Texts where the feature fires, strongest first; the word where it fires most is marked <<like this>>,
with the activation as a share of the maximum:
{positives}

Similar texts where the feature does NOT fire:
{negatives}

What does the feature detect? Be specific: name the tokens, topic, style or pattern that separates the
first list from the second. Answer with JSON only:
{{"label": "a short name of 2 to 6 words", "description": "one sentence saying exactly when it fires"}}"""


@dataclass
class Explanation:
    label: str
    description: str


def explain_prompt(fe: FeatureExamples) -> list[dict]:
    top = max((e.value for e in fe.explain), default=1.0) or 1.0
    pos = "\n".join(f"{i + 1}. ({e.value / top:.2f}) {e.marked()}" for i, e in enumerate(fe.explain))
    neg = "\n".join(f"- {e.text}" for e in fe.explain_negatives) or "- (none)"
    return [{"role": "user", "content": EXPLAIN_PROMPT.format(positives=pos, negatives=neg)}]


def parse_explanation(res: LLMResult) -> Explanation:
    data = res.json()
    label = data.get("label")
    if not isinstance(label, str) or not label.strip():
        raise MalformedAnswer(f"no label in the answer: {res.text!r:.80}")
    desc = data.get("description")
    label = " ".join(label.split())[:120]
    return Explanation(label, " ".join(str(desc).split())[:500] if desc else label)
