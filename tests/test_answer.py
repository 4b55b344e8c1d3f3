import pytest

from retrieval.answering.gates import RelevanceGate
from retrieval.answering.verification import best_overlap, trim_to_sentence
from retrieval.answering.prompt import ABSTENTION, build_messages, cited_numbers, says_abstain
from retrieval.answering.engines.local import Generator
from retrieval.answering.records import Passage
from tests.fakes import HITS, ScriptedGenerator, pipeline
from tests.tiny_models import build_tiny_generator


def test_cited_numbers_keeps_valid_in_order_and_drops_the_rest():
    text, numbers = cited_numbers("Paid in five days [2][1]. See also [7] and [2].", 3)
    assert numbers == [2, 1]
    assert text == "Paid in five days [2][1]. See also and [2]."


def test_abstention_phrases():
    assert says_abstain("I don't know based on the documentation.")
    assert says_abstain("Sorry, I do not know.")
    assert not says_abstain("Refunds take five days [1].")


def test_trim_to_sentence():
    assert trim_to_sentence("One. Two is cut") == "One."
    assert trim_to_sentence("No full stop at all") == "No full stop at all"
    assert trim_to_sentence("Complete one. Complete two.") == "Complete one. Complete two."


def test_prompt_numbers_passages_from_one():
    messages = build_messages("Q?", [Passage("A", "alpha"), Passage("B", "beta")])
    assert messages[0]["role"] == "system" and ABSTENTION in messages[0]["content"]
    assert "[1] A\nalpha\n\n[2] B\nbeta" in messages[1]["content"] and messages[1]["content"].endswith("Question: Q?")


def test_below_the_relevance_gate_abstains_without_generating():
    generator = ScriptedGenerator("invented")
    answer = pipeline(generator, min_relevance=0.9).run("q", lambda _: HITS)
    assert answer.abstained and answer.answer == ABSTENTION and answer.citations == []
    assert generator.prompts == []


def test_citations_resolve_to_prompt_passages_only():
    generator = ScriptedGenerator("No cookies are used [2]. Also see [4].")
    answer = pipeline(generator, prompt_passages=3).run("cookies?", lambda _: HITS)
    assert not answer.abstained and answer.answer == "No cookies are used [2]. Also see."
    assert [(c.n, c.source) for c in answer.citations] == [(2, "cookies")]
    assert "[2] Cookies > Privacy\nPlausible does not use cookies." in generator.prompts[0][1]["content"]
    assert "[4]" not in generator.prompts[0][1]["content"]  # only three passages were shown
    assert {"retrieve", "generate", "total"} <= set(answer.timings_ms)


def test_uncited_answer_cites_the_passage_it_overlaps_most():
    answer = pipeline(ScriptedGenerator("Invite colleagues in the team settings.")).run("q", lambda _: HITS)
    assert answer.answer.endswith("[3]") and [c.source for c in answer.citations] == ["teams"]


def test_generator_saying_it_does_not_know_is_an_abstention():
    answer = pipeline(ScriptedGenerator("I don't know.")).run("q", lambda _: HITS)
    assert answer.abstained and answer.citations == []


def test_best_overlap_none_when_nothing_shared():
    assert best_overlap("zebra", [Passage("a", "b c")]) is None


def test_the_relevance_gate_validates_its_arguments():
    with pytest.raises(ValueError, match="min_relevance"):
        RelevanceGate(2.0)
    with pytest.raises(ValueError, match="prompt_passages"):
        RelevanceGate(0.3, 0)


def test_tiny_real_generator_runs_end_to_end(tmp_path):
    generator = Generator(build_tiny_generator(tmp_path / "gen"), device="cpu", max_new_tokens=5)
    text, prompt_tokens, new_tokens = generator.generate(build_messages("the answer", [Passage("a", "w1 w2")]))
    assert isinstance(text, str) and prompt_tokens > 5 and 1 <= new_tokens <= 5


