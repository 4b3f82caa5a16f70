"""A Typer command group that imports a command's module only when that command is looked up.

Every start of the program pays for what it imports. With the commands' modules (and the
services, HTTP stack, YAML and crypto libraries under them) loaded only for the command that
runs, ``bundler version`` and ``bundler --help`` import none of them: ``--help`` lists each
command with the one-line summary kept in the group's listing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from gettext import gettext as _
from typing import TYPE_CHECKING, Any, ClassVar

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:
    from typer._click import Command, Context, HelpFormatter


@dataclass(frozen=True)
class LazyCommand:
    """A command whose module is imported the first time the command is looked up.

    ``module`` is the import path of a module with ``register(app)``, which adds its commands to
    a Typer application; ``summary`` is the first paragraph of the command's help, which is what
    the group's ``--help`` shows of it (``tests/unit/test_cli_startup.py`` keeps the two equal).
    """

    name: str
    module: str
    summary: str


class _Listed(TyperCommand):
    """What stands in a :class:`LazyGroup` for a command not loaded yet: its name and summary."""


class LazyGroup(TyperGroup):
    """A group listing lazy commands by name and summary, loading one only when it is needed.

    Subclasses set ``listing``: the commands in the order ``--help`` shows them, each a
    :class:`LazyCommand` or the name of a command registered on the Typer application itself
    (defined with the group, so loaded from the start). Looking a command up (to run it, or to
    show its own help) imports its module; listing the group's commands imports nothing.
    """

    listing: ClassVar[tuple[LazyCommand | str, ...]] = ()

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        eager = dict(self.commands)
        commands: dict[str, Command] = {}
        self._modules: dict[str, str] = {}
        for entry in self.listing:
            if isinstance(entry, str):
                commands[entry] = eager.pop(entry)
            else:
                commands[entry.name] = _Listed(name=entry.name, help=entry.summary)
                self._modules[entry.name] = entry.module
        commands.update(eager)  # registered on the application but not listed: last, in order
        self.commands = commands

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        """The command named ``cmd_name`` (its module imported now if it was not yet), or None."""
        command = self.commands.get(cmd_name)
        if isinstance(command, _Listed):
            self._load(self._modules[cmd_name])
            command = self.commands[cmd_name]
        return command

    def _load(self, module_name: str) -> None:
        """Import ``module_name`` and put the commands it registers in place of their stand-ins."""
        module = importlib.import_module(module_name)
        app = typer.Typer(rich_markup_mode=self.rich_markup_mode, add_completion=False)
        module.register(app)
        for name, command in typer.main.get_group(app).commands.items():
            if isinstance(self.commands.get(name), _Listed):
                self.commands[name] = command
        missing = [n for n, m in self._modules.items() if m == module_name]
        missing = [n for n in missing if isinstance(self.commands[n], _Listed)]
        if missing:
            raise RuntimeError(f"{module_name} registers no command {', '.join(missing)}")

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        """The "Commands" section of ``--help``, as TyperGroup writes it, without loading any."""
        commands = [(n, c) for n, c in self.commands.items() if not c.hidden]
        if not commands:
            return
        # As click does: allow for 3 times the default spacing.
        limit = formatter.width - 6 - max(len(name) for name, _command in commands)
        rows = [(name, command.get_short_help_str(limit)) for name, command in commands]
        with formatter.section(_("Commands")):
            formatter.write_dl(rows)
