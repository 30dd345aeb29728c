"""The ``firec`` command line: run and manage Firecracker microVMs by hand.

``firec run`` boots a microVM (in the foreground, or detached with ``-d``);
``ls``, ``inspect``, ``stop``, ``kill``, ``pause``, ``resume``, ``snapshot``,
``restore``, ``clone``, ``console``, ``attach``, ``logs``, ``metrics``, ``rm``
and ``gc`` manage the ones it started, from any process
(:mod:`firec.host.registry`); ``doctor``, ``install``, ``image build``,
``kernel fetch``, ``kernel extract`` and ``version`` look after the host.
Exit codes: :class:`firec.cli.output.ExitCode`.

Where each part is:

* ``app.py``: the ``firec`` command, its global options, and turning errors
  into a message and an exit code (:func:`main`);
* ``output.py``: everything printed: tables (:func:`~firec.cli.output.table`),
  JSON, errors, and the exit codes;
* ``run.py``: the ``run`` command; ``runconfig.py``: its options made into a
  :class:`~firec.vm.config.Config` (``--memory``, ``--drive``, ``--net``...);
  ``start.py``: a VM started and recorded, attended in the foreground;
  ``readiness.py``: a host that cannot run microVMs, explained as
  ``firec doctor`` would (exit 3);
* ``vms.py``: the recorded VMs: found by id, their live state, stopped, removed;
* ``manage.py``: ``ls`` (its table), ``inspect``, ``stop``, ``kill``,
  ``pause``, ``resume``, ``rm`` and ``gc``;
* ``snapshots.py``: ``snapshot``, ``restore`` and ``clone``;
* ``follow.py``: ``console``, ``logs`` and ``metrics`` (its live table);
  ``attach.py``: ``attach`` (the console with input) and a detached VM's console;
* ``hostcmds.py``: ``doctor``, ``install``, ``version``; ``imagecmds.py``:
  ``image build``; ``kernelcmds.py``: ``kernel fetch``, ``kernel extract``.

From Python::

    from firec.cli import main

    status = main(["doctor", "--json"])
"""

from __future__ import annotations

from firec.cli.app import app, main

__all__ = ["app", "main"]
