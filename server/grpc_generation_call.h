// Generate and Complete on gRPC's callback API: one reactor object per call and no thread per
// call. Admission (parse, tokenize, validate, submit) runs on the gateway's admission pool; the
// engine's output reaches the reactor through a ChunkChannel whose wake posts a pump onto the
// delivery pool; gRPC's own threads only run the reactions (OnWriteDone, OnCancel, OnDone).
// Invariants: the call finishes (Finish) only after the engine's final chunk for it, so a
// finished call implies freed pages; a client that cancels, passes its deadline, disconnects or
// lags more than max_pending_bytes gets its engine request cancelled at once; OnDone logs the
// call's one request line and releases its id.
#pragma once

#include <google/protobuf/message.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_callback.h>

#include "server/request_gateway.h"

namespace mlra {

grpc::ServerWriteReactor<grpc::ByteBuffer>* start_generate_call(RequestGateway& gateway,
                                                                grpc::CallbackServerContext* ctx,
                                                                const grpc::ByteBuffer* request);

grpc::ServerUnaryReactor* start_complete_call(RequestGateway& gateway,
                                              grpc::CallbackServerContext* ctx,
                                              const grpc::ByteBuffer* request,
                                              grpc::ByteBuffer* response);

// Parses a raw request; false when it is not a valid message (malformed protobuf, or a string
// field that is not UTF-8).
template <typename Message>
bool parse_message(const grpc::ByteBuffer& raw, Message& message) {
  grpc::ByteBuffer copy(raw);  // shares the slices; the reader consumes its own view
  return grpc::SerializationTraits<Message>::Deserialize(&copy, &message).ok();
}

void serialize_message(const google::protobuf::Message& message, grpc::ByteBuffer* out);

// The INVALID_ARGUMENT status an undecodable request gets.
grpc::Status undecodable(const char* message_name);

}  // namespace mlra
