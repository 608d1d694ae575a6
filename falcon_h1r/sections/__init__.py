"""The six sections, one module per notebook, plus what they share (:mod:`~falcon_h1r.sections.common`).

This floor is the only place that knows presets, caches and the results writer: notebooks, ``bench/`` and
the CLI call it, and it calls the library (``falcon_h1r.*``) below. Imports run one way: sections -> library
-> config.
"""
