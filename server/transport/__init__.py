"""The gRPC transport: servicers, message conversion and the Python client. The only code that imports grpc."""
