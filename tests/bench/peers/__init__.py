"""The peers the benchmark runs side by side with the framework: APScheduler 3.11 and Celery 5 beat."""
