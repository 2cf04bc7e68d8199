from filters.normalize import clean_text, dedup_key


def test_dedup_key_drops_zero_width_and_bom():
    assert dedup_key("\ufeffUse a virtual environ\u200bment.") == "Use a virtual environment."


def test_dedup_key_drops_other_format_characters():
    assert dedup_key("co\u00adoperate\u2060 now") == "cooperate now"


def test_dedup_key_applies_nfkc():
    assert dedup_key("a\u00a0b\uff0e \uff11") == "a b. 1"


def test_dedup_key_reflows_prose_whitespace():
    assert dedup_key("  one  two\t three\r\nfour\rfive \n") == "one two three four five"


def test_dedup_key_keeps_fenced_code_indentation():
    loop_once = "```python\nfor x in xs:\n    a(x)\nb()\n```"
    loop_each = "```python\nfor x in xs:\n    a(x)\n    b()\n```"
    assert dedup_key(loop_once) != dedup_key(loop_each)
    assert dedup_key(loop_once) == "```python\nfor x in xs:\n    a(x)\nb()\n```"


def test_dedup_key_strips_trailing_spaces_in_code():
    assert dedup_key("```\nx = 1   \r\n```") == dedup_key("```\nx = 1\n```")


def test_dedup_key_keeps_unfenced_indented_code():
    assert dedup_key("if ok:\n    run()\ndone()") != dedup_key("if ok:\n    run()\n    done()")


def test_dedup_key_reflows_prose_around_code():
    text = "Try  this:\r\n```\n  x = 1\n```\nIt   works."
    assert dedup_key(text) == "Try this:\n```\n  x = 1\n```\nIt works."


def test_dedup_key_unclosed_fence_keeps_structure():
    assert dedup_key("```\n  a\n b") == "```\n  a\n b"


def test_dedup_key_handles_empty_and_none():
    assert dedup_key("") == ""
    assert dedup_key(None) == ""
    assert dedup_key(" \u200b\n") == ""


def test_dedup_key_keeps_chinese_text():
    assert dedup_key("学习编程\u3000最好") == "学习编程 最好"


def test_clean_text_removes_only_invisible_marks():
    assert clean_text("\ufeffa\u200bb\u200c\u200d\u2060c  d\r\n") == "abc  d\r\n"
