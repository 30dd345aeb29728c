"""The host registry's code: VM records, their claim, reaping (door: :mod:`firec.host.registry`).

It lives in the ``vm`` room because a machine claims its id here before it
makes anything (:class:`~firec.host.registry.Registration`), and a record is
made of the ``vm`` room's values (its :class:`~firec.vm.config.Config`, its
launch, its layout): ``vm`` may not import ``host`` (docs/architecture.md).
Users import it from :mod:`firec.host.registry`:

* ``records``: what one record holds (:class:`~firec.host.registry.VmRecord`...);
* ``claim``: the records of a directory (:class:`~firec.host.registry.Registry`)
  and the record of a VM this process runs (:class:`~firec.host.registry.Registration`);
* ``reaping``: removing a VM and all it had (:func:`~firec.host.registry.reap`);
* ``unrecorded``: finding a VMM whose pid was never recorded.
"""
