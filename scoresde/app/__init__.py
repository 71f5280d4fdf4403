"""The application layer over the library: run configurations (`config`: YAML and ``--section.key=value``
overrides, built through the registries), runs on disk (`runs`: ``sd.load``), the demo and the ``scoresde``
command line (`cli`). The library never imports it."""
