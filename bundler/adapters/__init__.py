"""Adapters: everything that touches the network or the disk.

Each transport (registry, OCI layout directory, layout archive) offers the same two faces,
:class:`bundler.adapters.base.Source` and :class:`bundler.adapters.base.Target`, so the copy
service never needs to know where bytes come from or go to.
"""
