// Conversion between mlra.v1 wire messages and engine types. Pure functions, no validation
// (Engine::validate does that, called on the RPC thread) and no tokenizer: text prompts are
// encoded by the service. Unset optional fields take the engine's SamplingParams defaults.
#pragma once

#include <string>

#include <grpcpp/support/status.h>

#include "engine/engine.h"
#include "engine/request.h"
#include "proto/mlra.pb.h"

namespace mlra {

SamplingParams to_sampling_params(const v1::SamplingParams& proto);
v1::FinishReason to_proto(FinishReason reason);
FinishReason from_proto(v1::FinishReason reason);

// Appends the chunk's tokens, text and logprobs; sets finish fields and usage when final.
void append_chunk(const GenerationChunk& chunk, v1::GenerateResponse* out);
void append_chunk(const GenerationChunk& chunk, v1::CompleteResponse* out);

// Fields the engine does not know about (they come from the server config).
struct ServingLabels {
  std::string mla_tp_mode = "replicate";
  std::string dtype = "fp32";
  std::string kv_cache_dtype = "auto";
};

void fill_model_info(const Engine& engine, const ServingLabels& labels, v1::ModelInfoResponse* out);
void fill_stats(const EngineStats& stats, bool healthy, v1::StatsResponse* out);

// The gRPC status of an engine-side rejection (validate/submit): same code, same message.
grpc::Status to_grpc_status(const RequestError& error);

}  // namespace mlra
