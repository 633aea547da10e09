"""The pipeline's step scripts, each runnable as `python -m services.daily_pipeline.scripts.<step>`.

They talk to stdout/stderr and the exit code only: 0 done, 1 failed (one `error:` line on stderr), 2 usage.
"""
