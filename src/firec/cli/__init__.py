"""The ``firec`` command line: run and manage Firecracker microVMs by hand.

``firec run`` boots a microVM (in the foreground, or detached with ``-d``);
``ls``, ``inspect``, ``stop``, ``kill``, ``pause``, ``resume``, ``snapshot``,
``restore``, ``clone``, ``console``, ``logs``, ``metrics``, ``rm`` and ``gc``
manage the ones it started, from any process (:mod:`firec.host.registry`);
``doctor``, ``install``, ``image build``, ``kernel extract`` and ``version``
look after the host. Exit codes: :class:`firec.cli.output.ExitCode`.

From Python::

    from firec.cli import main

    status = main(["doctor", "--json"])
"""

from __future__ import annotations

from firec.cli.app import app, main

__all__ = ["app", "main"]
