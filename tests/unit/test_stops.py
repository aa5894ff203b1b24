"""StopMatcher (botframework.engine.stops) without a model.

    deltas --feed--> emitted text (stop-prefixes held back) --flush--> released tail

Properties: the emitted text is a prefix of the generated text, never contains a stop,
and does not depend on how the text was cut into deltas.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from botframework.engine.stops import StopMatcher


def run(stops: Sequence[str], deltas: Sequence[str]) -> tuple[str, bool, str | None]:
    matcher = StopMatcher(stops)
    out = "".join(matcher.feed(d) for d in deltas) + matcher.flush()
    return out, matcher.stopped, matcher.matched


def chars(text: str) -> list[str]:
    return list(text)


# --- examples --------------------------------------------------------------------------------

def test_no_stops_passes_text_through() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("hello <|end|>") == "hello <|end|>"
    assert matcher.flush() == ""
    assert not matcher.stopped


def test_empty_stop_strings_are_ignored() -> None:
    matcher = StopMatcher(["", "END"])
    assert matcher.stops == ("END",)
    assert matcher.feed("abc") == "abc"


def test_stop_inside_one_delta() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("one two STOP three") == "one two "
    assert matcher.stopped and matcher.matched == "STOP"
    assert matcher.feed("more") == ""
    assert matcher.flush() == ""


def test_stop_split_across_deltas_is_held_then_swallowed() -> None:
    matcher = StopMatcher(["<|end|>"])
    assert matcher.feed("Hello <|e") == "Hello "  # "<|e" might become the stop
    assert not matcher.stopped
    assert matcher.feed("nd") == ""
    assert matcher.feed("|> trailing") == ""
    assert matcher.stopped and matcher.matched == "<|end|>"
    assert matcher.flush() == ""


def test_stop_split_one_character_per_delta() -> None:
    assert run(["</answer>"], chars("the answer is 42</answer> ignored")) == (
        "the answer is 42", True, "</answer>")


def test_held_text_released_when_it_diverges() -> None:
    matcher = StopMatcher(["<|end|>"])
    assert matcher.feed("a <|") == "a "
    assert matcher.feed("x") == "<|x"
    assert not matcher.stopped


def test_held_text_released_at_flush() -> None:
    matcher = StopMatcher(["<|end|>", "###"])
    assert matcher.feed("partial <|en") == "partial "
    assert matcher.flush() == "<|en"
    assert not matcher.stopped
    assert matcher.flush() == ""  # released once


def test_partial_repeat_of_the_stop_prefix() -> None:
    # "aab" after "aa": the hold must keep only the longest suffix that can still match
    matcher = StopMatcher(["aab"])
    assert matcher.feed("a") == ""
    assert matcher.feed("a") == ""
    assert matcher.feed("a") == "a"
    assert matcher.feed("b") == ""
    assert matcher.stopped


def test_overlapping_stops_earliest_one_wins() -> None:
    assert run(["abc", "bcd"], ["xabcd"]) == ("x", True, "abc")
    assert run(["bcd", "abc"], chars("xabcd")) == ("x", True, "abc")


def test_stop_that_is_a_prefix_of_another() -> None:
    assert run(["\n", "\n\n"], ["line\n\nnext"]) == ("line", True, "\n")
    assert run(["\n\n", "\n"], chars("line\n\nnext"))[0] == "line"


def test_hold_covers_the_longest_of_several_stop_prefixes() -> None:
    matcher = StopMatcher(["User:", "Us"])
    assert matcher.feed("Hi U") == "Hi "
    assert matcher.feed("s") == ""
    assert matcher.stopped and matcher.matched == "Us"


def test_multibyte_text_and_stops() -> None:
    assert run(["。終"], chars("日本語です。終わり")) == ("日本語です", True, "。終")
    assert run(["🛑"], ["go go 🚀", "🛑", " no"]) == ("go go 🚀", True, "🛑")


def test_nothing_after_stopped() -> None:
    matcher = StopMatcher(["x"])
    assert matcher.feed("ax") == "a"
    assert matcher.feed("bbb") == ""
    assert matcher.flush() == ""


def test_result_does_not_depend_on_delta_boundaries_with_overlapping_stops() -> None:
    stops = ["abcd", "bc"]
    # char by char, "bc" completes first (at "abc") and generation would stop there
    assert run(stops, chars("xabcd")) == ("xa", True, "bc")
    # the same text arriving as two tokens must give the same answer
    assert run(stops, ["xa", "bcd"]) == ("xa", True, "bc")


# --- properties --------------------------------------------------------------------------------

alphabet = st.sampled_from("abc<|>")
texts = st.text(alphabet=alphabet, max_size=24)
stop_lists = st.lists(st.text(alphabet=alphabet, min_size=1, max_size=5), min_size=1, max_size=3)


def cut(text: str, points: Sequence[int]) -> list[str]:
    bounds = sorted({p % (len(text) + 1) for p in points} | {0, len(text)})
    return [text[a:b] for a, b in pairwise(bounds)] or [""]


@settings(max_examples=400, deadline=None, database=None)
@given(stops=stop_lists, text=texts, points=st.lists(st.integers(min_value=0, max_value=30), max_size=8))
def test_output_is_a_stop_free_prefix(stops: list[str], text: str, points: list[int]) -> None:
    out, stopped, matched = run(stops, cut(text, points))
    assert text.startswith(out)
    assert not any(s in out for s in stops)
    first = [text.find(s) for s in stops if s in text]
    assert stopped == bool(first)
    if stopped:
        assert matched in stops
        assert text[len(out):].startswith(matched)  # the stop follows the emitted text directly
    else:
        assert out == text  # nothing lost at flush


@settings(max_examples=400, deadline=None, database=None)
@given(stop=st.text(alphabet=alphabet, min_size=1, max_size=5), text=texts,
       points=st.lists(st.integers(min_value=0, max_value=30), max_size=8))
def test_single_stop_is_independent_of_delta_boundaries(stop: str, text: str, points: list[int]) -> None:
    whole = run([stop], [text])
    assert run([stop], cut(text, points)) == whole
    assert run([stop], chars(text)) == whole
    index = text.find(stop)
    assert whole[0] == (text if index == -1 else text[:index])
