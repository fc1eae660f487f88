"""strip_context_blocks: the router reads the user's own words, not what agent clients inject."""

from __future__ import annotations

from plano_extproc.conversation import strip_context_blocks

# The shape Claude Code 2.x sends: reminder blocks before and after what the user typed, in one turn.
CLAUDE_CODE_TURN = """<system-reminder>
As you answer the user's questions, you can use the following context:
# claudeMd
Codebase and user instructions are shown below. Be sure to adhere to these instructions.
Contents of /home/dev/project/CLAUDE.md (project instructions, checked into the codebase):
- run `make test` before committing
</system-reminder>
fix the failing test in tests/test_parser.py
<system-reminder>
The TodoWrite tool hasn't been used recently. If you're working on tasks that would benefit from tracking progress, consider using the TodoWrite tool.
</system-reminder>"""

# The shape Codex CLI sends: a user message that is only an environment block.
CODEX_ENVIRONMENT = """<environment_context>
  <cwd>/home/dev/project</cwd>
  <approval_policy>on-request</approval_policy>
  <sandbox_mode>workspace-write</sandbox_mode>
  <network_access>restricted</network_access>
  <shell>bash</shell>
</environment_context>"""


def test_claude_code_reminders_are_removed() -> None:
    assert strip_context_blocks(CLAUDE_CODE_TURN) == "fix the failing test in tests/test_parser.py"


def test_codex_environment_message_has_no_user_words() -> None:
    assert strip_context_blocks(CODEX_ENVIRONMENT) == ""
    assert strip_context_blocks("<user_instructions>\nfollow AGENTS.md\n</user_instructions>\nadd a --verbose flag") == (
        "add a --verbose flag"
    )


def test_ordinary_text_is_untouched() -> None:
    html = "Why does <div class='a'>x</div> render twice when a < b?"
    assert strip_context_blocks(html) == html
    assert strip_context_blocks("  plain question  ") == "plain question"


def test_an_unclosed_tag_is_the_users_own_text() -> None:
    # agents close their blocks; a lone tag is something the user typed
    assert strip_context_blocks("what does <system-reminder> mean?") == "what does <system-reminder> mean?"


def test_tags_are_matched_case_insensitively_with_attributes() -> None:
    assert strip_context_blocks('<System-Reminder kind="todo">x</System-Reminder>summarise this') == "summarise this"
