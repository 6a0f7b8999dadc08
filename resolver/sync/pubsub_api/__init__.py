"""Salesforce's Pub/Sub API: its published pubsub_api.proto (github.com/forcedotcom/pub-sub-api,
CC0) and the Python modules grpcio-tools 1.75 generates from it (protobuf >= 6.31.1 at run time):

    python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. pubsub_api.proto

(then the generated _grpc module imports its _pb2 module from this package)."""
