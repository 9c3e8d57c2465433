"""The commands the lab adds to pymap's parser: NAMESPACE (RFC 2342), ENABLE (RFC 5161), UNSELECT (RFC 3691)."""

from __future__ import annotations

from pymap.parsing import EndLine, Params, Space
from pymap.parsing.command import CommandAuth, CommandNoArgs, CommandSelect
from pymap.parsing.commands import Commands
from pymap.parsing.exceptions import NotParseable
from pymap.parsing.primitives import Atom

__all__ = ["LabCommands", "NamespaceCommand", "EnableCommand", "UnselectCommand"]


class NamespaceCommand(CommandNoArgs, CommandAuth):
    """``NAMESPACE``: where the user's folders live (RFC 2342 5)."""

    command = b"NAMESPACE"


class UnselectCommand(CommandNoArgs, CommandSelect):
    """``UNSELECT``: leave the selected mailbox without expunging it (RFC 3691 2)."""

    command = b"UNSELECT"


class EnableCommand(CommandAuth):
    """``ENABLE capability...``: turn on extensions that change the server's answers (RFC 5161 3.1)."""

    command = b"ENABLE"

    def __init__(self, tag: bytes, capabilities: list[bytes]) -> None:
        super().__init__(tag)
        self.capabilities = capabilities

    @classmethod
    def parse(cls, buf: memoryview, params: Params) -> tuple[EnableCommand, memoryview]:
        capabilities: list[bytes] = []
        while True:
            try:
                _, buf = Space.parse(buf, params)
                atom, buf = Atom.parse(buf, params)
            except NotParseable:
                break
            capabilities.append(atom.value.upper())
        if not capabilities:  # enable-data = "ENABLE" 1*(SP capability)
            raise NotParseable(buf)
        _, buf = EndLine.parse(buf, params)
        return cls(params.tag, capabilities), buf


class LabCommands(Commands):
    """pymap's commands and the lab's."""

    def _load_commands(self) -> None:
        super()._load_commands()
        for command in (NamespaceCommand, EnableCommand, UnselectCommand):
            self.register(command)
