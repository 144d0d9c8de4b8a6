// The actor runtime on the GPU (backend = "cuda"): the same experiment trains to the CPU backend's
// numbers within bf16 rounding, whatever the schedule, and the ops' timings are GPU times.
// Skipped, with the reason, where no GPU is usable; runtime_tests cover the CPU side of the same logic.
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsl/experiment_file.hpp"
#include "kernels/gpu_probe.hpp"
#include "dsl/load.hpp"
#include "runtime/exec/run.hpp"
#include "tests/gpu_test_support.hpp"

using namespace loom;

namespace {

const std::string source_dir = LOOM_SOURCE_DIR;

// 8 layers over pp pipeline ranks x ep expert-parallel ranks (4 x 2 unless said), 8 microbatches of 4
// sequences of 64 tokens.
std::string experiment_text(const std::string& schedule, const std::string& backend, int hidden, int steps = 3, int pp = 4,
                            int ep = 2) {
  std::ostringstream s;
  s << "name = \"gpu-equivalence\"\nseed = 5\nsteps = " << steps << "\nbackend = \"" << backend << "\"\n"
    << "[model]\nhidden = " << hidden << "\nheads = 2\nlayers = 8\nexperts = 8\ntop_k = 2\nexpert_ffn = 64\n"
    << "shared_ffn = 64\nvocab = 256\nseq_len = 64\n[batch]\nmicrobatch_size = 4\n[parallel]\npp = " << pp << "\nep = " << ep << "\n"
    << "[schedule]\nfile = \"" << source_dir << "/schedules/" << schedule << ".sched\"\nmicrobatches = 8\n"
    << "[optimizer]\nlr = 0.003\n";
  return s.str();
}

exec::run_result run(const std::string& schedule, const std::string& backend, int hidden, int pp = 4, int ep = 2) {
  auto e = dsl::parse_experiment(experiment_text(schedule, backend, hidden, 3, pp, ep), "gpu.toml", ".", {});
  BOOST_TEST_REQUIRE(e.has_value(), (e ? "" : e.error().message));
  dsl::load_request req;
  req.path = e->schedule_file;
  for (const auto& [k, v] : e->schedule_params) req.set[k] = v;
  auto s = dsl::load_schedule(req);
  BOOST_TEST_REQUIRE(s.has_value(), (s ? "" : s.error().message));
  auto r = exec::run_experiment(*e, s->sched);
  BOOST_TEST_REQUIRE(r.has_value(), (r ? "" : r.error().message));
  BOOST_TEST_REQUIRE(r->ok, r->error);
  return std::move(*r);
}

// The loom binary: $LOOM_BINARY, or the one beside this test (a GPU bundle holds both).
std::string loom_binary() {
  if (const char* env = std::getenv("LOOM_BINARY")) return env;
  return (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "loom").string();
}

double relative(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

}  // namespace

BOOST_AUTO_TEST_SUITE(gpu_runtime, *boost::unit_test::precondition(test::gpu_present))

// bf16 operands against the CPU's fp32: losses agree to about 1%, gradient norms to a few percent;
// a schedule changes when work runs, so two schedules on the GPU agree more closely still.
BOOST_AUTO_TEST_CASE(the_gpu_trains_to_the_cpu_numbers_for_every_schedule) {
  for (int hidden : {128, 256}) {  // head_dim 64 and 128
    const auto reference = run("1f1b", "cpu", hidden);
    std::vector<double> first_gpu_loss;
    for (const std::string schedule : {"1f1b", "dualpipe", "dualpipev", "zb-h1"}) {
      if (hidden == 256 && schedule != "dualpipe") continue;  // one schedule suffices for head_dim 128
      BOOST_TEST_CONTEXT(schedule << " hidden=" << hidden) {
        const auto gpu = run(schedule, "cuda", hidden);
        BOOST_TEST_REQUIRE(gpu.loss.size() == reference.loss.size());
        for (std::size_t i = 0; i < gpu.loss.size(); ++i) {
          BOOST_TEST(std::isfinite(gpu.loss[i]));
          BOOST_TEST(relative(gpu.loss[i], reference.loss[i]) < 2e-2, "step " << i << ": gpu " << gpu.loss[i] << " cpu " << reference.loss[i]);
          BOOST_TEST(relative(gpu.grad_norm[i], reference.grad_norm[i]) < 8e-2,
                     "step " << i << ": gpu " << gpu.grad_norm[i] << " cpu " << reference.grad_norm[i]);
        }
        BOOST_TEST(gpu.loss.back() < gpu.loss.front(), "the loss does not fall");
        if (first_gpu_loss.empty()) {
          first_gpu_loss = gpu.loss;
        } else {
          for (std::size_t i = 0; i < gpu.loss.size(); ++i)
            BOOST_TEST(relative(gpu.loss[i], first_gpu_loss[i]) < 5e-3, "step " << i << " differs between schedules");
        }
      }
    }
  }
}

// Every op carries a GPU time: start and end events of its kernels, inside the step.
BOOST_AUTO_TEST_CASE(ops_are_timed_on_the_gpu) {
  const auto r = run("dualpipe", "cuda", 128);
  BOOST_TEST_REQUIRE(!r.outcome.steps.empty());
  const auto& step = r.outcome.steps.back();
  BOOST_TEST_REQUIRE(step.ranks.size() == 8u);
  std::size_t timed = 0;
  for (const auto& rank : step.ranks) {
    BOOST_TEST(!rank.ops.empty(), "rank " << rank.rank << " reports no op");
    for (const auto& op : rank.ops) {
      BOOST_TEST(op.end_ns >= op.start_ns, "rank " << rank.rank << " op " << op.index);
      BOOST_TEST(op.start_ns >= 0);
      BOOST_TEST(op.end_ns <= step.wall_ns + step.wall_ns / 20 + 5'000'000, "rank " << rank.rank << " op " << op.index << " ends after the step");
      timed += op.end_ns > op.start_ns;
    }
  }
  BOOST_TEST(timed > 0u, "no op took any GPU time");
}

// Runs `text` as `loom run --procs N` with `env` before it, and returns its report's losses and norms.
std::pair<std::vector<double>, std::vector<double>> run_processes(const std::string& text, int procs, const std::string& env) {
  const auto dir = std::filesystem::temp_directory_path() / ("loom-gpu-procs-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  {
    std::ofstream f(dir / "gpu.toml");
    f << text;
  }
  // `timeout`: a data plane that hangs fails the test instead of stalling the suite.
  const std::string cmd = env + " timeout 150 '" + loom_binary() + "' run '" + (dir / "gpu.toml").string() + "' --procs " + std::to_string(procs) +
                          " -q --out '" + (dir / "out").string() + "' > '" + (dir / "log.txt").string() + "' 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream log(dir / "log.txt");
  std::stringstream out;
  out << log.rdbuf();
  BOOST_TEST_REQUIRE(status == 0, cmd << "\n" << out.str());
  std::ifstream in(dir / "out" / "report.json");
  const auto report = nlohmann::json::parse(in, nullptr, false);
  BOOST_TEST_REQUIRE(!report.is_discarded());
  std::pair<std::vector<double>, std::vector<double>> r;
  for (const auto& v : report["loss"]) r.first.push_back(v.get<double>());
  for (const auto& v : report["grad_norm"]) r.second.push_back(v.get<double>());
  std::filesystem::remove_all(dir);
  return r;
}

void expect_same_training(const std::pair<std::vector<double>, std::vector<double>>& got, const exec::run_result& single) {
  BOOST_TEST_REQUIRE(got.first.size() == single.loss.size());
  for (std::size_t i = 0; i < got.first.size(); ++i) {
    BOOST_TEST(relative(got.first[i], single.loss[i]) < 5e-3, "step " << i << ": processes " << got.first[i] << ", one " << single.loss[i]);
    BOOST_TEST(relative(got.second[i], single.grad_norm[i]) < 2e-2, "step " << i);
  }
}

boost::test_tools::assertion_result two_gpus(boost::unit_test::test_unit_id) {
  int n = 0;
  if (auto gpus = kernels::list_gpus()) n = static_cast<int>(gpus->size());
  if (n >= 2) return true;
  std::cout << "needs two GPUs (this machine has " << n << "): skipped" << std::endl;
  boost::test_tools::assertion_result r(false);
  r.message() << "needs two GPUs, found " << n;
  return r;
}

// One process per rank on the same GPU: pipeline messages and the expert all-to-all go through host
// memory over UCX (shared memory here) and give the single-process numbers.
BOOST_AUTO_TEST_CASE(a_cuda_run_over_eight_processes_matches_the_single_process_run) {
  const auto single = run("dualpipe", "cuda", 128);
  expect_same_training(run_processes(experiment_text("dualpipe", "cuda", 128), 8, "LOOM_DATA_PLANE=ucx UCX_TLS=posix,sysv,self"),
                       single);
}

// One process per GPU with NCCL between them (pp = 2, ep = 1): device-to-device pipeline messages.
BOOST_AUTO_TEST_CASE(one_process_per_gpu_over_nccl_matches_the_single_process_run, *boost::unit_test::precondition(two_gpus)) {
  for (const std::string schedule : {"1f1b", "dualpipe"}) {
    BOOST_TEST_CONTEXT(schedule) {
      const auto single = run(schedule, "cuda", 128, 2, 1);
      expect_same_training(run_processes(experiment_text(schedule, "cuda", 128, 3, 2, 1), 2,
                                         "LOOM_DATA_PLANE=nccl NCCL_NVLS_ENABLE=0 UCX_TLS=posix,sysv,self"),
                           single);
    }
  }
}

// The same with the expert all-to-all over NCCL too (pp = 1, ep = 2).
BOOST_AUTO_TEST_CASE(expert_parallel_ranks_over_nccl_match_the_single_process_run, *boost::unit_test::precondition(two_gpus)) {
  const auto single = run("gpipe", "cuda", 128, 1, 2);
  expect_same_training(run_processes(experiment_text("gpipe", "cuda", 128, 3, 1, 2), 2,
                                     "LOOM_DATA_PLANE=nccl NCCL_NVLS_ENABLE=0 UCX_TLS=posix,sysv,self"),
                       single);
}

BOOST_AUTO_TEST_SUITE_END()
