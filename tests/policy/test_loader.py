from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.policy import PolicyError, Problem, check_policy, load_policy
from tests.policy.helpers import write_policy


def line_of(path: Path, text: str) -> int:
    """1-based number of the first line containing ``text``."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


GOOD_RULE = """
[[rule]]
name = "colleagues"
when = { recipient_in = ["internal"] }
action = "pass"
"""


def test_a_good_policy_has_no_problem(tmp_path: Path) -> None:
    assert check_policy(write_policy(tmp_path, GOOD_RULE)) == []


def test_a_misspelt_key_is_reported_with_file_line_rule_and_field(tmp_path: Path) -> None:
    path = write_policy(
        tmp_path,
        GOOD_RULE + '\n[[rule]]\nname = "typo"\nwhen = { recipent_in = ["internal"] }\naction = "pass"\n',
    )
    problem = only(check_policy(path))
    assert problem.file == path
    assert problem.line == line_of(path, "recipent_in")
    assert problem.rule == "typo"
    assert problem.field == "when.recipent_in"
    assert "recipient_in" in problem.message  # the suggestion


def test_a_misspelt_setting_in_a_sub_table_points_at_its_line(tmp_path: Path) -> None:
    rules = '[[rule]]\nname = "big"\nwhen = { size_over = 10 }\naction = "protect"\n[rule.protect]\nexpiry_day = 3\n'
    path = write_policy(tmp_path, rules)
    problem = only(check_policy(path))
    assert (problem.line, problem.rule, problem.field) == (line_of(path, "expiry_day"), "big", "protect.expiry_day")


def test_a_missing_list_file_is_reported_at_its_declaration(tmp_path: Path) -> None:
    header = '[lists]\ninternal = "lists/internal.txt"\npartners = "lists/partners.txt"\n'
    path = write_policy(tmp_path, GOOD_RULE, header=header)
    problem = only(check_policy(path))
    assert problem.line == line_of(path, "partners =")
    assert problem.field == "lists.partners"
    assert "partners.txt" in problem.message and "does not exist" in problem.message


def test_a_bad_line_in_a_list_file_is_reported_in_that_file(tmp_path: Path) -> None:
    path = write_policy(tmp_path, GOOD_RULE, lists={
        "webmail": "gmail.com\n", "secure": "a.fr\n", "internal": "# ours\ncabinet fr\n",
    })  # fmt: skip
    problem = only(check_policy(path))
    assert problem.file == tmp_path / "lists" / "internal.txt"
    assert problem.line == 2
    assert "cabinet fr" in problem.message


def test_a_bad_pattern_is_reported_with_its_rule_and_field(tmp_path: Path) -> None:
    rules = '[[rule]]\nname = "dossiers"\nwhen = { pattern = ["dossier (n°"] }\naction = "protect"\n'
    path = write_policy(tmp_path, rules)
    problem = only(check_policy(path))
    assert (problem.line, problem.rule, problem.field) == (line_of(path, "dossier (n°"), "dossiers", "when.pattern")
    assert "regular expression" in problem.message


def test_two_rules_with_one_name_are_reported_at_the_second(tmp_path: Path) -> None:
    path = write_policy(tmp_path, GOOD_RULE + GOOD_RULE.replace('"internal"', '"secure"'))
    problem = only(check_policy(path))
    second = [n for n, line in enumerate(path.read_text().splitlines(), 1) if 'name = "colleagues"' in line][1]
    assert (problem.line, problem.rule, problem.field) == (second, "colleagues", "name")
    assert "two rules" in problem.message


def test_a_rule_after_the_default_is_reported(tmp_path: Path) -> None:
    late = '\n[[rule]]\nname = "too-late"\nwhen = { nir = true }\naction = "block"\nblock = { message_fr = "Non.", message_en = "No." }\n'
    path = write_policy(tmp_path, GOOD_RULE, default='\n[[rule]]\nname = "fallback"\ndefault = true\naction = "protect"\n' + late)
    problem = only(check_policy(path))
    assert problem.rule == "too-late"
    assert problem.line == line_of(path, 'name = "too-late"')
    assert "after the default rule 'fallback'" in problem.message


def test_a_missing_default_rule_is_reported(tmp_path: Path) -> None:
    path = write_policy(tmp_path, GOOD_RULE, default="")
    problem = only(check_policy(path))
    assert problem.field == "default"
    assert "no default rule" in problem.message


def test_an_unknown_list_name_is_reported_with_the_declared_ones(tmp_path: Path) -> None:
    path = write_policy(tmp_path, GOOD_RULE.replace('"internal"', '"partners"'))
    problem = only(check_policy(path))
    assert (problem.rule, problem.field) == ("colleagues", "when.recipient_in")
    assert problem.line == line_of(path, "partners")
    assert "'partners'" in problem.message and "internal" in problem.message


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        ('action = "block"', "block", "message_fr"),
        ('action = "pass"\nprotect = { expiry_days = 3 }', "protect", "action is 'pass'"),
        ('action = "protect"\nprotect = { expiry_days = 0 }', "protect.expiry_days", "greater than"),
        ('action = "protect"\nprotect = { attachments = "drop" }', "protect.attachments", "'link'"),
        ('action = "protect"\nprotect = { access_code = "sms" }', "protect.access_code", "generated"),
        ('action = "block"\nblock = { message_fr = "Non." }', "block.message_en", "missing"),
        ('action = "delete"', "action", "'pass'"),
    ],
)
def test_invalid_action_settings_are_reported(tmp_path: Path, rule: str, field: str, words: str) -> None:
    path = write_policy(tmp_path, f'[[rule]]\nname = "r"\nwhen = {{ nir = true }}\n{rule}\n')
    problem = only(check_policy(path))
    assert (problem.rule, problem.field) == ("r", field)
    assert words in problem.message


def test_a_subject_tag_without_a_sender_condition_is_refused(tmp_path: Path) -> None:
    path = write_policy(tmp_path, '[[rule]]\nname = "clair"\nwhen = { subject_tag = "clair" }\naction = "pass"\n')
    problem = only(check_policy(path))
    assert (problem.rule, problem.field) == ("clair", "when.subject_tag")
    assert "sender_is" in problem.message


def test_a_subject_tag_with_a_sender_in_the_top_level_all_is_accepted(tmp_path: Path) -> None:
    rule = '[[rule]]\nname = "clair"\nwhen = { all = [{ sender_is = ["dr@cabinet-exemple.fr"] }, { subject_tag = "clair" }] }\naction = "pass"\n'
    assert check_policy(write_policy(tmp_path, rule)) == []


def test_a_subject_tag_with_the_sender_only_in_an_any_is_refused(tmp_path: Path) -> None:
    rule = '[[rule]]\nname = "clair"\nwhen = { any = [{ sender_is = ["dr@cabinet-exemple.fr"] }, { subject_tag = "clair" }] }\naction = "pass"\n'
    assert only(check_policy(write_policy(tmp_path, rule))).field == "when.any.1.subject_tag"


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    rules = (
        '[[rule]]\nname = "a"\nwhen = { recipent_in = ["internal"] }\naction = "pass"\n'
        '[[rule]]\nname = "a"\nwhen = { pattern = ["("] }\naction = "pass"\n'
        '[[rule]]\nname = "b"\nwhen = { sender_in = ["nope"] }\naction = "pass"\n'
    )
    problems = check_policy(write_policy(tmp_path, rules, default=""))
    fields = sorted(str(p.field) for p in problems)
    assert fields == ["default", "name", "when.pattern", "when.recipent_in", "when.sender_in"]


def test_an_empty_condition_table_is_an_error(tmp_path: Path) -> None:
    path = write_policy(tmp_path, '[[rule]]\nname = "r"\nwhen = {}\naction = "pass"\n')
    assert only(check_policy(path)).field == "when"


def test_a_toml_syntax_error_gives_its_line(tmp_path: Path) -> None:
    path = write_policy(tmp_path, '[[rule]]\nname = "r\nwhen = { nir = true }\n')
    problem = only(check_policy(path))
    assert problem.line == line_of(path, 'name = "r')
    assert "not valid TOML" in problem.message


def test_a_missing_policy_file_is_one_problem(tmp_path: Path) -> None:
    assert "no such policy file" in only(check_policy(tmp_path / "nope.toml")).message


def test_load_policy_raises_a_config_error_whose_text_lists_every_problem(tmp_path: Path) -> None:
    rules = '[[rule]]\nname = "a"\nwhen = { recipent_in = ["x"] }\naction = "pas"\n'
    path = write_policy(tmp_path, rules, default="")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert isinstance(caught.value, ConfigError)
    assert len(caught.value.problems) == 3
    report = str(caught.value)
    assert report.splitlines()[0].endswith("3 problem(s) in the policy")
    assert f"{path}:{line_of(path, 'recipent_in')}: rule 'a': when.recipent_in: unknown key" in report


def test_an_unknown_top_level_key_is_reported(tmp_path: Path) -> None:
    path = write_policy(tmp_path, GOOD_RULE, header='rules_version = 2\n[lists]\ninternal = "lists/internal.txt"\n')
    problem = only(check_policy(path))
    assert (problem.field, problem.line) == ("rules_version", 1)
