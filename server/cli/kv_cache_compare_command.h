// `mlra-serve kv-cache-compare`: the accuracy of the FP8 cache against the unquantized one on
// held-out data, for one model and runner configuration: perplexity with kv_cache_dtype auto and
// fp8_e4m3, and greedy agreement (each cache generates greedily from the same prompts; how many
// continuations stay identical, how long they agree, and how often the FP8 model's next token
// given the unquantized continuation, fed through decode steps, is that continuation's token).
// Under TPLA with tpla_pd_separation a prefill from position 0 reads no cache, so perplexity is
// the same with either cache there (ppl_reads_cache false). Not a benchmark: no timing.
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

// Exit codes: 0 success, 1 runtime failure, 2 bad flags, configuration or input.
void register_kv_cache_compare_command(CLI::App& app, int& exit_code);

}  // namespace mlra
