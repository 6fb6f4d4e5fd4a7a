from pictale.prompt.extra_networks import ExtraNetwork, extract


def test_tags_removed_and_text_tidied():
    text, found = extract("<lora:toy:0.9> toy_face, a girl, <hypernet:x:1>, playing tennis")
    assert text == "toy_face, a girl, playing tennis"
    assert found == [
        ExtraNetwork("lora", "toy", ("0.9",), "<lora:toy:0.9>"),
        ExtraNetwork("hypernet", "x", ("1",), "<hypernet:x:1>"),
    ]


def test_no_tags_unchanged():
    assert extract("a (cat:1.2), BREAK dog") == ("a (cat:1.2), BREAK dog", [])


def test_named_args_and_spaces():
    text, found = extract("a cat <lora: style_b : 0.5 : te=1>")
    assert text == "a cat"
    assert found[0].name == "style_b" and found[0].args == ("0.5", "te=1")


def test_unclosed_tag_does_not_swallow_the_next():
    text, found = extract("a <lora:broken <lora:toy:0.5> b")
    assert text == "a <lora:broken b"
    assert [n.name for n in found] == ["toy"]
