"""The gRPC service (datasets, durable jobs, exports, inference). Not built yet: see issue 3.

Only this package's transport modules will import ``grpc`` and the generated stubs; they call
the same plain functions as the CLI (``edgetune.trainers.image.train_image``,
``edgetune.export.bundle.export_bundle``, ``edgetune.export.runtime.BundlePredictor``).
"""
