"""TF-Serving-compatible local model server, gRPC client and demo."""
