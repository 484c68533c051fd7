"""`conjure safety list|ban|pattern|remove`: a workspace's safety rules from the operator's shell.

The same rules and checks as `/conjure safety` (bot.safety); changes are audited as "cli".
"""

from __future__ import annotations

import argparse

from bot.config import ConfigError, load_settings


def add_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    safety = commands.add_parser("safety", help="a workspace's banned words and patterns")
    actions = safety.add_subparsers(title="actions", required=True)
    listed = actions.add_parser("list", help="the workspace's rules")
    _where(listed)
    listed.set_defaults(run=_list)
    ban = actions.add_parser("ban", help="ban a whole word or phrase (case-insensitive)")
    _where(ban)
    ban.add_argument("word", nargs="+")
    ban.set_defaults(run=_add, kind="word")
    pattern = actions.add_parser("pattern", help="ban a regular expression (case-insensitive)")
    _where(pattern)
    pattern.add_argument("regex")
    pattern.set_defaults(run=_add, kind="pattern")
    remove = actions.add_parser("remove", help="remove a rule by its id")
    _where(remove)
    remove.add_argument("id", type=_rule_id)
    remove.set_defaults(run=_remove)


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--platform", required=True, choices=["slack", "discord", "console"])
    parser.add_argument(
        "--workspace", required=True, type=_workspace, help="Slack team ID or Discord guild ID"
    )


def _rule_id(text: str) -> int:
    """A rule's id as argparse reads it: a usage error, not a database's, for one that cannot
    be (`²`, or too large for the column)."""
    from bot.safety import parse_rule_id

    rule_id = parse_rule_id(text)
    if rule_id is None:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a rule id")
    return rule_id


def _workspace(text: str) -> str:
    from bot.commands.names import MAX_ID

    if not text.strip():  # "$TEAM" unset: a rule for no workspace, said to be added
        raise argparse.ArgumentTypeError("empty; give a Slack team ID or Discord guild ID")
    if len(text) > MAX_ID:
        raise argparse.ArgumentTypeError(f"an id is at most {MAX_ID} characters")
    return text


async def _open():  # type: ignore[no-untyped-def]
    from bot.safety import SafetyRules
    from storage.engine import create_engine
    from storage.migrate import migrate

    settings = load_settings()
    engine = create_engine(settings.conjure_database_url)
    await migrate(engine)
    return SafetyRules(engine), engine


async def _list(args: argparse.Namespace) -> int:
    rules, engine = await _open()
    try:
        found = await rules.list(args.platform, args.workspace)
    finally:
        await engine.dispose()
    for rule in found:
        print(f"{rule.id}\t{rule.kind}\t{rule.value}\t{rule.created_by}\t{rule.created_at:%F %T}")
    if not found:
        print(f"{args.platform}:{args.workspace} has no safety rules")
    return 0


async def _add(args: argparse.Namespace) -> int:
    from bot.safety import RuleError

    value = " ".join(args.word) if args.kind == "word" else args.regex
    rules, engine = await _open()
    try:
        rule = await rules.add(args.platform, args.workspace, args.kind, value, actor="cli")
    except RuleError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        await engine.dispose()
    print(f"added rule {rule.id} ({rule.kind}): {rule.value}")
    return 0


async def _remove(args: argparse.Namespace) -> int:
    rules, engine = await _open()
    try:
        removed = await rules.remove(args.platform, args.workspace, args.id, actor="cli")
    finally:
        await engine.dispose()
    if not removed:
        raise ConfigError(f"{args.platform}:{args.workspace} has no rule {args.id}")
    print(f"removed rule {args.id}")
    return 0
