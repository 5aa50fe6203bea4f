// mlra-serve: command-line entry point (serve, generate, inspect, client).
#include <cstdio>

int main() {
  std::puts("mlra-serve");
  return 0;
}
