"""The shared-memory backend: objects of this machine, in an arena of /dev/shm.

Layers, top down: ``_record`` (one object: references, values, waiting),
``_names`` (names for unrelated processes), ``_hub`` (callbacks),
``_parking`` (waiter slots), ``_storage`` (where values live), ``_arena``
(segments and who attaches), ``_segment`` (files in /dev/shm), and
``_native``, the C extension (``src/native/``).
"""
