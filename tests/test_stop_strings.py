"""Stop strings: the text before the first one is returned, the stop string and what follows never."""

from backend.stop_strings import StopMatcher


def run(stops, tokens):
    matcher = StopMatcher(stops)
    released = []
    for i, text in enumerate(tokens):
        released.append([p.text for p in matcher.push(text, payload=i)])
        if matcher.stopped:
            break
    if not matcher.stopped:
        released.append([p.text for p in matcher.flush()])
    return released, matcher.stopped


def text(released) -> str:
    return "".join(piece for step in released for piece in step)


def test_text_that_may_start_a_stop_string_waits_for_the_next_tokens():
    released, stopped = run(["END"], list("abENxEND!"))
    # "E" and "EN" wait; "ENx" is no stop string, so it goes out; the second "END" stops
    assert released == [["a"], ["b"], [], [], ["E", "N", "x"], [], [], []]
    assert stopped


def test_a_stop_string_inside_one_token_cuts_the_token():
    released, stopped = run(["\n\n"], ["Hello", " wor", "ld\n\nmore", "never"])
    assert text(released) == "Hello world" and stopped


def test_the_earliest_of_several_stop_strings_wins_and_no_stop_flushes_everything():
    released, _ = run(["yz", "b"], ["xyzab"])
    assert released == [["x"]]
    released, stopped = run(["zz"], list("abz"))
    assert text(released) == "abz" and not stopped
    assert run([], list("ab"))[0] == [["a"], ["b"], []]
