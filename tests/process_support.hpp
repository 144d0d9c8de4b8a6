// Starting a program under test as a child process, its output kept in a file for the assertions'
// messages. Shared by the daemon and multi-host suites.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace loom::test {

// Starts `args` (args[0] found on PATH when it holds no '/') with stdout and stderr going to `log`;
// `in_child`, when given, runs in the child just before exec (to drop an environment variable, say).
// Returns the child's pid, or -1 when fork fails.
inline pid_t spawn_logged(std::vector<std::string> args, const std::string& log, void (*in_child)() = nullptr) {
  std::cout.flush();
  std::fflush(nullptr);  // else the child would write the test's buffered output again
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  if (std::freopen(log.c_str(), "w", stdout) == nullptr) ::_exit(126);
  ::dup2(STDOUT_FILENO, STDERR_FILENO);
  if (in_child) in_child();
  ::execvp(argv[0], argv.data());
  ::_exit(127);
}

}  // namespace loom::test
