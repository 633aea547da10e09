"""Event triggers (DESIGN section 13), broker-native: a topic exchange per scope and a durable queue per subscribing
job bound to it with the job's patterns. No router process: RabbitMQ's bindings are the routing table.

    topics      patterns and topics (pure): `**` -> `#`, validation, matching, outcome topics
    filters     CEL filters (pure): compiled at load, evaluated on the payload bound as `event`
    decide      the event decisions (pure): verdict, paused policy, run id, subscriptions, triggered count
    envelope    what an event delivery carries (id, topic, payload) and the outcome event body (pure)
    bindings    binding and unbinding a job's event queue (I/O, the control layer)
    consumer    an event delivery becomes a job message in the job's work queue (I/O, the worker)
    subscriptions  the worker's reconciler: consume the event queues of the jobs it serves (I/O)
    outcomes    publishing a run's outcome event, best effort (I/O)
"""
