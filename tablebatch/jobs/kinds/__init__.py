"""The kinds of job, one module each, behind ``Kind`` (``tablebatch.jobs.kinds.base``).

Importing this package registers the built-in kinds, in the order of ``BUILT_IN``
(the order error messages list them in). A new kind is a module with a
``@register``-ed ``Kind`` subclass, named here — or, for a project's own kind,
imported by whatever runs before its config is read.
"""

from importlib import import_module

from tablebatch.jobs.kinds.base import KINDS, Chunk, Kind, SecondStage, kind_of, register

BUILT_IN = ("classification", "summarization", "evaluation", "extraction", "generation")
for _name in BUILT_IN:
    import_module(f"{__name__}.{_name}")

__all__ = ["BUILT_IN", "KINDS", "Chunk", "Kind", "SecondStage", "kind_of", "register"]
