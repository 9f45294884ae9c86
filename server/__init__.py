"""The gRPC service: datasets, durable jobs, exports and inference over the network.

``service.py`` holds the operations as plain Python (no grpc import); ``grpc_app.py``, ``convert.py``,
``client.py`` and ``cli.py`` are the transport. Jobs run in worker processes (``worker.py``,
scheduled by ``runner.py``) against the SQLite store (``store.py``).
"""
