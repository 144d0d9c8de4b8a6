// The transports behind the actors: payloads arrive whole and in order per (sender, tag), whether the
// receive or the send comes first, and a lost or aborted peer fails the receives waiting on it.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <tuple>
#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <optional>
#include <thread>

#include "runtime/transport/background_free.hpp"
#include "runtime/transport/local_transport.hpp"
#include "runtime/transport/ucx_transport.hpp"
#include "runtime/transport/ucx_wire.hpp"

using namespace loom;

namespace {

// Waits for one receive's result.
expected<actors::payload> receive(const actors::transport& t, int peer, actors::tag tag, double seconds = 10) {
  auto promise = std::make_shared<std::promise<expected<actors::payload>>>();
  auto future = promise->get_future();
  t.receive(peer, tag, [promise](expected<actors::payload> p) { promise->set_value(std::move(p)); });
  if (future.wait_for(std::chrono::duration<double>(seconds)) != std::future_status::ready)
    return unexpected(errc::timeout, "no payload within the time limit");
  return future.get();
}

actors::payload random_payload(std::mt19937& rng, std::size_t floats) {
  actors::payload p;
  std::uniform_real_distribution<float> u(-1, 1);
  p.f.resize(floats);
  for (auto& v : p.f) v = u(rng);
  p.d = {1.5, -2.25, 1e300};
  p.i = {1, 2, 3, static_cast<std::int32_t>(floats)};
  return p;
}

struct ucx_group {
  std::vector<std::shared_ptr<void>> states;
  std::vector<actors::transport> handles;
  explicit ucx_group(int n) {
    std::vector<std::vector<std::uint8_t>> addresses;
    for (int r = 0; r < n; ++r) {
      auto s = transport::make_ucx_transport(r, n);
      BOOST_TEST_REQUIRE(s.has_value(), (s ? "" : s.error().message));
      addresses.push_back(transport::ucx_address(*s));
      states.push_back(*s);
    }
    for (int r = 0; r < n; ++r) {
      auto ok = transport::ucx_connect(states[r], addresses);
      BOOST_TEST_REQUIRE(ok.has_value(), (ok ? "" : ok.error().message));
      handles.push_back(transport::ucx_handle(states[r]));
    }
  }
};

// Sets (value null: unsets) an environment variable until the end of the scope (UCX and the ucx
// transport read theirs when a transport is made).
struct scoped_env {
  std::string name, saved;
  bool had;
  scoped_env(const char* variable, const char* value) : name(variable) {
    const char* before = std::getenv(variable);
    had = before != nullptr;
    if (had) saved = before;
    if (value) ::setenv(variable, value, 1);
    else ::unsetenv(variable);
  }
  ~scoped_env() {
    if (had) ::setenv(name.c_str(), saved.c_str(), 1);
    else ::unsetenv(name.c_str());
  }
};
struct scoped_tls : scoped_env {
  explicit scoped_tls(const char* tls) : scoped_env("UCX_TLS", tls) {}
};

// A payload whose every element says where it came from, to compare after the trip.
actors::payload shaped(std::size_t nf, std::size_t nd, std::size_t ni, int seed) {
  actors::payload p;
  p.f.resize(nf);
  p.d.resize(nd);
  p.i.resize(ni);
  for (std::size_t k = 0; k < nf; ++k) p.f[k] = static_cast<float>(seed) + 0.25f * static_cast<float>(k % 4099);
  for (std::size_t k = 0; k < nd; ++k) p.d[k] = seed * 1e6 + static_cast<double>(k) * 1.5;
  for (std::size_t k = 0; k < ni; ++k) p.i[k] = seed * 1000 + static_cast<std::int32_t>(k);
  return p;
}

void same_payload(const actors::payload& got, const actors::payload& sent) {
  BOOST_TEST(got.f.size() == sent.f.size());
  BOOST_TEST(got.d.size() == sent.d.size());
  BOOST_TEST(got.i.size() == sent.i.size());
  BOOST_TEST((got.f == sent.f));
  BOOST_TEST((got.d == sent.d));
  BOOST_TEST((got.i == sent.i));
}

// Every layout the ucx transport uses on the wire: empty; one vector alone, small and large; several
// small ones packed; large ones as bodies after a lead, with small ones inline; the limits' edges.
std::vector<actors::payload> every_shape() {
  const std::size_t lim_f = transport::ucx_wire::inline_limit / 4;  // floats that fill the inline limit
  const std::size_t big = std::size_t{3} << 20;                     // elements: 12 or 24 MiB
  std::vector<actors::payload> out;
  int seed = 1;
  for (auto [nf, nd, ni] : std::vector<std::tuple<std::size_t, std::size_t, std::size_t>>{
           {0, 0, 0}, {1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {2, 0, 0}, {lim_f, 0, 0}, {lim_f + 1, 0, 0}, {big, 0, 0},
           {0, big, 0}, {0, 0, big}, {3, 2, 1}, {lim_f - 8, 2, 2}, {lim_f, 0, 1}, {lim_f + 1, 0, 1}, {big, 0, 7},
           {big, 3, 0}, {5, big, 9}, {big, big / 2, 0}, {big, 0, big / 4}, {big / 2, big / 8, big / 16}, {0, 5, lim_f + 3}})
    out.push_back(shaped(nf, nd, ni, seed++));
  return out;
}

void exchange_round_trips(const std::vector<actors::transport>& t) {
  std::mt19937 rng(std::random_device{}());
  const int n = static_cast<int>(t.size());
  // Receives posted before the sends, and sends before the receives; sizes from 0 to 8 MiB.
  for (std::size_t floats : {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{2} << 20}) {
    for (int from = 0; from < n; ++from)
      for (int to = 0; to < n; ++to) {
        actors::tag tag{actors::traffic::dispatch, 1, 2, 3, static_cast<std::uint32_t>(floats % 1000003)};
        auto sent = random_payload(rng, floats);
        auto promise = std::make_shared<std::promise<expected<actors::payload>>>();
        auto future = promise->get_future();
        t[to].receive(from, tag, [promise](expected<actors::payload> p) { promise->set_value(std::move(p)); });
        BOOST_TEST_REQUIRE(t[from].send(to, tag, sent).has_value());
        BOOST_TEST_REQUIRE((future.wait_for(std::chrono::seconds(20)) == std::future_status::ready));
        auto got = future.get();
        BOOST_TEST_REQUIRE(got.has_value(), (got ? "" : got.error().message));
        BOOST_TEST((got->f == sent.f));
        BOOST_TEST((got->d == sent.d));
        BOOST_TEST((got->i == sent.i));
        // And the other way round: the send first.
        BOOST_TEST_REQUIRE(t[from].send(to, tag, sent).has_value());
        auto later = receive(t[to], from, tag);
        BOOST_TEST_REQUIRE(later.has_value(), (later ? "" : later.error().message));
        BOOST_TEST((later->f == sent.f));
      }
  }
  // Several messages on one (sender, tag) arrive in order.
  if (n > 1) {
    actors::tag tag{actors::traffic::pipeline_activation, 0, 1, 0, 7};
    for (int k = 0; k < 50; ++k) {
      actors::payload p;
      p.i = {k};
      BOOST_TEST_REQUIRE(t[0].send(1, tag, p).has_value());
    }
    for (int k = 0; k < 50; ++k) {
      auto got = receive(t[1], 0, tag);
      BOOST_TEST_REQUIRE(got.has_value());
      BOOST_TEST(got->i.at(0) == k);
    }
  }
}

// Every rank of `group` exchanges with every other at once, as the component actors do; sizes take
// both the inline and the zero-copy path of the ucx transport.
void all_to_all_delivers_in_group_order(const std::vector<actors::transport>& t, const std::vector<int>& group) {
  const int n = static_cast<int>(group.size());
  for (std::size_t floats : {std::size_t{3}, std::size_t{300000}}) {
    std::vector<std::future<expected<std::vector<actors::payload>>>> results;
    for (int me = 0; me < n; ++me) {
      std::vector<actors::payload> out(n);
      for (int i = 0; i < n; ++i) {
        out[i].i = {group[me] * 100 + group[i]};
        out[i].f.assign(floats, static_cast<float>(group[me]));
      }
      auto promise = std::make_shared<std::promise<expected<std::vector<actors::payload>>>>();
      results.push_back(promise->get_future());
      t[group[me]].all_to_all(group, actors::tag{actors::traffic::dispatch, 0, 0, 1, static_cast<std::uint32_t>(floats)}, std::move(out),
                              [promise](expected<std::vector<actors::payload>> r) { promise->set_value(std::move(r)); });
    }
    for (int me = 0; me < n; ++me) {
      BOOST_TEST_REQUIRE((results[me].wait_for(std::chrono::seconds(20)) == std::future_status::ready));
      auto got = results[me].get();
      BOOST_TEST_REQUIRE(got.has_value(), (got ? "" : got.error().message));
      BOOST_TEST_REQUIRE(static_cast<int>(got->size()) == n);
      for (int i = 0; i < n; ++i) {
        BOOST_TEST((*got)[i].i == std::vector<std::int32_t>{group[i] * 100 + group[me]});
        BOOST_TEST((*got)[i].f.size() == floats);
        BOOST_TEST((*got)[i].f.back() == static_cast<float>(group[i]));
      }
    }
  }
}

// A barrier completes only once the last member enters.
void barrier_waits_for_every_member(const std::vector<actors::transport>& t) {
  const std::vector<int> group{0, 1, 2};
  std::vector<std::future<expected<void>>> entered;
  for (int r = 0; r < 2; ++r) {
    auto promise = std::make_shared<std::promise<expected<void>>>();
    entered.push_back(promise->get_future());
    t[r].barrier(group, actors::tag{actors::traffic::control, 0, 0, 0, 5}, [promise](expected<void> r) { promise->set_value(std::move(r)); });
  }
  BOOST_TEST((entered[0].wait_for(std::chrono::milliseconds(200)) == std::future_status::timeout));
  auto promise = std::make_shared<std::promise<expected<void>>>();
  entered.push_back(promise->get_future());
  t[2].barrier(group, actors::tag{actors::traffic::control, 0, 0, 0, 5}, [promise](expected<void> r) { promise->set_value(std::move(r)); });
  for (auto& f : entered) {
    BOOST_TEST_REQUIRE((f.wait_for(std::chrono::seconds(20)) == std::future_status::ready));
    BOOST_TEST(f.get().has_value());
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(transport_local)

BOOST_AUTO_TEST_CASE(payloads_arrive_whole_and_in_order) {
  auto state = transport::make_local_transport(3);
  std::vector<actors::transport> t;
  for (int r = 0; r < 3; ++r) t.push_back(transport::local_handle(state, r));
  exchange_round_trips(t);
}

BOOST_AUTO_TEST_CASE(collectives) {
  auto state = transport::make_local_transport(3);
  std::vector<actors::transport> t;
  for (int r = 0; r < 3; ++r) t.push_back(transport::local_handle(state, r));
  all_to_all_delivers_in_group_order(t, {0, 1, 2});
  all_to_all_delivers_in_group_order(t, {2, 0});
  barrier_waits_for_every_member(t);
  // A rank outside the group it names is refused, not left waiting.
  auto promise = std::make_shared<std::promise<expected<std::vector<actors::payload>>>>();
  t[1].all_to_all({0, 2}, actors::tag{}, std::vector<actors::payload>(2),
                  [promise](expected<std::vector<actors::payload>> r) { promise->set_value(std::move(r)); });
  auto refused = promise->get_future().get();
  BOOST_TEST_REQUIRE(!refused.has_value());
  BOOST_TEST(refused.error().message.find("does not hold it") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(abort_fails_waiting_receives) {
  auto state = transport::make_local_transport(2);
  auto a = transport::local_handle(state, 0);
  auto promise = std::make_shared<std::promise<expected<actors::payload>>>();
  auto future = promise->get_future();
  a.receive(1, actors::tag{}, [promise](expected<actors::payload> p) { promise->set_value(std::move(p)); });
  a.abort(loom::error(errc::cancelled, "experiment stopped"));
  auto got = future.get();
  BOOST_TEST_REQUIRE(!got.has_value());
  BOOST_TEST(got.error().message == "experiment stopped");
  BOOST_TEST(!a.send(1, actors::tag{}, {}).has_value());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(transport_ucx)

BOOST_AUTO_TEST_CASE(payloads_arrive_whole_and_in_order) {
  ucx_group g(3);
  exchange_round_trips(g.handles);
}

BOOST_AUTO_TEST_CASE(collectives) {
  ucx_group g(3);
  all_to_all_delivers_in_group_order(g.handles, {0, 1, 2});
  all_to_all_delivers_in_group_order(g.handles, {2, 0});
  barrier_waits_for_every_member(g.handles);
}

// UCX_TLS naming only shared-memory transports (which cannot report a lost peer) still connects.
BOOST_AUTO_TEST_CASE(shared_memory_only_transports) {
  const char* before = std::getenv("UCX_TLS");
  const std::string saved = before ? before : "";
  ::setenv("UCX_TLS", "posix,self", 1);
  {
    ucx_group g(2);
    exchange_round_trips(g.handles);
    all_to_all_delivers_in_group_order(g.handles, {0, 1});
  }
  if (before) ::setenv("UCX_TLS", saved.c_str(), 1);
  else ::unsetenv("UCX_TLS");
}

// Every wire layout, over TCP and over shared memory, with the receive posted before the send and
// after it: the payload comes back element for element.
BOOST_AUTO_TEST_CASE(every_payload_shape_round_trips) {
  for (const char* tls : {"tcp", "posix"}) {
    BOOST_TEST_CONTEXT("UCX_TLS=" << tls) {
      scoped_tls env(tls);
      ucx_group g(2);
      std::uint32_t mb = 0;
      for (const auto& sent : every_shape()) {
        BOOST_TEST_CONTEXT("floats " << sent.f.size() << ", doubles " << sent.d.size() << ", ints " << sent.i.size()) {
          const actors::tag tag{actors::traffic::dispatch, 1, 2, 3, ++mb};
          auto promise = std::make_shared<std::promise<expected<actors::payload>>>();
          auto future = promise->get_future();
          g.handles[1].receive(0, tag, [promise](expected<actors::payload> p) { promise->set_value(std::move(p)); });
          BOOST_TEST_REQUIRE(g.handles[0].send(1, tag, sent).has_value());
          BOOST_TEST_REQUIRE((future.wait_for(std::chrono::seconds(20)) == std::future_status::ready));
          auto first = future.get();
          BOOST_TEST_REQUIRE(first.has_value(), (first ? "" : first.error().message));
          same_payload(*first, sent);
          BOOST_TEST_REQUIRE(g.handles[1].send(0, tag, sent).has_value());  // the other way, send first
          auto second = receive(g.handles[0], 1, tag, 20);
          BOOST_TEST_REQUIRE(second.has_value(), (second ? "" : second.error().message));
          same_payload(*second, sent);
        }
      }
    }
  }
}

void same_tag_order();

// Messages on one (sender, tag) arrive in the order sent, whatever their sizes: a small one sent
// after a large one (which takes a rendezvous and finishes later) still comes second.
BOOST_AUTO_TEST_CASE(same_tag_messages_keep_their_order_across_sizes) {
  for (const char* tls : {"tcp", ""})
    BOOST_TEST_CONTEXT("UCX_TLS=" << tls) {
      std::optional<scoped_tls> env;
      if (*tls) env.emplace(tls);
      same_tag_order();
    }
}

void same_tag_order() {
  ucx_group g(2);
  auto shapes = every_shape();
  std::vector<actors::payload> sent;
  const actors::tag a{actors::traffic::pipeline_activation, 0, 1, 0, 9}, b{actors::traffic::pipeline_gradient, 0, 1, 0, 9};
  for (int round = 0; round < 2; ++round)
    for (std::size_t k = 0; k < shapes.size(); ++k) {
      sent.push_back(shapes[(k * 7 + round) % shapes.size()]);
      BOOST_TEST_REQUIRE(g.handles[0].send(1, k % 3 == 0 ? b : a, sent.back()).has_value());
    }
  for (std::size_t k = 0; k < sent.size(); ++k) {  // tag a's in order, then tag b's in order
    if ((k % shapes.size()) % 3 == 0) continue;
    auto got = receive(g.handles[1], 0, a, 20);
    BOOST_TEST_REQUIRE(got.has_value(), (got ? "" : got.error().message));
    same_payload(*got, sent[k]);
  }
  for (std::size_t k = 0; k < sent.size(); ++k) {
    if ((k % shapes.size()) % 3 != 0) continue;
    auto got = receive(g.handles[1], 0, b, 20);
    BOOST_TEST_REQUIRE(got.has_value(), (got ? "" : got.error().message));
    same_payload(*got, sent[k]);
  }
}

// Several threads send at once (each to its own tag); each tag's stream arrives whole and in order.
BOOST_AUTO_TEST_CASE(concurrent_senders) {
  ucx_group g(2);
  constexpr int threads = 4, messages = 60;
  std::vector<std::thread> senders;
  std::atomic<int> failures{0};
  for (int t = 0; t < threads; ++t)
    senders.emplace_back([&, t] {
      for (int m = 0; m < messages; ++m) {
        const std::size_t floats = m % 10 == 0 ? std::size_t{1} << 19 : static_cast<std::size_t>(m * 37 % 3000);
        if (!g.handles[0].send(1, actors::tag{actors::traffic::combine, 0, 0, static_cast<std::uint16_t>(t), 1}, shaped(floats, 0, 1, m)))
          ++failures;
      }
    });
  for (auto& th : senders) th.join();
  BOOST_TEST(failures.load() == 0);
  for (int t = 0; t < threads; ++t)
    for (int m = 0; m < messages; ++m) {
      auto got = receive(g.handles[1], 0, actors::tag{actors::traffic::combine, 0, 0, static_cast<std::uint16_t>(t), 1}, 20);
      BOOST_TEST_REQUIRE(got.has_value(), (got ? "" : got.error().message));
      const std::size_t floats = m % 10 == 0 ? std::size_t{1} << 19 : static_cast<std::size_t>(m * 37 % 3000);
      same_payload(*got, shaped(floats, 0, 1, m));
    }
}

// A receive callback may send and post the next receive itself (the benchmark's ping-pong does):
// rank 0 sends ping k, rank 1's callback answers pong k, rank 0's callback sends ping k+1.
BOOST_AUTO_TEST_CASE(a_callback_may_send_and_receive) {
  ucx_group g(2);
  constexpr int rounds = 200;
  std::promise<int> finished;
  std::atomic<bool> over{false};
  auto finish = [&](int v) {
    if (!over.exchange(true)) finished.set_value(v);
  };
  auto ping = [](int k) { return actors::tag{actors::traffic::control, 0, 0, 0, static_cast<std::uint32_t>(2 * k)}; };
  auto pong = [](int k) { return actors::tag{actors::traffic::control, 0, 0, 0, static_cast<std::uint32_t>(2 * k + 1)}; };
  auto numbered = [](int k) {
    actors::payload p;
    p.i = {k};
    return p;
  };
  std::function<void(int, expected<actors::payload>)> rank1_got, rank0_got;
  rank1_got = [&](int k, expected<actors::payload> got) {
    if (!got || got->i != std::vector<std::int32_t>{k}) return finish(-1);
    if (k + 1 < rounds) g.handles[1].receive(0, ping(k + 1), [&, k](expected<actors::payload> p) { rank1_got(k + 1, std::move(p)); });
    if (!g.handles[1].send(0, pong(k), numbered(k))) finish(-2);
  };
  rank0_got = [&](int k, expected<actors::payload> got) {
    if (!got || got->i != std::vector<std::int32_t>{k}) return finish(-3);
    if (k + 1 == rounds) return finish(rounds);
    g.handles[0].receive(1, pong(k + 1), [&, k](expected<actors::payload> p) { rank0_got(k + 1, std::move(p)); });
    if (!g.handles[0].send(1, ping(k + 1), numbered(k + 1))) finish(-4);
  };
  g.handles[1].receive(0, ping(0), [&](expected<actors::payload> p) { rank1_got(0, std::move(p)); });
  g.handles[0].receive(1, pong(0), [&](expected<actors::payload> p) { rank0_got(0, std::move(p)); });
  BOOST_TEST_REQUIRE(g.handles[0].send(1, ping(0), numbered(0)).has_value());
  auto done = finished.get_future();
  BOOST_TEST_REQUIRE((done.wait_for(std::chrono::seconds(20)) == std::future_status::ready));
  BOOST_TEST(done.get() == rounds);
}

// Closing a transport still delivers what was sent before: the close flushes the sends.
BOOST_AUTO_TEST_CASE(close_flushes_sends) {
  ucx_group g(2);
  const auto big = shaped(std::size_t{6} << 20, 0, 3, 5), small = shaped(3, 1, 0, 6);
  BOOST_TEST_REQUIRE(g.handles[0].send(1, actors::tag{actors::traffic::grad_sync, 0, 0, 0, 1}, big).has_value());
  BOOST_TEST_REQUIRE(g.handles[0].send(1, actors::tag{actors::traffic::grad_sync, 0, 0, 0, 2}, small).has_value());
  transport::ucx_close(g.states[0]);
  auto got_big = receive(g.handles[1], 0, actors::tag{actors::traffic::grad_sync, 0, 0, 0, 1}, 20);
  BOOST_TEST_REQUIRE(got_big.has_value(), (got_big ? "" : got_big.error().message));
  same_payload(*got_big, big);
  auto got_small = receive(g.handles[1], 0, actors::tag{actors::traffic::grad_sync, 0, 0, 0, 2}, 20);
  BOOST_TEST_REQUIRE(got_small.has_value(), (got_small ? "" : got_small.error().message));
  same_payload(*got_small, small);
  BOOST_TEST(!g.handles[0].send(1, actors::tag{}, {}).has_value());  // closed: refused, not lost silently
}

// A peer that goes away (its transport closed: its connections drop as if its process had died)
// fails the receives waiting on it, naming the rank; a payload it sent before still arrives; sends to
// it and later receives from it fail at once. Over tcp: UCX's shared-memory transports cannot report
// a lost peer (the control plane does).
void a_lost_peer_fails_the_receives_waiting_on_it() {
  scoped_tls env("tcp");
  ucx_group g(3);
  // One message each way so the endpoints are up, and one kept for later.
  BOOST_TEST_REQUIRE(g.handles[0].send(1, actors::tag{}, {}).has_value());
  BOOST_TEST_REQUIRE(receive(g.handles[1], 0, actors::tag{}).has_value());
  BOOST_TEST_REQUIRE(g.handles[1].send(0, actors::tag{}, shaped(4, 0, 0, 3)).has_value());
  BOOST_TEST_REQUIRE(receive(g.handles[0], 1, actors::tag{}).has_value());
  const actors::tag kept{actors::traffic::combine, 0, 0, 0, 7}, never{actors::traffic::combine, 0, 0, 0, 1};
  BOOST_TEST_REQUIRE(g.handles[1].send(0, kept, shaped(10, 0, 2, 4)).has_value());
  auto promise = std::make_shared<std::promise<expected<actors::payload>>>();
  auto future = promise->get_future();
  g.handles[0].receive(1, never, [promise](expected<actors::payload> p) { promise->set_value(std::move(p)); });
  auto other = std::make_shared<std::promise<expected<actors::payload>>>();
  auto other_future = other->get_future();
  g.handles[0].receive(2, never, [other](expected<actors::payload> p) { other->set_value(std::move(p)); });
  // The kept payload is in before the loss (a receive of it would have failed otherwise).
  auto got_kept = receive(g.handles[0], 1, kept);
  BOOST_TEST_REQUIRE(got_kept.has_value(), (got_kept ? "" : got_kept.error().message));
  same_payload(*got_kept, shaped(10, 0, 2, 4));
  transport::ucx_close(g.states[1]);
  BOOST_TEST_REQUIRE((future.wait_for(std::chrono::seconds(20)) == std::future_status::ready));
  auto got = future.get();
  BOOST_TEST_REQUIRE(!got.has_value());
  BOOST_TEST(got.error().code == errc::transport_error);
  BOOST_TEST(got.error().message.find("rank 1") != std::string::npos, got.error().message);
  auto later = receive(g.handles[0], 1, never, 5);
  BOOST_TEST_REQUIRE(!later.has_value());
  BOOST_TEST(later.error().message.find("rank 1") != std::string::npos, later.error().message);
  auto sent = g.handles[0].send(1, never, {});
  BOOST_TEST_REQUIRE(!sent.has_value());
  BOOST_TEST(sent.error().message.find("rank 1") != std::string::npos, sent.error().message);
  // Rank 2 is still there: its receive still waits, and it still gets through.
  BOOST_TEST((other_future.wait_for(std::chrono::milliseconds(100)) == std::future_status::timeout));
  BOOST_TEST_REQUIRE(g.handles[2].send(0, never, shaped(2, 0, 0, 8)).has_value());
  BOOST_TEST_REQUIRE((other_future.wait_for(std::chrono::seconds(20)) == std::future_status::ready));
  auto from_two = other_future.get();
  BOOST_TEST_REQUIRE(from_two.has_value(), (from_two ? "" : from_two.error().message));
  same_payload(*from_two, shaped(2, 0, 0, 8));
}

// By default the endpoints have no UCX peer error handling (it costs the zero-copy rendezvous over
// tcp); the closed connection reports the loss all the same.
BOOST_AUTO_TEST_CASE(a_lost_peer_fails_the_receives_waiting_on_it_by_default) {
  scoped_env plain("LOOM_UCX_PEER_ERRORS", nullptr);
  a_lost_peer_fails_the_receives_waiting_on_it();
}

// With UCX's peer error handling asked for, the same.
BOOST_AUTO_TEST_CASE(a_lost_peer_fails_the_receives_waiting_on_it_with_peer_errors) {
  scoped_env peer_errors("LOOM_UCX_PEER_ERRORS", "1");
  a_lost_peer_fails_the_receives_waiting_on_it();
}

// The ucx transport frees large sent payloads through background_free: each one it takes is destroyed
// once, on its own thread, not the caller's; what is still queued when it goes is destroyed too.
BOOST_AUTO_TEST_CASE(background_free_destroys_off_the_callers_thread) {
  struct record {
    std::mutex mutex;
    std::vector<std::thread::id> destroyed_on;
  };
  struct item {
    std::shared_ptr<record> r;
    item(std::shared_ptr<record> to) : r(std::move(to)) {}
    item(item&&) = default;
    item& operator=(item&&) = default;
    ~item() {
      if (!r) return;  // moved from
      std::lock_guard<std::mutex> lock(r->mutex);
      r->destroyed_on.push_back(std::this_thread::get_id());
    }
  };
  auto r = std::make_shared<record>();
  {
    transport::background_free<item> freer;
    for (int batch = 0; batch < 50; ++batch) {
      std::vector<item> items;
      for (int k = 0; k < 20; ++k) items.emplace_back(r);
      freer.take(items);
      BOOST_TEST_REQUIRE(items.empty());
    }
  }  // joins: every item is gone by now
  BOOST_TEST(r->destroyed_on.size() == 1000u);
  BOOST_TEST(std::none_of(r->destroyed_on.begin(), r->destroyed_on.end(),
                          [](std::thread::id id) { return id == std::this_thread::get_id(); }));
}

// Abort fails every waiting receive with its reason, and later receives and sends too.
BOOST_AUTO_TEST_CASE(abort_fails_everything) {
  ucx_group g(2);
  BOOST_TEST_REQUIRE(g.handles[1].send(0, actors::tag{}, {}).has_value());
  BOOST_TEST_REQUIRE(receive(g.handles[0], 1, actors::tag{}).has_value());
  std::vector<std::future<expected<actors::payload>>> waiting;
  for (std::uint32_t k = 1; k <= 3; ++k) {
    auto promise = std::make_shared<std::promise<expected<actors::payload>>>();
    waiting.push_back(promise->get_future());
    g.handles[0].receive(1, actors::tag{actors::traffic::combine, 0, 0, 0, k},
                         [promise](expected<actors::payload> p) { promise->set_value(std::move(p)); });
  }
  g.handles[0].abort(loom::error(errc::transport_error, "the experiment failed elsewhere"));
  for (auto& f : waiting) {
    BOOST_TEST_REQUIRE((f.wait_for(std::chrono::seconds(10)) == std::future_status::ready));
    auto got = f.get();
    BOOST_TEST_REQUIRE(!got.has_value());
    BOOST_TEST(got.error().message == "the experiment failed elsewhere");
  }
  auto later = receive(g.handles[0], 1, actors::tag{actors::traffic::combine, 0, 0, 0, 9});
  BOOST_TEST_REQUIRE(!later.has_value());
  BOOST_TEST(later.error().message == "the experiment failed elsewhere");
  auto sent = g.handles[0].send(1, actors::tag{}, {});
  BOOST_TEST_REQUIRE(!sent.has_value());
  BOOST_TEST(sent.error().message == "the experiment failed elsewhere");
}

BOOST_AUTO_TEST_SUITE_END()

// The ucx transport's wire layouts, without a network.
BOOST_AUTO_TEST_SUITE(ucx_wire_format)

namespace wire = transport::ucx_wire;

BOOST_AUTO_TEST_CASE(layouts) {
  const std::size_t lim_f = wire::inline_limit / 4;
  auto layout = [](std::size_t nf, std::size_t nd, std::size_t ni) { return wire::layout_of(shaped(nf, nd, ni, 1)); };
  BOOST_TEST((layout(0, 0, 0).first == wire::form::packed));
  BOOST_TEST((layout(5, 0, 0).first == wire::form::floats));
  BOOST_TEST((layout(0, std::size_t{1} << 20, 0).first == wire::form::doubles));
  BOOST_TEST((layout(0, 0, 3).first == wire::form::ints));
  BOOST_TEST((layout(lim_f - 1, 0, 1).first == wire::form::packed));
  BOOST_TEST((layout(lim_f, 0, 1).first == wire::form::packed));  // over the limit together, no vector over it alone
  const auto lead = layout(lim_f + 1, 0, 1);
  BOOST_TEST((lead.first == wire::form::lead));
  BOOST_TEST(lead.bodies == 1u);
  BOOST_TEST(layout(lim_f + 1, lim_f / 2, lim_f * 2).bodies == 5u);  // floats and ints over it, doubles at it: inline
  BOOST_TEST((wire::form_of(wire::wire_tag(4095, wire::form::body_i, ~std::uint64_t{0})) == wire::form::body_i));
  BOOST_TEST(wire::sender_of(wire::wire_tag(4095, wire::form::body_i, ~std::uint64_t{0})) == 4095);
  BOOST_TEST(wire::loom_tag_of(wire::wire_tag(4095, wire::form::lead, 0x123456789abcULL)) == 0x123456789abcULL);
}

BOOST_AUTO_TEST_CASE(packed_messages_unpack_to_the_same_payload) {
  for (auto [nf, nd, ni] : std::vector<std::tuple<std::size_t, std::size_t, std::size_t>>{{0, 0, 0}, {3, 2, 1}, {0, 7, 9}, {1000, 0, 24}}) {
    const auto sent = shaped(nf, nd, ni, 2);
    std::vector<std::uint8_t> bytes;
    wire::pack(sent, 0, bytes);
    actors::payload got;
    wire::header h{};
    auto bodies = wire::unpack(bytes.data(), bytes.size(), false, got, h);
    BOOST_TEST_REQUIRE(bodies.has_value());
    BOOST_TEST(*bodies == 0u);
    same_payload(got, sent);
  }
  // A lead carries the small vectors; the body's count is in the header, its data not.
  const auto sent = shaped(5000, 3, 4, 3);
  std::vector<std::uint8_t> bytes;
  wire::pack(sent, 1, bytes);
  BOOST_TEST(bytes.size() == sizeof(wire::header) + 3 * 8 + 4 * 4);
  actors::payload got;
  wire::header h{};
  auto bodies = wire::unpack(bytes.data(), bytes.size(), true, got, h);
  BOOST_TEST_REQUIRE(bodies.has_value());
  BOOST_TEST(*bodies == 1u);
  BOOST_TEST(h.count[0] == 5000u);
  BOOST_TEST(got.f.empty());
  BOOST_TEST((got.d == sent.d));
  BOOST_TEST((got.i == sent.i));
}

BOOST_AUTO_TEST_CASE(malformed_messages_are_refused) {
  std::vector<std::uint8_t> bytes;
  wire::pack(shaped(10, 2, 3, 4), 0, bytes);
  actors::payload p;
  wire::header h{};
  BOOST_TEST(!wire::unpack(bytes.data(), bytes.size() - 1, false, p, h).has_value());   // truncated
  BOOST_TEST(!wire::unpack(bytes.data(), 10, false, p, h).has_value());                 // shorter than its header
  BOOST_TEST(!wire::unpack(bytes.data(), bytes.size(), true, p, h).has_value());        // a lead announcing no body
  auto bad = bytes;
  const std::uint64_t huge = ~std::uint64_t{0} / 2;
  std::memcpy(bad.data(), &huge, sizeof huge);
  BOOST_TEST(!wire::unpack(bad.data(), bad.size(), false, p, h).has_value());           // counts that do not add up
  bad = bytes;
  const std::uint64_t bodies = 2;
  std::memcpy(bad.data() + 24, &bodies, sizeof bodies);
  BOOST_TEST(!wire::unpack(bad.data(), bad.size(), false, p, h).has_value());           // bodies after a packed message
  BOOST_TEST(!wire::unpack(nullptr, 0, true, p, h).has_value());                        // an empty lead
}

BOOST_AUTO_TEST_SUITE_END()
