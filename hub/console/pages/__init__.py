"""Console page modules: each has a module-level ``router`` (``hub.console.PAGES`` lists them)."""
