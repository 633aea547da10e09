"""The reliability proof: a fault-injection soak against private servers, and a checker of its history.

    python -m tests.chaos --duration 300          # the soak (private RabbitMQ + PostgreSQL, 3 workers, faults)
    python -m tests.chaos.checker --scope S ...   # the checker on a recorded history

Nothing here touches the machine's shared servers: the soak starts its own RabbitMQ node and PostgreSQL
cluster on free ports under a temporary directory, breaks those, and removes them at the end.
"""
