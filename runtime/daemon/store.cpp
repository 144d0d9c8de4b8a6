#include "runtime/daemon/store.hpp"

#include <nlohmann/json.hpp>

namespace loom::daemon {

namespace {

// One prepared statement, finalized on scope exit.
class statement {
 public:
  statement(sqlite3* db, const char* sql) : db_(db) { rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~statement() { sqlite3_finalize(s_); }
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;

  bool ok() const { return rc_ == SQLITE_OK; }
  statement& bind(int i, std::int64_t v) { sqlite3_bind_int64(s_, i, v); return *this; }
  statement& bind(int i, double v) { sqlite3_bind_double(s_, i, v); return *this; }
  statement& bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  statement& bind_blob(int i, const std::string& v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return rc_ = sqlite3_step(s_); }
  std::int64_t integer(int col) const { return sqlite3_column_int64(s_, col); }
  double real(int col) const { return sqlite3_column_double(s_, col); }
  std::string text(int col) const {
    const void* p = sqlite3_column_blob(s_, col);
    int n = sqlite3_column_bytes(s_, col);
    return p ? std::string(static_cast<const char*>(p), static_cast<std::size_t>(n)) : std::string();
  }
  loom::unexpected failure(const std::string& what) const {
    return loom::unexpected(errc::io_error, "experiment store: " + what + ": " + sqlite3_errmsg(db_));
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
  int rc_;
};

constexpr const char* schema = R"sql(
CREATE TABLE IF NOT EXISTS experiments(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  file TEXT NOT NULL,
  experiment_text TEXT NOT NULL,
  overrides TEXT NOT NULL,
  schedule_main TEXT NOT NULL,
  status TEXT NOT NULL CHECK(status IN ('queued','running','done','failed','cancelled','interrupted')),
  error TEXT NOT NULL DEFAULT '',
  submitted_at REAL NOT NULL,
  started_at REAL NOT NULL DEFAULT 0,
  finished_at REAL NOT NULL DEFAULT 0,
  result_dir TEXT NOT NULL DEFAULT '',
  pid INTEGER NOT NULL DEFAULT 0,
  exit_code INTEGER NOT NULL DEFAULT -1,
  procs INTEGER NOT NULL DEFAULT 0,
  hosts INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS experiments_by_status ON experiments(status, id);
CREATE TABLE IF NOT EXISTS files(
  experiment INTEGER NOT NULL REFERENCES experiments(id),
  name TEXT NOT NULL,
  contents BLOB NOT NULL,
  PRIMARY KEY(experiment, name));
)sql";

constexpr const char* info_columns =
    "id, name, file, status, error, submitted_at, started_at, finished_at, result_dir, pid, exit_code, overrides, procs, hosts";

// Columns added after the first release of the store: a database made before them gets them.
constexpr const char* added_columns[][2] = {{"procs", "INTEGER NOT NULL DEFAULT 0"}, {"hosts", "INTEGER NOT NULL DEFAULT 0"}};

experiment_info read_info(const statement& s) {
  experiment_info x;
  x.id = s.integer(0);
  x.name = s.text(1);
  x.file = s.text(2);
  x.status = s.text(3);
  x.error = s.text(4);
  x.submitted_at = s.real(5);
  x.started_at = s.real(6);
  x.finished_at = s.real(7);
  x.result_dir = s.text(8);
  x.pid = s.integer(9);
  x.exit_code = static_cast<std::int32_t>(s.integer(10));
  auto j = nlohmann::json::parse(s.text(11), nullptr, false);
  if (j.is_array())
    for (const auto& v : j)
      if (v.is_string()) x.overrides.push_back(v.get<std::string>());
  x.procs = static_cast<std::int32_t>(s.integer(12));
  x.hosts = static_cast<std::int32_t>(s.integer(13));
  return x;
}

}  // namespace

bool allowed_transition(const std::string& from, const std::string& to) {
  if (from == "queued") return to == "running" || to == "cancelled";
  if (from == "running") return to == "done" || to == "failed" || to == "cancelled" || to == "interrupted";
  return false;  // final states never change
}

expected<std::unique_ptr<store>> store::open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string why = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return unexpected(errc::io_error, path + ": cannot open the experiment store: " + why);
  }
  std::unique_ptr<store> s(new store(db));
  sqlite3_busy_timeout(db, 5000);
  // WAL with a full sync on every commit: a committed transaction survives a crash of the process
  // and of the machine.
  for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON", schema})
    if (auto ok = s->exec(sql); !ok) return unexpected(errc::io_error, path + ": " + ok.error().message);
  for (const auto& [column, decl] : added_columns) {
    {
      statement q(db, "SELECT 1 FROM pragma_table_info('experiments') WHERE name = ?1");
      if (!q.ok()) return unexpected(errc::io_error, path + ": " + q.failure("read the schema").value.message);
      q.bind(1, std::string(column));
      if (q.step() == SQLITE_ROW) continue;
    }
    const std::string sql = std::string("ALTER TABLE experiments ADD COLUMN ") + column + " " + decl;
    if (auto ok = s->exec(sql.c_str()); !ok) return unexpected(errc::io_error, path + ": " + ok.error().message);
  }
  return s;
}

store::~store() { sqlite3_close(db_); }

expected<void> store::exec(const char* sql) const {
  char* msg = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
    std::string m = msg ? msg : "unknown error";
    sqlite3_free(msg);
    return unexpected(errc::io_error, "experiment store: " + m);
  }
  return {};
}

