#!/usr/bin/python3
"""Streams one seeded generation from a running mlra-serve, sends SIGTERM to the server's process
after the first chunk, and checks that the stream is drained, not cut: chunks keep arriving
after the signal, the ids add up to max_tokens with finish LENGTH and matching usage, and
the text is not empty. scripts/container_check.sh runs it against the container's published port
with the PID of the container's init process (what `docker stop` signals).

  scripts/stream_drain_check.py --addr 127.0.0.1:PORT --signal-pid PID [--max-tokens 256]
Exit codes: 0 ok, 1 a check failed (the reason on stderr), 2 bad arguments.
"""
import argparse
import os
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client  # noqa: E402  (scripts/client.py: stubs generated from proto/mlra.proto)


def fail(message):
    print(f"stream_drain_check: {message}", file=sys.stderr)
    return 1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", required=True)
    p.add_argument("--signal-pid", type=int, required=True)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--prompt", default="Once upon a time")
    p.add_argument("--timeout-s", type=float, default=120.0)
    args = p.parse_args()
    if args.max_tokens < 8:
        p.error("--max-tokens must be at least 8 (the signal must land mid-stream)")

    import grpc
    pb, pb_grpc, stub_dir = client.load_stubs()
    try:
        stub = pb_grpc.MlraStub(grpc.insecure_channel(args.addr))
        request = pb.GenerateRequest(text=args.prompt)
        request.sampling.max_tokens = args.max_tokens
        request.sampling.temperature = 0.8
        request.sampling.top_p = 0.95
        request.sampling.seed = 7
        request.sampling.ignore_eos = True
        ids, text, chunks, after_signal, signalled_at, last = [], "", 0, 0, None, None
        for chunk in stub.Generate(request, timeout=args.timeout_s):
            chunks += 1
            ids.extend(chunk.token_ids)
            text += chunk.text
            last = chunk
            if signalled_at is None:
                os.kill(args.signal_pid, signal.SIGTERM)
                signalled_at = time.monotonic()
            else:
                after_signal += 1
        drained_s = time.monotonic() - signalled_at if signalled_at else 0.0
    except grpc.RpcError as e:
        return fail(f"Generate failed: {e.code().name}: {e.details()}")
    finally:
        shutil.rmtree(stub_dir, ignore_errors=True)

    if last is None:
        return fail("the stream ended without a chunk")
    reason = pb.FinishReason.Name(last.finish_reason)
    print(f"stream_drain_check: {chunks} chunks ({after_signal} after SIGTERM, drained in "
          f"{drained_s:.1f} s), {len(ids)} tokens, finish {reason}")
    if after_signal < 1:
        return fail("no chunk arrived after SIGTERM: the signal did not land mid-stream")
    if chunks < 2:
        return fail(f"{chunks} chunk(s): the answer was not streamed")
    if reason != "FINISH_REASON_LENGTH":
        return fail(f"finish {reason} ({last.error_message}): the in-flight stream was not drained")
    if len(ids) != args.max_tokens or last.usage.completion_tokens != args.max_tokens:
        return fail(f"{len(ids)} ids, usage {last.usage.completion_tokens}, "
                    f"expected {args.max_tokens}")
    if not text.strip():
        return fail("the streamed text is empty")
    return 0


if __name__ == "__main__":
    sys.exit(main())
