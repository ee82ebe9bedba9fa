import random

import pytest

from odin.prompt_text import decode_escapes, escape_for_command_line


def test_escapes_decode_to_their_characters():
    assert decode_escapes(r"x=3\nprint(x)\t#\\n") == "x=3\nprint(x)\t#\\n"
    assert decode_escapes("no escapes at all") == "no escapes at all"
    assert decode_escapes("") == ""


def test_escaping_round_trips_any_text():
    rng = random.Random(7)
    alphabet = "ab\\n\t\n'\"$ "
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        line = escape_for_command_line(text)
        assert "\n" not in line and "\t" not in line
        assert decode_escapes(line) == text


@pytest.mark.parametrize("text, where", [(r"a\qb", r"unknown escape \q at character 1"),
                                         ("1+2\\", r"a lone \ at the end at character 3")])
def test_unknown_escapes_say_where(text, where):
    with pytest.raises(ValueError, match="^" + where.replace("\\", "\\\\").replace("+", "\\+")):
        decode_escapes(text)
