// The daemon's shared secret: 32 random bytes as 64 hex digits in STATE/token (mode 0600), made the
// first time a daemon starts on a state folder. Clients read it and send it with every request.
#pragma once

#include <string>

#include "support/expected.hpp"

namespace loom::daemon {

// Reads the token at `path`, creating it (mode 0600, from /dev/urandom) when there is none. A token
// file that others can read is narrowed to 0600, and `warning` says so.
expected<std::string> load_or_create_token(const std::string& path, std::string* warning = nullptr);

// Reads a token file (the client side); the message names the file and what to do.
expected<std::string> read_token(const std::string& path);

// Compares in time that depends only on the lengths, not on where the strings differ.
bool tokens_equal(const std::string& expected_token, const std::string& given);

}  // namespace loom::daemon
