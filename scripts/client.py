#!/usr/bin/python3
"""A small Python client of mlra-serve (mlra.v1.Mlra over gRPC).

Needs only Debian packages: python3-grpcio, python3-protobuf, and protoc with the gRPC Python
plugin (protobuf-compiler, protobuf-compiler-grpc) to generate the stubs from proto/mlra.proto
into a temporary folder at start-up, so the stubs always match the proto in this checkout.

  scripts/client.py --prompt "Hello" --max-tokens 32 --stream
  scripts/client.py --health | --info | --stats
  scripts/client.py --api-key KEY --tls-ca server.pem --addr host:50051 --prompt "Hi"
A server that requires an API key gets it as metadata "authorization: Bearer KEY" (--api-key,
default $MLRA_API_KEY); --tls-ca names the PEM certificate(s) to trust for a TLS server.
Exit codes: 0 ok (health: SERVING), 1 RPC failure or not SERVING, 2 bad arguments.
"""
import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join(REPO, "proto")


def load_stubs():
    """Generates mlra_pb2 / mlra_pb2_grpc with protoc into a temp dir and imports them."""
    plugin = shutil.which("grpc_python_plugin")
    if shutil.which("protoc") is None or plugin is None:
        sys.exit("client.py: protoc and grpc_python_plugin are needed "
                 "(apt-get install protobuf-compiler protobuf-compiler-grpc)")
    out = tempfile.mkdtemp(prefix="mlra_stubs_")
    subprocess.run(["protoc", "-I", PROTO_DIR, "--python_out=" + out, "--grpc_python_out=" + out,
                    "--plugin=protoc-gen-grpc_python=" + plugin,
                    os.path.join(PROTO_DIR, "mlra.proto")], check=True)
    sys.path.insert(0, out)
    return importlib.import_module("mlra_pb2"), importlib.import_module("mlra_pb2_grpc"), out


def health_check(grpc, channel, timeout, metadata):
    """grpc.health.v1.Health/Check for the whole server, with hand-encoded messages: the request
    is empty (service ""), the response is field 1 (varint status). Returns the status name."""
    check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                request_serializer=lambda b: b, response_deserializer=lambda b: b)
    raw = check(b"", timeout=timeout, metadata=metadata)
    status = raw[1] if len(raw) >= 2 and raw[0] == 0x08 else 0
    return {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}.get(status,
                                                                                 "UNKNOWN")


def build_request(pb, args):
    request = pb.GenerateRequest(request_id=args.request_id or "")
    if args.token_ids:
        request.token_ids.ids.extend(int(t) for t in args.token_ids.split(","))
    else:
        request.text = args.prompt
    s = request.sampling
    for name in ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                 "frequency_penalty", "presence_penalty", "seed"):
        value = getattr(args, name)
        if value is not None:
            setattr(s, name, value)
    s.stop.extend(args.stop or [])
    s.stop_token_ids.extend(args.stop_token_id or [])
    s.ignore_eos = args.ignore_eos
    s.logprobs = args.logprobs
    return request


def summary(pb, request_id, reason, usage, ids, show_ids):
    print(f"\n[request_id={request_id} finish_reason={pb.FinishReason.Name(reason)} "
          f"prompt_tokens={usage.prompt_tokens} completion_tokens={usage.completion_tokens} "
          f"cached_prompt_tokens={usage.cached_prompt_tokens}]", file=sys.stderr)
    if show_ids:
        print(f"[token_ids={','.join(map(str, ids))}]", file=sys.stderr)


def generate(pb, stub, args, metadata):
    request = build_request(pb, args)
    if not args.stream:
        r = stub.Complete(request, timeout=args.timeout_s, metadata=metadata)
        sys.stdout.write(r.text)
        sys.stdout.flush()
        summary(pb, r.request_id, r.finish_reason, r.usage, list(r.token_ids), args.show_ids)
        return 0
    ids, last = [], None
    for chunk in stub.Generate(request, timeout=args.timeout_s, metadata=metadata):
        ids.extend(chunk.token_ids)
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
        last = chunk
    summary(pb, last.request_id, last.finish_reason, last.usage, ids, args.show_ids)
    return 0


def parse_args():
    p = argparse.ArgumentParser(description="mlra-serve Python client")
    p.add_argument("--addr", "-a", default="localhost:50051")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="prompt text")
    what.add_argument("--token-ids", help="prompt as comma-separated token ids")
    what.add_argument("--health", action="store_true", help="health check; exit 0 if SERVING")
    what.add_argument("--info", action="store_true", help="print ModelInfo as JSON")
    what.add_argument("--stats", action="store_true", help="print engine Stats as JSON")
    p.add_argument("--request-id")
    p.add_argument("--max-tokens", "-n", type=int)
    p.add_argument("--temperature", "-t", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--min-p", type=float)
    p.add_argument("--repetition-penalty", type=float)
    p.add_argument("--frequency-penalty", type=float)
    p.add_argument("--presence-penalty", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append", help="stop string (repeatable)")
    p.add_argument("--stop-token-id", type=int, action="append")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--logprobs", type=int, default=0)
    p.add_argument("--stream", "-s", action="store_true")
    p.add_argument("--show-ids", action="store_true", help="print generated token ids (stderr)")
    p.add_argument("--timeout-s", type=float, default=600.0)
    p.add_argument("--api-key", default=os.environ.get("MLRA_API_KEY", ""),
                   help="sent as 'authorization: Bearer KEY' (default: $MLRA_API_KEY)")
    p.add_argument("--tls-ca", help="PEM certificate(s) to trust: connect over TLS")
    return p.parse_args()


def main():
    args = parse_args()
    import grpc  # after argument parsing, so --help works without grpcio
    from google.protobuf import json_format
    pb, pb_grpc, stub_dir = load_stubs()
    try:
        if args.tls_ca:
            with open(args.tls_ca, "rb") as f:
                channel = grpc.secure_channel(args.addr, grpc.ssl_channel_credentials(f.read()))
        else:
            channel = grpc.insecure_channel(args.addr)
        metadata = [("authorization", "Bearer " + args.api_key)] if args.api_key else None
        if args.health:
            status = health_check(grpc, channel, args.timeout_s, metadata)
            print(status)
            return 0 if status == "SERVING" else 1
        stub = pb_grpc.MlraStub(channel)
        if args.info or args.stats:
            message = (stub.ModelInfo(pb.ModelInfoRequest(), timeout=args.timeout_s,
                                      metadata=metadata) if args.info
                       else stub.Stats(pb.StatsRequest(), timeout=args.timeout_s,
                                       metadata=metadata))
            print(json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True,
                                                       including_default_value_fields=True),
                             indent=1))
            return 0
        return generate(pb, stub, args, metadata)
    except grpc.RpcError as e:
        print(f"client.py: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(stub_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
