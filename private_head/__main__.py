"""``python -m private_head``: see private_head.cli."""

from private_head.cli import command_line

command_line()
