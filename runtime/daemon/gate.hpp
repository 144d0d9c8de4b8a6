// The daemon's front door: loomd's public port belongs to this gate, not to CAF's middleman.
//
// CAF 0.17's middleman reads a BASP message by first allocating and zero-filling the payload size
// its 32-byte header announces (up to 4 GiB), on its one multiplexer thread, before a byte of the
// payload arrives: one stranger's header stalls the daemon for seconds and a few exhaust its
// memory. The gate accepts each connection, relays it to the middleman listening on a loopback
// port, and reads every BASP header the client sends on the way; a header that announces more than
// `max_message_bytes` (or more than `max_held_bytes` over all connections) closes that connection
// before the middleman sees it. Replies pass unread.
// Everything else (handshakes, versions, the token) is still checked where it was.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "support/expected.hpp"

namespace loom::daemon {

struct gate_settings {
  std::string host = "127.0.0.1";  // where clients connect (loomd --host; "0.0.0.0" or "::" for every address)
  std::uint16_t port = 0;          // 0: any free port (see gate::port)
  std::uint16_t backend_port = 0;  // the middleman's port on 127.0.0.1
  // Larger than any request needs: a submission is capped at 16 MiB of file contents (protocol.hpp).
  std::size_t max_message_bytes = std::size_t{32} << 20;
  // The middleman keeps a buffer of each connection's largest message until it closes. Messages up
  // to small_message_bytes (handshakes, status, logs requests) always pass; larger ones only while
  // the open connections' larger messages add up to at most max_held_bytes.
  std::size_t small_message_bytes = std::size_t{64} << 10;
  std::size_t max_held_bytes = std::size_t{512} << 20;
  std::size_t max_connections = 1024;            // further connections are closed at once
  std::function<void(const std::string&)> log;   // one line per refusal (bursts of 20, then one a second)
};

class gate {
 public:
  // Listens on settings.host:settings.port and starts relaying on a thread of its own.
  static expected<std::unique_ptr<gate>> open(gate_settings settings);
  ~gate();  // stops accepting and closes every relayed connection
  gate(const gate&) = delete;
  gate& operator=(const gate&) = delete;

  std::uint16_t port() const;  // the port it listens on

 private:
  struct state;
  explicit gate(std::unique_ptr<state> s);
  std::unique_ptr<state> state_;
};

}  // namespace loom::daemon