expected<std::int64_t> store::insert(const new_experiment& e) {
  if (auto ok = exec("BEGIN IMMEDIATE"); !ok) return unexpected(ok.error());
  auto fail = [&](loom::unexpected u) {
    (void)exec("ROLLBACK");
    return u;
  };
  std::int64_t id = 0;
  {
    statement s(db_,
                "INSERT INTO experiments(name, file, experiment_text, overrides, schedule_main, status, submitted_at, procs, hosts) "
                "VALUES(?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8)");
    if (!s.ok()) return fail(s.failure("insert"));
    s.bind(1, e.name).bind(2, e.files.experiment_name).bind(3, e.files.experiment_text);
    s.bind(4, nlohmann::json(e.files.overrides).dump()).bind(5, e.files.schedule_main).bind(6, e.submitted_at);
    s.bind(7, static_cast<std::int64_t>(e.files.procs)).bind(8, static_cast<std::int64_t>(e.files.hosts));
    if (s.step() != SQLITE_DONE) return fail(s.failure("insert"));
    id = sqlite3_last_insert_rowid(db_);
  }
  for (const auto& f : e.files.files) {
    statement s(db_, "INSERT INTO files(experiment, name, contents) VALUES(?1, ?2, ?3)");
    if (!s.ok()) return fail(s.failure("insert file"));
    s.bind(1, id).bind(2, f.name).bind_blob(3, f.contents);
    if (s.step() != SQLITE_DONE) return fail(s.failure("insert file " + f.name));
  }
  if (auto ok = exec("COMMIT"); !ok) return fail(loom::unexpected(ok.error()));
  return id;
}

expected<std::vector<experiment_info>> store::list(std::optional<std::int64_t> id) const {
  std::string sql = std::string("SELECT ") + info_columns + " FROM experiments" + (id ? " WHERE id = ?1" : "") + " ORDER BY id";
  statement s(db_, sql.c_str());
  if (!s.ok()) return s.failure("list");
  if (id) s.bind(1, *id);
  std::vector<experiment_info> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) out.push_back(read_info(s));
  if (rc != SQLITE_DONE) return s.failure("list");
  return out;
}

expected<std::optional<experiment_info>> store::get(std::int64_t id) const {
  auto l = list(id);
  if (!l) return forward_error(l);
  if (l->empty()) return std::optional<experiment_info>{};
  return std::optional<experiment_info>{std::move(l->front())};
}

