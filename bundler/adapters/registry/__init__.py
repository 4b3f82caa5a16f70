"""A client for the OCI distribution API, built on ``requests``.

``client`` speaks HTTP; ``options``, ``credentials`` and ``auth`` hold what it needs. Chosen over
oras-py, which cannot move content safely (docs/adr/0002).
"""
