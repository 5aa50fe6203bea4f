// Test helper: one gRPC call with arbitrary request bytes (the generic stub), to send what a
// generated stub never would (malformed protobuf, strings that are not UTF-8).
#pragma once

#include <string>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

namespace mlra::testing {

struct RawCallResult {
  grpc::Status status;
  std::vector<std::string> responses;
};

inline RawCallResult raw_grpc_call(const std::shared_ptr<grpc::Channel>& channel,
                                   const std::string& method, const std::string& request_bytes) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  RawCallResult result;
  auto call = stub.PrepareCall(&ctx, method, &cq);
  void* tag = nullptr;
  bool ok = false;
  auto step = [&](void* want) {
    cq.Next(&tag, &ok);
    return tag == want && ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  if (step(reinterpret_cast<void*>(1))) {
    grpc::Slice slice(request_bytes);
    grpc::ByteBuffer buffer(&slice, 1);
    call->Write(buffer, reinterpret_cast<void*>(2));
    step(reinterpret_cast<void*>(2));
    call->WritesDone(reinterpret_cast<void*>(3));
    step(reinterpret_cast<void*>(3));
    for (;;) {
      grpc::ByteBuffer response;
      call->Read(&response, reinterpret_cast<void*>(4));
      if (!step(reinterpret_cast<void*>(4))) break;
      std::vector<grpc::Slice> slices;
      (void)response.Dump(&slices);
      std::string bytes;
      for (const grpc::Slice& s : slices)
        bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
      result.responses.push_back(std::move(bytes));
    }
  }
  call->Finish(&result.status, reinterpret_cast<void*>(5));
  step(reinterpret_cast<void*>(5));
  return result;
}

}  // namespace mlra::testing
