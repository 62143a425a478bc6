"""The composition root: builds everything the server is made of from ``Settings``.

- ``compose.build_services(settings, backends)`` → the typed ``Services`` container the HTTP routes use;
- ``backends.Backends`` is the small interface it is built over: ``LocalBackends`` runs models in-process (CLI,
  tests, ``RAG_PLATFORM=local``), ``deployments.backends.ServeBackends`` reaches Ray Serve deployments;
- ``platform.Platform`` runs jobs and hosts the server: ``LocalPlatform`` here, ``RayPlatform`` in
  ``deployments/`` (found through the ``rag_ray.platforms`` entry point, so the library never imports it).
"""
