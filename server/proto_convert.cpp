// Field-by-field copies. GenerateResponse and CompleteResponse share their field names, so one
// template fills both.
#include "server/proto_convert.h"

#include "server/utf8.h"

namespace mlra {
namespace {

template <typename Response>
void append_chunk_impl(const GenerationChunk& chunk, Response* out) {
  for (int32_t t : chunk.token_ids) out->add_token_ids(t);
  out->mutable_text()->append(valid_utf8(chunk.text));  // a proto string must be UTF-8
  for (const TokenLogprobs& lp : chunk.logprobs) {
    v1::TokenLogprob* p = out->add_logprobs();
    p->set_token_id(lp.token);
    p->set_logprob(lp.logprob);
    for (const TopLogprob& top : lp.top) {
      v1::TopLogprob* t = p->add_top();
      t->set_token_id(top.token);
      t->set_logprob(top.logprob);
    }
  }
  if (chunk.finish_reason == FinishReason::kNone) return;
  out->set_finish_reason(to_proto(chunk.finish_reason));
  out->set_stop_string(chunk.stop_string);
  v1::Usage* usage = out->mutable_usage();
  usage->set_prompt_tokens(chunk.usage.prompt_tokens);
  usage->set_completion_tokens(chunk.usage.completion_tokens);
  usage->set_cached_prompt_tokens(chunk.usage.cached_prompt_tokens);
}

}  // namespace

SamplingParams to_sampling_params(const v1::SamplingParams& p) {
  SamplingParams s;
  if (p.has_max_tokens()) s.max_tokens = p.max_tokens();
  if (p.has_temperature()) s.temperature = p.temperature();
  if (p.has_top_k()) s.top_k = p.top_k();
  if (p.has_top_p()) s.top_p = p.top_p();
  if (p.has_min_p()) s.min_p = p.min_p();
  if (p.has_repetition_penalty()) s.repetition_penalty = p.repetition_penalty();
  if (p.has_frequency_penalty()) s.frequency_penalty = p.frequency_penalty();
  if (p.has_presence_penalty()) s.presence_penalty = p.presence_penalty();
  if (p.has_seed()) s.seed = p.seed();
  s.stop.assign(p.stop().begin(), p.stop().end());
  s.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  s.ignore_eos = p.ignore_eos();
  s.logprobs = p.logprobs();
  return s;
}

v1::FinishReason to_proto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return v1::FINISH_REASON_UNSPECIFIED;
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kAborted:
      return v1::FINISH_REASON_ABORTED;
    case FinishReason::kError:
      return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

FinishReason from_proto(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH:
      return FinishReason::kLength;
    case v1::FINISH_REASON_STOP:
      return FinishReason::kStop;
    case v1::FINISH_REASON_EOS:
      return FinishReason::kEos;
    case v1::FINISH_REASON_CANCELLED:
      return FinishReason::kCancelled;
    case v1::FINISH_REASON_ABORTED:
      return FinishReason::kAborted;
    case v1::FINISH_REASON_ERROR:
      return FinishReason::kError;
    default:
      return FinishReason::kNone;
  }
}

void append_chunk(const GenerationChunk& chunk, v1::GenerateResponse* out) {
  append_chunk_impl(chunk, out);
  if (chunk.finish_reason != FinishReason::kNone) out->set_error_message(chunk.error_message);
}

void append_chunk(const GenerationChunk& chunk, v1::CompleteResponse* out) {
  append_chunk_impl(chunk, out);
}

void fill_model_info(const Engine& engine, const ServingLabels& labels,
                     v1::ModelInfoResponse* out) {
  const ModelConfig& c = engine.model_config();
  const RunnerInfo info = engine.runner_info();
  const EngineOptions& opt = engine.options();
  out->set_variant(c.variant.name());
  out->set_n_layer(c.n_layer);
  out->set_n_head(c.n_head);
  out->set_n_embd(c.n_embd);
  out->set_vocab_size(c.vocab_size);
  out->set_text_vocab_size(c.text_vocab_size);
  out->set_eot_token(static_cast<int32_t>(c.eot_token));
  out->set_head_dim(c.head_dim);
  out->set_kv_lora_rank(c.kv_lora_rank);
  out->set_qk_rope_head_dim(c.qk_rope_head_dim);
  out->set_num_latents(c.variant.is_latent() ? c.num_latents() : 0);
  out->set_tp(info.tp);
  out->set_max_context(opt.max_context);
  out->set_page_size(opt.page_size);
  out->set_num_pages(opt.num_pages);
  out->set_cache_capacity_tokens(opt.num_pages * opt.page_size);
  out->set_cache_bytes_per_token(info.cache_bytes_per_token);
  out->set_weight_bytes_per_rank(info.weight_bytes_per_rank);
  out->set_backend(info.backend);
  out->set_mla_tp_mode(labels.mla_tp_mode);
  out->set_dtype(labels.dtype);
  out->set_max_running_seqs(opt.max_running_seqs);
  out->set_max_stop_strings(opt.max_stop_strings);
  out->set_max_logprobs(opt.max_logprobs);
  out->set_kv_cache_dtype(labels.kv_cache_dtype);
}

void fill_stats(const EngineStats& s, bool healthy, v1::StatsResponse* out) {
  out->set_running(s.running);
  out->set_waiting(s.waiting);
  out->set_pages_used(s.pages_used);
  out->set_pages_cached(s.pages_cached);
  out->set_pages_total(s.pages_total);
  out->set_page_size(s.page_size);
  out->set_prefix_hit_tokens(s.prefix_hit_tokens);
  out->set_prefix_query_tokens(s.prefix_query_tokens);
  out->set_prompt_tokens(s.prompt_tokens);
  out->set_generated_tokens(s.generated_tokens);
  out->set_preemptions(s.preemptions);
  out->set_steps(s.steps);
  out->set_requests_finished(s.requests_finished);
  out->set_max_context(s.max_context);
  out->set_healthy(healthy);
}

grpc::Status to_grpc_status(const RequestError& error) {
  grpc::StatusCode code = grpc::StatusCode::INVALID_ARGUMENT;
  switch (error.code) {
    case ErrorCode::kInvalidArgument:
      code = grpc::StatusCode::INVALID_ARGUMENT;
      break;
    case ErrorCode::kOutOfRange:
      code = grpc::StatusCode::OUT_OF_RANGE;
      break;
    case ErrorCode::kResourceExhausted:
      code = grpc::StatusCode::RESOURCE_EXHAUSTED;
      break;
    case ErrorCode::kUnavailable:
      code = grpc::StatusCode::UNAVAILABLE;
      break;
  }
  return grpc::Status(code, error.what());
}

}  // namespace mlra
