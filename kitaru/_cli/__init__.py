"""The ``kitaru`` command: inspect and steer runs from a terminal, host flows with ``worker``.

Modules: ``_app`` parses the command line and turns expected errors into one
line on stderr; ``_commands`` runs each command on a runtime opened for it;
``_render`` formats tables and timelines as plain text; ``_modules`` imports
the modules that define flows; ``_worker`` hosts flows until a signal;
``_serve`` turns ``kitaru serve``'s arguments into the FastAPI integration's
app and server. Nothing here is imported by ``import kitaru``, and the
integrations never import it.
"""

from ._app import main as main

__all__ = ("main",)
