"""An emulated Firecracker jailer (as jailer v1.0.0 behaves) for firec's Firecracker emulator.

Run it as ``python -m firec.testing.jailer`` or ``firec-jailer-emulator`` (or
through :func:`firec.testing.binaries.jailer_emulator_binary`) with the real
jailer's command line and firec's emulator as ``--exec-file``::

    python -m firec.testing.jailer --id vm-1 --exec-file "$(firec-emulator-path)" \\
        --uid 1234 --gid 1234 --chroot-base-dir /srv/jailer --cgroup cpu.shares=100 \\
        -- --api-sock /run/firecracker.socket

It takes the same flags and refuses the same values with the same messages
and exit statuses (argument errors: exit 1 and a message on stdout; every
other error: a Rust-style panic on stderr and SIGABRT). Everything the real
jailer does that needs no chroot is done for real, in the real order:

* the jail ``<chroot base>/<exec file name>/<id>/root`` is made and the exec
  file copied in; ``/``, ``/dev``, ``/dev/net`` and ``/run`` of the jail are
  owned by ``--uid``/``--gid``, mode 0700 (no device nodes are made: the
  emulator needs none, but a jail that already holds the exec file is refused
  as the real jailer refuses it, when ``mknod`` of ``/dev/net/tun`` fails);
* cgroups (v1: ``<controller mount>/<parent>/<id>``, values inherited from
  the parent as the jailer does, the process in ``tasks``; v2: under the
  cgroup2 mount, controllers enabled in the parents' ``cgroup.subtree_control``),
  ``--netns`` (setns), resource limits (default ``no-file=2048``), a private
  mount namespace, ``--daemonize`` (setsid, stdio to ``/dev/null``) and
  ``--new-pid-ns`` (the exec file runs as pid 1 of a new PID namespace, its
  host pid in ``<root>/<exec file name>.pid``, the jailer exits 0);
* inherited file descriptors above 2 are closed and the environment cleared
  (but for ``PYTHON*``, ``LD_LIBRARY_PATH`` and ``FIREC_EMULATOR_VERSION``,
  which the emulator needs to start).

Then, instead of chrooting and switching user, it execs the copy of the exec
file in the jail, from the jail as working directory, with the arguments the
real jailer gives (``--id``, ``--start-time-us``, ``--start-time-cpu-us``,
``--parent-cpu-time-us``, then those after ``--``) preceded by the emulator's
``--emulate-chroot <root> --emulate-user <uid>:<gid>`` (see
:mod:`firec.testing.emulator._jail`): the emulator resolves every path inside
the jail and drops to the jail's user itself, once its interpreter has
loaded (which the jail's user may be unable to read). So the exec file must
be firec's emulator; real Firecracker refuses those flags.

Where each part is:

* :mod:`._main`: :func:`main`, the jailer's process: its command line read,
  ``--help`` and ``--version`` answered, then the jail made and the exec file run;
* :mod:`._args`: the jailer's command line (its flags, :func:`parse_args`,
  :func:`formatted_help`, :data:`VERSION`);
* :mod:`._jail`: the checks of a command line and what the jailer then does, in
  its order (:class:`._jail.Jail`: jail directory, ``--netns``, resource
  limits, mount namespace, ``--daemonize``, ``--new-pid-ns``, the exec);
* :mod:`._cgroups`: ``--cgroup`` values checked, and the cgroups made (v1 and v2);
* :mod:`._panic`: how the jailer fails (a Rust panic, and the texts of OS errors in it).
"""

from __future__ import annotations

from ._args import DEFAULT_CHROOT_BASE as DEFAULT_CHROOT_BASE
from ._args import VERSION, formatted_help, parse_args
from ._jail import DEFAULT_NO_FILE as DEFAULT_NO_FILE
from ._main import main

__all__ = ["VERSION", "formatted_help", "main", "parse_args"]
