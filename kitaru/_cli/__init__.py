"""The ``kitaru`` command: inspect and steer runs from a terminal, host flows with ``worker``.

Modules: ``_app`` parses the command line and turns expected errors into one
line on stderr; ``_commands`` runs each command on a runtime opened for it;
``_render`` formats tables and timelines as plain text; ``_worker`` imports
flow modules and serves them until a signal. Nothing here is imported by
``import kitaru``.
"""

from ._app import main as main

__all__ = ("main",)