expected<submission> store::submitted(std::int64_t id) const {
  submission out;
  {
    statement s(db_, "SELECT file, experiment_text, overrides, schedule_main, procs, hosts FROM experiments WHERE id = ?1");
    if (!s.ok()) return s.failure("read submission");
    s.bind(1, id);
    if (s.step() != SQLITE_ROW) return unexpected(errc::invalid_argument, "no experiment " + std::to_string(id));
    out.experiment_name = s.text(0);
    out.experiment_text = s.text(1);
    auto j = nlohmann::json::parse(s.text(2), nullptr, false);
    if (j.is_array())
      for (const auto& v : j)
        if (v.is_string()) out.overrides.push_back(v.get<std::string>());
    out.schedule_main = s.text(3);
    out.procs = static_cast<std::int32_t>(s.integer(4));
    out.hosts = static_cast<std::int32_t>(s.integer(5));
  }
  statement s(db_, "SELECT name, contents FROM files WHERE experiment = ?1 ORDER BY name");
  if (!s.ok()) return s.failure("read files");
  s.bind(1, id);
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) out.files.push_back({s.text(0), s.text(1)});
  if (rc != SQLITE_DONE) return s.failure("read files");
  return out;
}

expected<std::optional<std::int64_t>> store::next_queued() const {
  statement s(db_, "SELECT id FROM experiments WHERE status = 'queued' ORDER BY id LIMIT 1");
  if (!s.ok()) return s.failure("next queued");
  int rc = s.step();
  if (rc == SQLITE_ROW) return std::optional<std::int64_t>{s.integer(0)};
  if (rc != SQLITE_DONE) return s.failure("next queued");
  return std::optional<std::int64_t>{};
}

expected<std::vector<std::int64_t>> store::with_status(const std::string& status) const {
  statement s(db_, "SELECT id FROM experiments WHERE status = ?1 ORDER BY id");
  if (!s.ok()) return s.failure("select");
  s.bind(1, status);
  std::vector<std::int64_t> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) out.push_back(s.integer(0));
  if (rc != SQLITE_DONE) return s.failure("select");
  return out;
}

expected<bool> store::mark_running(std::int64_t id, double at, const std::string& result_dir) {
  statement s(db_, "UPDATE experiments SET status = 'running', started_at = ?2, result_dir = ?3, pid = 0 "
                   "WHERE id = ?1 AND status = 'queued'");
  if (!s.ok()) return s.failure("mark running");
  s.bind(1, id).bind(2, at).bind(3, result_dir);
  if (s.step() != SQLITE_DONE) return s.failure("mark running");
  return sqlite3_changes(db_) == 1;
}

expected<void> store::set_pid(std::int64_t id, std::int64_t pid) {
  statement s(db_, "UPDATE experiments SET pid = ?2 WHERE id = ?1");
  if (!s.ok()) return s.failure("set pid");
  s.bind(1, id).bind(2, pid);
  if (s.step() != SQLITE_DONE) return s.failure("set pid");
  return {};
}

expected<bool> store::finish(std::int64_t id, const std::string& from, const std::string& to, double at,
                             const std::string& error, std::int32_t exit_code) {
  if (!allowed_transition(from, to))
    return unexpected(errc::internal, "experiment store: no transition from " + from + " to " + to);
  statement s(db_, "UPDATE experiments SET status = ?3, finished_at = ?4, error = ?5, "
                   "exit_code = CASE WHEN ?6 < -1 THEN exit_code ELSE ?6 END WHERE id = ?1 AND status = ?2");
  if (!s.ok()) return s.failure("finish");
  s.bind(1, id).bind(2, from).bind(3, to).bind(4, at).bind(5, error).bind(6, static_cast<std::int64_t>(exit_code));
  if (s.step() != SQLITE_DONE) return s.failure("finish");
  return sqlite3_changes(db_) == 1;
}

expected<void> store::set_exit_code(std::int64_t id, std::int32_t exit_code) {
  statement s(db_, "UPDATE experiments SET exit_code = ?2 WHERE id = ?1");
  if (!s.ok()) return s.failure("set exit code");
  s.bind(1, id).bind(2, static_cast<std::int64_t>(exit_code));
  if (s.step() != SQLITE_DONE) return s.failure("set exit code");
  return {};
}

}  // namespace loom::daemon
