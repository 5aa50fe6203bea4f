// The mlra.v1.Mlra service on gRPC's callback API with raw (ByteBuffer) methods: no thread is
// held per call, and every request is parsed here, so an undecodable one (malformed protobuf, a
// string that is not UTF-8) gets INVALID_ARGUMENT with a message and is logged and counted like
// any other refusal, instead of gRPC's bare INTERNAL. Generate/Complete go through the
// RequestGateway (grpc_generation_call.h); the small methods answer inline, except Tokenize,
// which runs on the admission pool.
#pragma once

#include <cstdint>

#include "proto/mlra.grpc.pb.h"
#include "server/request_gateway.h"

namespace mlra {

using RawMlraService =
    v1::Mlra::WithRawCallbackMethod_Generate<v1::Mlra::WithRawCallbackMethod_Complete<
        v1::Mlra::WithRawCallbackMethod_Tokenize<v1::Mlra::WithRawCallbackMethod_Detokenize<
            v1::Mlra::WithRawCallbackMethod_ModelInfo<v1::Mlra::WithRawCallbackMethod_Cancel<
                v1::Mlra::WithRawCallbackMethod_Stats<v1::Mlra::Service>>>>>>>;

class MlraService final : public RawMlraService {
 public:
  explicit MlraService(RequestGateway& gateway) : gateway_(gateway) {}

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* ctx,
                                                       const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Complete(grpc::CallbackServerContext* ctx,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* ctx,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ModelInfo(grpc::CallbackServerContext* ctx,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* ctx,
                                   const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;

  RequestGateway& gateway() { return gateway_; }
  int64_t in_flight() const { return gateway_.in_flight(); }

 private:
  RequestGateway& gateway_;
};

}  // namespace mlra
