// Runs with one process per rank. Rank 0 hosts the registry and the coordinator; every other rank
// joins it at the rendezvous address, receives the experiment (the files' contents, compiled the
// same way everywhere), builds its rank, and exchanges UCX addresses through the registry. The
// coordinator then drives the ranks exactly as in one process, through remote actor handles; data
// moves over UCX. A process that dies or a link that breaks fails the run, naming the rank, and the
// other workers stop. Every process sends heartbeats on its control-plane connections and drops a
// peer that stays silent for the peer timeout, so a cut link or a frozen host ends the run too (a
// worker then stops on its own: rank 0 is gone).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "dsl/load.hpp"
#include "runtime/cluster/protocol.hpp"
#include "runtime/exec/experiment.hpp"
#include "runtime/exec/run.hpp"

namespace loom::cluster {

struct cluster_options {
  std::string host = "127.0.0.1";   // the rendezvous: rank 0 listens here, the others connect here
  std::uint16_t port = 0;           // 0 (rank 0 only): any free port
  double join_timeout_seconds = 120;  // how long rank 0 waits for everyone, and a worker for rank 0
  double peer_timeout_seconds = 15;   // silence after which a peer process counts as gone
  std::function<void(std::uint16_t)> on_listening;  // rank 0: told the port once it listens
  std::function<void(const exec::step_progress&)> on_step;
  bool collect_tensors = false;
};

// What a run needs from its bundle, compiled.
struct loaded_run {
  exec::experiment experiment;
  dsl::loaded_schedule schedule;
};
expected<loaded_run> load_bundle(const experiment_bundle& bundle);

struct cluster_result {
  loaded_run run;
  exec::run_result result;
};

// Rank 0 of `world` ranks: listens, runs rank 0 and the coordinator, and returns the result once
// every worker is told to finish.
expected<cluster_result> run_rank_zero(const experiment_bundle& bundle, const cluster_options& opt);

// Any rank > 0 (or -1: whichever rank 0 assigns): joins rank 0 and runs its rank until the end.
expected<void> run_worker(int rank, const cluster_options& opt);

// The rank and world size a launcher gave this process: OMPI_COMM_WORLD_RANK/SIZE (Open MPI),
// PMI_RANK/PMI_SIZE (MPICH, Intel MPI), SLURM_PROCID/SLURM_NTASKS (srun), LOOM_RANK/LOOM_WORLD.
// {-1, 0} when none is set.
std::pair<int, int> launcher_rank();

}  // namespace loom::cluster
