// [soak] the 60 s version of scripts/soak.sh on the tiny MLRA-4: 200 concurrent streams of valid,
// cancelled and invalid traffic against the real `serve` process; passes when the server stays
// up, every stream keeps its contract, every invalid request gets an error status, all cache
// pages are free at the end, and RSS and threads stay flat (the script's verdict). The 10-minute
// run on the default model is `scripts/soak.sh` without arguments (not CI).
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdio>
#include <string>

TEST_CASE("soak: 60 s of mixed valid, cancelled and invalid traffic stays flat", "[soak]") {
  const std::string command = std::string("bash ") + MLRA_SOURCE_DIR +
                              "/scripts/soak.sh --duration 60 --tiny --build " + MLRA_BINARY_DIR +
                              " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) output.append(buffer, n);
  const int status = ::pclose(pipe);
  INFO(output);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(output.find("soak: PASS") != std::string::npos);
}
