"""Use cases. Each takes parsed inputs, drives adapters, and returns a result object."""
