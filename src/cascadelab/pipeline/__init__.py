"""One module per DVC stage, each a `run(section, seed, paths, ...)` holding that stage's logic.

Stage scripts (`stages/<stage>.py`) only parse params, call `run` with `paths.PATHS` and write what comes
back; `runtime` is their shared wiring (params errors, the MLflow run, metrics files) and `deps` derives
each stage's code dependencies for dvc.yaml.
"""
