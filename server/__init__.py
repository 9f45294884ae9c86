"""The gRPC service: datasets, durable jobs, exports and inference over the network.

``service/`` holds the operations as plain Python (no grpc import); ``transport/`` is the only grpc
code (servicers, conversions, the Python client). Jobs run in worker processes (``worker.py``,
scheduled by ``runner.py``) against the SQLite store (``store.py``).
"""
