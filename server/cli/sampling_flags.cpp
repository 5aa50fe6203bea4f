// Flag registration and the copy into the wire message; `generate` converts the wire message
// with to_sampling_params, so the defaults live in one place (engine/request.h).
#include "server/cli/sampling_flags.h"

namespace mlra {

void add_sampling_flags(CLI::App& c, SamplingFlags& f) {
  c.add_option("--max-tokens,-n", f.max_tokens, "tokens to generate (default 16)");
  c.add_option("--temperature,-t", f.temperature, "0 = greedy (default 1.0)");
  c.add_option("--top-k", f.top_k, "0 or -1 = off");
  c.add_option("--top-p", f.top_p, "nucleus mass in (0, 1]");
  c.add_option("--min-p", f.min_p, "in [0, 1]");
  c.add_option("--repetition-penalty", f.repetition_penalty, "> 0, 1 = off");
  c.add_option("--frequency-penalty", f.frequency_penalty, "in [-2, 2]");
  c.add_option("--presence-penalty", f.presence_penalty, "in [-2, 2]");
  c.add_option("--seed", f.seed, "sampling seed (reproducible output)");
  c.add_option("--stop", f.stop, "stop string (repeatable)");
  c.add_option("--stop-token-id", f.stop_token_ids, "stop token id (repeatable)");
  c.add_flag("--ignore-eos", f.ignore_eos, "keep generating after end-of-text");
  c.add_option("--logprobs", f.logprobs, "top-n logprobs per token (0 = off)");
}

v1::SamplingParams to_proto(const SamplingFlags& f) {
  v1::SamplingParams p;
  if (f.max_tokens) p.set_max_tokens(*f.max_tokens);
  if (f.temperature) p.set_temperature(*f.temperature);
  if (f.top_k) p.set_top_k(*f.top_k);
  if (f.top_p) p.set_top_p(*f.top_p);
  if (f.min_p) p.set_min_p(*f.min_p);
  if (f.repetition_penalty) p.set_repetition_penalty(*f.repetition_penalty);
  if (f.frequency_penalty) p.set_frequency_penalty(*f.frequency_penalty);
  if (f.presence_penalty) p.set_presence_penalty(*f.presence_penalty);
  if (f.seed) p.set_seed(*f.seed);
  for (const auto& s : f.stop) p.add_stop(s);
  for (int32_t t : f.stop_token_ids) p.add_stop_token_ids(t);
  p.set_ignore_eos(f.ignore_eos);
  p.set_logprobs(f.logprobs);
  return p;
}

}  // namespace mlra
