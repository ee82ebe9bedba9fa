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


def test_prompt_bytes_must_be_utf8():
    from odin.prompt_text import prompt_from_bytes

    assert prompt_from_bytes("12+34= é".encode()) == "12+34= é"
    with pytest.raises(ValueError, match=r"^line 3 is not UTF-8 text: byte 0xc3 at byte offset 2 "
                                         r"\(invalid continuation byte\)$"):
        prompt_from_bytes(b"ab\xc3(", "line 3")


def test_prompt_text_from_the_os_must_be_utf8():
    import os

    from odin.prompt_text import prompt_from_text

    assert prompt_from_text("x=1\nprint(x)") == "x=1\nprint(x)"
    argument = os.fsdecode(b"1+\xff2=")  # how a command-line argument arrives (surrogateescape)
    with pytest.raises(ValueError, match=r"^prompt is not UTF-8 text: byte 0xff at byte offset 2"):
        prompt_from_text(argument)
    with pytest.raises(ValueError, match=r"unpaired surrogate U\+D800 at character 1"):
        prompt_from_text("a\ud800")
