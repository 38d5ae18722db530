#!/usr/bin/env python3
"""A grpcurl stand-in that needs no .proto files: it reads everything from server reflection.

    tools/grpcurl.py ADDR list                      # services
    tools/grpcurl.py ADDR list SERVICE              # methods of a service
    tools/grpcurl.py ADDR describe SYMBOL           # a service, method or message
    tools/grpcurl.py ADDR call SERVICE/METHOD [JSON]  # unary call, JSON in and out

Needs grpcio and grpcio-reflection (tools/test installs them into .venv).
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    address, verb, rest = argv[1], argv[2], argv[3:]
    channel = grpc.insecure_channel(address)
    database = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(database)
    if verb == "list" and not rest:
        for name in sorted(database.get_services()):
            print(name)
    elif verb == "list":
        for method in pool.FindServiceByName(rest[0]).methods:
            print(f"{rest[0]}.{method.name}")
    elif verb == "describe" and rest:
        symbol = rest[0]
        try:
            service = pool.FindServiceByName(symbol)
            print(f"{symbol} is a service:")
            for m in service.methods:
                stream = "stream " if m.server_streaming else ""
                print(f"  rpc {m.name}({m.input_type.full_name}) returns ({stream}{m.output_type.full_name})")
        except KeyError:
            message = pool.FindMessageTypeByName(symbol)
            print(f"{symbol} is a message:")
            for f in message.fields:
                print(f"  {f.name} = {f.number}")
    elif verb == "call" and rest:
        service_name, _, method_name = rest[0].rpartition("/")
        method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        request = json_format.Parse(rest[1] if len(rest) > 1 else "{}", request_class())
        path = f"/{service_name}/{method_name}"
        kwargs = dict(request_serializer=request_class.SerializeToString,
                      response_deserializer=response_class.FromString)
        try:
            if method.server_streaming:
                for answer in channel.unary_stream(path, **kwargs)(request, timeout=30):
                    print(json_format.MessageToJson(answer))
            else:
                print(json_format.MessageToJson(channel.unary_unary(path, **kwargs)(request, timeout=30)))
        except grpc.RpcError as err:
            print(json.dumps({"code": err.code().name, "message": err.details()}, indent=2), file=sys.stderr)
            return 1
    else:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
