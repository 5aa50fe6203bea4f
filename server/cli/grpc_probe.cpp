// Generic-stub calls driven on a private CompletionQueue. Wire encoding used:
//   HealthCheckRequest {string service = 1}; HealthCheckResponse {enum status = 1}
//   ServerReflectionRequest {string list_services = 7}
//   ServerReflectionResponse {ListServiceResponse list_services_response = 6}
//   ListServiceResponse {repeated ServiceResponse service = 1}; ServiceResponse {string name = 1}
#include "server/cli/grpc_probe.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/client_context.h>
#include <grpcpp/completion_queue.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>

namespace mlra {
namespace {

using google::protobuf::UnknownField;
using google::protobuf::UnknownFieldSet;

std::string encode_string_field(int field, const std::string& value) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.WriteTag(static_cast<uint32_t>(field << 3 | 2));
  coded.WriteVarint32(static_cast<uint32_t>(value.size()));
  coded.WriteString(value);
  coded.Trim();
  return out;
}

grpc::ByteBuffer to_buffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string to_string(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& s : slices)
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

// Waits for the operation tagged `tag`; false when it failed or the queue shut down.
bool wait_for(grpc::CompletionQueue& cq, intptr_t tag) {
  void* got = nullptr;
  bool ok = false;
  if (!cq.Next(&got, &ok)) return false;
  return ok && reinterpret_cast<intptr_t>(got) == tag;
}

void drain(grpc::CompletionQueue& cq) {
  cq.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace

const char* serving_status_name(ServingStatus status) {
  switch (status) {
    case ServingStatus::kServing:
      return "SERVING";
    case ServingStatus::kNotServing:
      return "NOT_SERVING";
    case ServingStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
    default:
      return "UNKNOWN";
  }
}

HealthResult check_health(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                          std::chrono::milliseconds timeout) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  grpc::CompletionQueue cq;
  grpc::ByteBuffer request = to_buffer(service.empty() ? "" : encode_string_field(1, service));
  auto call = stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  HealthResult result;
  call->Finish(&response, &result.status, reinterpret_cast<void*>(1));
  wait_for(cq, 1);
  drain(cq);
  if (!result.status.ok()) return result;
  UnknownFieldSet fields;
  if (!fields.ParseFromString(to_string(response))) {
    result.status = grpc::Status(grpc::StatusCode::INTERNAL, "malformed HealthCheckResponse");
    return result;
  }
  for (int i = 0; i < fields.field_count(); ++i) {
    const UnknownField& f = fields.field(i);
    if (f.number() == 1 && f.type() == UnknownField::TYPE_VARINT) {
      result.serving = static_cast<ServingStatus>(f.varint());
    }
  }
  return result;
}

grpc::Status list_services(const std::shared_ptr<grpc::Channel>& channel,
                           std::chrono::milliseconds timeout, std::vector<std::string>& names) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  grpc::CompletionQueue cq;
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  grpc::ByteBuffer response;
  grpc::Status status;
  bool ok = wait_for(cq, 1);
  if (ok) {
    call->Write(to_buffer(encode_string_field(7, "")), reinterpret_cast<void*>(2));
    ok = wait_for(cq, 2);
  }
  if (ok) {
    call->WritesDone(reinterpret_cast<void*>(3));
    ok = wait_for(cq, 3);
  }
  if (ok) {
    call->Read(&response, reinterpret_cast<void*>(4));
    ok = wait_for(cq, 4);
  }
  call->Finish(&status, reinterpret_cast<void*>(5));
  wait_for(cq, 5);
  drain(cq);
  if (!status.ok()) return status;
  if (!ok) return grpc::Status(grpc::StatusCode::INTERNAL, "reflection stream ended early");
  UnknownFieldSet top;
  if (!top.ParseFromString(to_string(response))) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "malformed ServerReflectionResponse");
  }
  for (int i = 0; i < top.field_count(); ++i) {
    if (top.field(i).number() != 6) continue;
    UnknownFieldSet list;
    list.ParseFromString(top.field(i).length_delimited());
    for (int j = 0; j < list.field_count(); ++j) {
      UnknownFieldSet entry;
      entry.ParseFromString(list.field(j).length_delimited());
      for (int k = 0; k < entry.field_count(); ++k) {
        if (entry.field(k).number() == 1) names.push_back(entry.field(k).length_delimited());
      }
    }
  }
  return grpc::Status::OK;
}

}  // namespace mlra
