"""When a customer should reach a person: every answer carries ``handoff: {recommended, reason}``.

Reasons, the first that holds: the customer asks for a person; the customer shows frustration; kbqa abstained; the
answer's confidence is low (answerability below ``min_answerability``: 1 - the gap detector's p(gap)); the same
conversation already got an abstention or an unhelpful rating. The two customer signals come from a lexicon, read
against the tune half of a labelled set and measured on the other half (benchs/quality/handoff_quality.py): a support team
can read and extend it, and it costs nothing per message.
"""
from __future__ import annotations

import re

from retrieval.answering.prompt import says_abstain
from retrieval.answering.records import Handoff

_PEOPLE = (r"(human|humans|person|people|agent|agents|someone|somebody|anyone|representative|rep|staff|operator|"
           r"manager|supervisor|engineer|member of staff|support team|support people|support staff|live support|"
           r"tech support|customer (service|support|care)|billing department|sales)")
ASKS_FOR_PERSON = re.compile("|".join([
    rf"\b(speak|talk|chat|connect|transfer me|put|pass|forward|send|escalate)\b[^.?!]{{0,40}}\b{_PEOPLE}\b",
    r"\b(want|need|get me) (a|an|to talk to a|to speak to a) (human|person|agent|representative)\b",
    r"\b(real|live|actual)\s+(person|human|agent|people|support)\b",
    r"\bhuman (being|agent|please)\b|^\s*(a\s+)?(human|agent|representative|operator)( please)?\W*$",
    r"\b(call|phone|ring) me\b|\bcall ?back\b|\bsupport (hotline|phone)\b|\bphone number for (support|customer)",
    r"\b(contact|reach|email|call)\b[^.?!]{0,25}\b(customer (service|support|care)|support team|tech support|"
    r"human|real person|someone|anyone|your (team|support))\b",
    r"\b(someone|somebody|a person|a member of staff|your team)\b[^.?!]{0,25}\b(call|contact|look at|help) me\b",
    r"\bcan a person\b|\b(someone|somebody) (from|on) your\b|\bhave somebody\b",
    r"(\bnot|n't) (want to talk to|talk to) a bot\b|\bare you a (bot|robot)\b|\bthis bot\b",
    r"\b(escalate|escalation)\b(?!\s+(of\s+)?privileges?)",
    r"\b(file|make|lodge) a complaint\b|\bopen a ticket\b",
]), re.I)
FRUSTRATED = re.compile("|".join([
    r"\b(useless|ridiculous|terrible|awful|horrible|pathetic|unacceptable|worst|stupid|garbage|rubbish|"
    r"nonsense|joke)\b",
    r"\bfrustrat\w*|\bannoy\w*|\bfurious\b|\bangry\b|\bfed up\b|\bsick of\b|\bwaste of (my )?time\b|\bugh\b",
    r"\b(wtf|ffs|omg)\b|[!?]{2,}",
    r"\b(still|again)\b[^.?!]{0,25}(\bnot\b|n't\b|\bnever\b)|(\bnot|n't) (work|working|fixed)\b[^.?!]{0,20}\b(still|again)\b",
    r"\bkeep (giving|saying|repeating|sending)\b",
    r"\b(did ?n[o']t|does ?n[o']t|not|nothing you said) (help|helped|helpful|answer)\w*\b|\bnot helping\b",
    r"\b(already|third time|three times|same (thing|answer))\b[^.?!]{0,30}\b(told|said|asked|tried|asking|giving)\b",
    r"\b(told|said|asked|tried)\b[^.?!]{0,10}\balready\b",
    r"\b(not|n't) what I asked\b|\byou('re| are) not (understanding|listening|helping)\b|\bdid you (even )?read\b",
    r"\bthat'?s (wrong|not it)\b|\bno,? no\b|\bmakes no sense\b|\bare you even\b|\bstop repeating\b|\bseriously\b",
]), re.I)
_SHOUTED = re.compile(r"\b[A-Z]{3,}\b")


def customer_signal(message: str) -> str | None:
    """``"asks for a person"``, ``"frustration"`` or None, from the customer's own words."""
    if ASKS_FOR_PERSON.search(message):
        return "asks for a person"
    words = re.findall(r"[A-Za-z]{3,}", message)
    shouted = len(_SHOUTED.findall(message))
    if FRUSTRATED.search(message) or (shouted >= 3 and shouted >= 0.6 * len(words)):
        return "frustration"
    return None


class HandoffPolicy:
    def __init__(self, min_answerability: float = 0.5):
        if not 0.0 <= min_answerability <= 1.0:
            raise ValueError(f"min_answerability is a probability in [0, 1], got {min_answerability}")
        self.min_answerability = min_answerability

    def decide(self, question: str, history: list[dict], abstained: bool, answerability: float | None,
               rated_unhelpful: bool = False) -> Handoff:
        """``abstained`` and ``answerability``: the answer's; ``rated_unhelpful``: the conversation has an unhelpful
        rating."""
        signal = customer_signal(question)
        if signal is not None:
            return Handoff(True, signal)
        if abstained:
            return Handoff(True, "abstained")
        if answerability is not None and answerability < self.min_answerability:
            return Handoff(True, "low confidence")
        earlier_abstention = any(turn.get("role") == "assistant" and says_abstain(turn.get("content", ""))
                                 for turn in history)
        if rated_unhelpful or earlier_abstention:
            return Handoff(True, "repeated failure")
        return Handoff(False)
