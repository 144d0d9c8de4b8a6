// The transports behind the actors: payloads arrive whole and in order per (sender, tag), whether the
// receive or the send comes first, and a lost or aborted peer fails the receives waiting on it.
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <future>
#include <mutex>
#include <random>

#include "runtime/transport/local_transport.hpp"
#include "runtime/transport/ucx_transport.hpp"

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

BOOST_AUTO_TEST_CASE(a_lost_peer_fails_the_receives_waiting_on_it) {
  ucx_group g(2);
  // One message in each direction so the endpoints are up.
  BOOST_TEST_REQUIRE(g.handles[0].send(1, actors::tag{}, {}).has_value());
  BOOST_TEST_REQUIRE(receive(g.handles[1], 0, actors::tag{}).has_value());
  BOOST_TEST_REQUIRE(g.handles[1].send(0, actors::tag{}, {}).has_value());
  BOOST_TEST_REQUIRE(receive(g.handles[0], 1, actors::tag{}).has_value());
  auto promise = std::make_shared<std::promise<expected<actors::payload>>>();
  auto future = promise->get_future();
  g.handles[0].receive(1, actors::tag{actors::traffic::combine, 0, 0, 0, 1},
                       [promise](expected<actors::payload> p) { promise->set_value(std::move(p)); });
  g.handles[0].abort(loom::error(errc::transport_error, "the experiment failed elsewhere"));
  BOOST_TEST_REQUIRE((future.wait_for(std::chrono::seconds(10)) == std::future_status::ready));
  auto got = future.get();
  BOOST_TEST_REQUIRE(!got.has_value());
  BOOST_TEST(got.error().message == "the experiment failed elsewhere");
}

BOOST_AUTO_TEST_SUITE_END()
