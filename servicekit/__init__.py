"""The kit every Touchpoint service is built from.

Only what every service repeats lives here: settings, database engine and sessions,
the CloudEvents envelope, the transactional outbox and its relay, the inbox of
processed events, the NATS JetStream connection, health and metrics, structured
logging and RFC 9457 problem responses.
"""
