"""`workbench pipeline`: the stage table, the runner (skip, resume, stop on failure), labels and the report."""
