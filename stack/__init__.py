"""The one-machine stack: the embedded Valkey (:mod:`~stack.embedded`), and the one launcher of
Valkey, the emulator and worker processes (:mod:`~stack.local`) that the demo, the CLI, the
integration tests and the benchmarks share; :mod:`~stack.client` sends jobs as a producer."""