def test_unsupported_answer_is_replaced_by_a_quote_from_the_top_passage():
    generator = ScriptedGenerator("Refunds arrive by cheque from the Berlin office within ninety days [1].")
    answer = pipeline(generator, support_threshold=0.6).run("When are refunds paid?", lambda _: HITS)
    assert answer.grounding == "extractive" and not answer.abstained
    assert answer.answer == "Refunds are paid within five days. [1]"
    assert [c.source for c in answer.citations] == ["refunds"]
    assert answer.unsupported == ["Refunds arrive by cheque from the Berlin office within ninety days."]


def test_unsupported_answer_abstains_when_configured_so():
    generator = ScriptedGenerator("Refunds arrive by cheque from the Berlin office within ninety days [1].")
    answer = pipeline(generator, on_unsupported="abstain").run("When are refunds paid?", lambda _: HITS)
    assert answer.abstained and answer.grounding == "abstained" and answer.citations == []


def test_supported_answer_is_kept_as_generated():
    answer = pipeline(ScriptedGenerator("Refunds are paid within five days [1].")).run("refunds?", lambda _: HITS)
    assert answer.grounding == "generated" and answer.answer == "Refunds are paid within five days [1]."
    assert answer.unsupported == []


def test_stream_yields_tokens_then_the_final_answer():
    events = list(pipeline(ScriptedGenerator("Refunds are paid within five days [1].")).stream("q", lambda _: HITS))
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "final" and set(kinds[:-1]) == {"token"} and len(kinds) > 2
    assert "".join(v for k, v in events if k == "token").strip() == events[-1][1].answer


def test_support_check_and_extraction():
    from retrieval.answering.grounding import check_support, extract_answer

    verdicts = check_support("Yes. Cookies are never stored on visitors' devices [1].",
                             ["Plausible stores no cookies on the devices of visitors."], threshold=0.6)
    assert [v.supported for v in verdicts] == [True, True] and verdicts[0].support == 1.0
    assert not check_support("Payments are refunded by cheque in Berlin.", ["Cookies are not used."], 0.6)[0].supported
    text = "Intro line here. Refunds are paid within five days. Teams are invited from settings."
    assert extract_answer("how fast are refunds paid", text, max_sentences=1) == "Refunds are paid within five days."


def test_tiny_real_generator_streams(tmp_path):
    generator = Generator(build_tiny_generator(tmp_path / "gen"), device="cpu", max_new_tokens=4)
    stats = {}
    pieces = list(generator.stream(build_messages("q", [Passage("a", "w1")]), stats))
    assert stats["new_tokens"] >= 1 and all(isinstance(p, str) for p in pieces)


def test_followup_detection():
    from retrieval.answering.followup import is_followup, standalone_question

    assert is_followup("and how do I cancel it?") and is_followup("What about invoices?")
    assert not is_followup("How do I add a new website to my account?")
    history = [{"role": "user", "content": "How do I upgrade my subscription?"}]
    assert standalone_question("Can I cancel it?", history) == "Can I cancel it? (upgrade subscription)"
    assert standalone_question("Can I cancel it?", []) == "Can I cancel it?"


def test_the_pipeline_builds_the_whole_answer_once():
    import dataclasses

    hits_asked = []
    answer = pipeline(ScriptedGenerator("Refunds are paid within five days [1].")).run(
        "refunds? I want to talk to a person", lambda q: hits_asked.append(q) or HITS, answer_id="a-1")
    assert hits_asked == ["refunds? I want to talk to a person"]   # no history: the question is its own standalone
    assert answer.answer_id == "a-1" and answer.handoff.recommended and answer.handoff.reason == "asks for a person"
    assert {"retrieve", "generate", "prompt_tokens", "new_tokens", "total"} <= set(answer.timings_ms)
    assert answer.timings_ms["prompt_tokens"] == 100
    with pytest.raises(dataclasses.FrozenInstanceError):
        answer.answer = "changed afterwards"


def test_every_engine_implements_the_one_protocol(tmp_path):
    from retrieval.answering.engines.base import GeneratorEngine
    from retrieval.answering.engines.remote import RemoteGenerator

    local = Generator(build_tiny_generator(tmp_path / "gen"), device="cpu", max_new_tokens=4)
    remote = RemoteGenerator("http://127.0.0.1:9", "m", None, 1.0, 8)
    try:
        assert isinstance(local, GeneratorEngine) and isinstance(remote, GeneratorEngine)
    finally:
        remote.close()
