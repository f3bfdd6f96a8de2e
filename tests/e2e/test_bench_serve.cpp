// `nanoflow bench serve`: the metric definitions (vLLM's benchmark_serving.py) on hand-made
// request results, then the command against a real `nanoflow serve` on the default model,
// checking that its JSON is complete and self-consistent. No timing thresholds: only counts,
// orderings and identities that hold however fast the machine is.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <regex>
#include <thread>

#include "common/status.h"
#include "bench/bench_serve.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
const fs::path kSource = NANOFLOW_SOURCE_DIR;
const std::string kBinary = NANOFLOW_BINARY;
const fs::path kSmol = kSource / "models/SmolLM2-135M-Instruct.Q4_1.gguf";

TEST(BenchServeMetrics, PercentileIsNumpyLinear) {
  using nf::server::percentile;
  EXPECT_DOUBLE_EQ(percentile({1, 2, 3, 4}, 50), 2.5);
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 99), 3.97);
  EXPECT_DOUBLE_EQ(percentile({20, 0, 10}, 99), 19.8);
  EXPECT_DOUBLE_EQ(percentile({5}, 99), 5);
  EXPECT_DOUBLE_EQ(percentile({}, 50), 0);
  EXPECT_DOUBLE_EQ(percentile({1, 2, 3}, 100), 3);
  EXPECT_DOUBLE_EQ(percentile({1, 2, 3}, 0), 1);
}

TEST(BenchServeMetrics, SloParsing) {
  const auto s = nf::server::parse_slo("ttft=500,tpot:50");
  EXPECT_EQ(*s.ttft_ms, 500);
  EXPECT_EQ(*s.tpot_ms, 50);
  EXPECT_FALSE(s.e2el_ms);
  EXPECT_TRUE(nf::server::parse_slo("").empty());
  EXPECT_THROW(nf::server::parse_slo("ttft=abc"), nf::Error);
  EXPECT_THROW(nf::server::parse_slo("latency=5"), nf::Error);
  EXPECT_THROW(nf::server::parse_slo("tpot=-1"), nf::Error);
}

TEST(BenchServeMetrics, DefinitionsMatchVllm) {
  using nf::server::RequestResult;
  RequestResult a;  // 5 tokens: TTFT 100 ms, then 4 gaps of 100 ms
  a.success = true;
  a.prompt_len = 10;
  a.output_tokens = 5;
  a.ttft = 0.1;
  a.latency = 0.5;
  a.itl = {0.1, 0.1, 0.1, 0.1};
  RequestResult b;  // one token: no TPOT, but TPOT 0 for goodput
  b.success = true;
  b.prompt_len = 20;
  b.output_tokens = 1;
  b.ttft = 0.3;
  b.latency = 0.3;
  RequestResult c;  // failed: counted in input_lens, nowhere else
  c.prompt_len = 30;
  c.error = "HTTP 503";
  const std::vector<RequestResult> rs = {a, b, c};

  const json m = nf::server::compute_serve_metrics(rs, 2.0, nf::server::parse_slo("ttft=200"));
  EXPECT_EQ(m["completed"], 2);
  EXPECT_EQ(m["failed"], 1);
  EXPECT_EQ(m["total_input_tokens"], 30);
  EXPECT_EQ(m["total_output_tokens"], 6);
  EXPECT_DOUBLE_EQ(m["request_throughput"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(m["output_throughput"].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(m["total_token_throughput"].get<double>(), 18.0);
  EXPECT_DOUBLE_EQ(m["request_goodput"].get<double>(), 0.5);  // a meets TTFT <= 200 ms, b not
  EXPECT_NEAR(m["mean_tpot_ms"].get<double>(), 100, 1e-9);    // a only
  EXPECT_NEAR(m["mean_ttft_ms"].get<double>(), 200, 1e-9);
  EXPECT_NEAR(m["median_ttft_ms"].get<double>(), 200, 1e-9);
  EXPECT_NEAR(m["p99_ttft_ms"].get<double>(), 298, 1e-9);
  EXPECT_NEAR(m["std_ttft_ms"].get<double>(), 100, 1e-9);
  EXPECT_NEAR(m["mean_itl_ms"].get<double>(), 100, 1e-9);
  EXPECT_NEAR(m["mean_e2el_ms"].get<double>(), 400, 1e-9);
  EXPECT_EQ(m["output_lens"], json({5, 1, 0}));
  EXPECT_EQ(m["input_lens"], json({10, 20, 30}));
  EXPECT_EQ(m["errors"][2], "HTTP 503");

  // Every SLO must hold: a's TPOT of 100 ms misses 50 ms; b's one token counts as TPOT 0.
  const json both = nf::server::compute_serve_metrics(rs, 2.0, nf::server::parse_slo("tpot=50"));
  EXPECT_DOUBLE_EQ(both["request_goodput"].get<double>(), 0.5);
  const json none = nf::server::compute_serve_metrics(rs, 2.0, {});
  EXPECT_TRUE(none["request_goodput"].is_null());
  const json empty = nf::server::compute_serve_metrics({c}, 1.0, {});
  EXPECT_EQ(empty["completed"], 0);
  EXPECT_EQ(empty["mean_ttft_ms"], 0.0);
}

// ---------------------------------------------------------------------------------------------
// Against a real server.

struct Cmd {
  int code = -1;
  std::string out, err;
};

fs::path temp_dir() {
  const fs::path d = fs::temp_directory_path() / ("nf_bench_serve_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

Cmd run_cli(const std::string& args) {
  const fs::path out = temp_dir() / "out", err = temp_dir() / "err";
  const std::string cmd = kBinary + " " + args + " >" + out.string() + " 2>" + err.string();
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

// `nanoflow serve` on a port the kernel picks (--port 0), read back from its first stderr line.
class ServerProcess {
 public:
  void start() {
    log_ = temp_dir() / "server.err";
    pid_ = fork();
    if (pid_ == 0) {
      if (!freopen(log_.c_str(), "w", stderr)) _exit(127);
      if (!freopen("/dev/null", "w", stdout)) _exit(127);
      execl(kBinary.c_str(), kBinary.c_str(), "serve", "--model", kSmol.c_str(), "--port", "0",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    ASSERT_GT(pid_, 0);
    const std::regex listening("listening on (http://[0-9.]+:[0-9]+)");
    for (int i = 0; i < 1200 && url_.empty(); ++i) {
      std::smatch m;
      const std::string log = slurp(log_);
      if (std::regex_search(log, m, listening)) url_ = m[1];
      int status = 0;
      ASSERT_EQ(waitpid(pid_, &status, WNOHANG), 0) << "the server exited: " << log;
      if (url_.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_FALSE(url_.empty()) << "no 'listening on' from the server: " << slurp(log_);
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
  }
  const std::string& url() const { return url_; }

 private:
  pid_t pid_ = -1;
  fs::path log_;
  std::string url_;
};

class BenchServeE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(kSmol)) return;
    server_ = new ServerProcess();
    server_->start();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    if (!fs::exists(kSmol)) GTEST_SKIP() << "no " << kSmol << " (scripts/fetch_model.sh)";
    ASSERT_TRUE(server_ && !server_->url().empty());
  }
  static ServerProcess* server_;
};
ServerProcess* BenchServeE2E::server_ = nullptr;

// One run's JSON: every field there, and the numbers consistent with each other.
void check_run(const json& j, int num_prompts, int input_len, int output_len) {
  for (const char* key : {"command",
                          "git_commit",
                          "date",
                          "base_url",
                          "endpoint",
                          "model",
                          "dataset",
                          "request_rate",
                          "max_concurrency",
                          "num_prompts",
                          "seed",
                          "slo",
                          "failed_requests",
                          "duration",
                          "completed",
                          "failed",
                          "total_input_tokens",
                          "total_output_tokens",
                          "request_throughput",
                          "request_goodput",
                          "output_throughput",
                          "total_token_throughput",
                          "input_lens",
                          "output_lens",
                          "ttfts",
                          "itls",
                          "e2els",
                          "errors"})
    EXPECT_TRUE(j.contains(key)) << key;
  for (const char* metric : {"ttft", "tpot", "itl", "e2el"})
    for (const char* stat : {"mean", "median", "std", "p99"})
      EXPECT_TRUE(j.contains(fmt::format("{}_{}_ms", stat, metric))) << stat << "_" << metric;

  EXPECT_EQ(j["num_prompts"], num_prompts);
  EXPECT_EQ(j["completed"], num_prompts) << j["errors"].dump();
  EXPECT_EQ(j["failed"], 0);
  EXPECT_EQ(j["failed_requests"], 0);
  EXPECT_EQ(j["total_input_tokens"], num_prompts * input_len);
  EXPECT_EQ(j["total_output_tokens"], num_prompts * output_len);
  EXPECT_GT(j["duration"].get<double>(), 0);
  const double dur = j["duration"].get<double>();
  EXPECT_NEAR(j["request_throughput"].get<double>(), num_prompts / dur, 1e-9);
  EXPECT_NEAR(j["output_throughput"].get<double>(), num_prompts * output_len / dur, 1e-6);
  EXPECT_NEAR(j["total_token_throughput"].get<double>(),
              num_prompts * (input_len + output_len) / dur, 1e-6);
  for (const char* metric : {"ttft", "tpot", "itl", "e2el"}) {
    const double med = j[fmt::format("median_{}_ms", metric)];
    const double p99 = j[fmt::format("p99_{}_ms", metric)];
    EXPECT_GT(med, 0) << metric;
    EXPECT_LE(med, p99) << metric;
  }
  // Percentiles lie within the values they summarize.
  const auto ttfts = j["ttfts"].get<std::vector<double>>();
  const auto [lo, hi] = std::minmax_element(ttfts.begin(), ttfts.end());
  EXPECT_GE(j["median_ttft_ms"].get<double>(), *lo * 1000 - 1e-9);
  EXPECT_LE(j["p99_ttft_ms"].get<double>(), *hi * 1000 + 1e-9);
  // TTFT < E2E latency for every request, and each request's gaps add up to E2E - TTFT:
  // one gap per streamed token after the first (our server streams one token per chunk).
  ASSERT_EQ(j["ttfts"].size(), static_cast<size_t>(num_prompts));
  for (int i = 0; i < num_prompts; ++i) {
    EXPECT_EQ(j["input_lens"][i], input_len);
    EXPECT_EQ(j["output_lens"][i], output_len);
    EXPECT_EQ(j["errors"][i], "");
    const double ttft = j["ttfts"][i], e2el = j["e2els"][i];
    EXPECT_LT(ttft, e2el);
    const auto itl = j["itls"][i].get<std::vector<double>>();
    ASSERT_EQ(itl.size(), static_cast<size_t>(output_len - 1));
    EXPECT_NEAR(std::accumulate(itl.begin(), itl.end(), 0.0), e2el - ttft, 1e-6);
  }
  if (!j["request_goodput"].is_null())  // null without --slo
    EXPECT_LE(j["request_goodput"].get<double>(), j["request_throughput"].get<double>() + 1e-12);
}

TEST_F(BenchServeE2E, PoissonRunWritesCompleteJson) {
  const fs::path result = temp_dir() / "run.json";
  const Cmd r = run_cli("bench serve --base-url " + server_->url() +
                        " --random-input-len 16 --random-output-len 8 --num-prompts 8"
                        " --request-rate 20 --max-concurrency 4 --seed 3"
                        " --slo ttft=100000,tpot=100000 --result-json " +
                        result.string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("Serving Benchmark Result"), std::string::npos);
  EXPECT_NE(r.out.find("Request goodput (req/s):"), std::string::npos);
  const json j = json::parse(slurp(result));
  check_run(j, 8, 16, 8);
  EXPECT_EQ(j["request_rate"], 20.0);
  EXPECT_EQ(j["max_concurrency"], 4);
  EXPECT_EQ(j["dataset"], "random");
  EXPECT_EQ(j["base_url"], server_->url());
  EXPECT_EQ(j["model"], kSmol.string());  // from GET /v1/models
  EXPECT_NE(j["command"].get<std::string>().find("--request-rate 20"), std::string::npos);
  // SLOs of 100 s: every completed request is good.
  EXPECT_DOUBLE_EQ(j["request_goodput"].get<double>(), j["request_throughput"].get<double>());
}

TEST_F(BenchServeE2E, SweepWritesOneRunPerRate) {
  const fs::path result = temp_dir() / "sweep.json";
  const Cmd r = run_cli("bench serve --base-url " + server_->url() +
                        "/v1 --random-input-len 16 --random-output-len 4 --num-prompts 4"
                        " --sweep 50,inf --result-json " +
                        result.string());
  ASSERT_EQ(r.code, 0) << r.err;
  const json j = json::parse(slurp(result));
  ASSERT_TRUE(j.contains("sweep"));
  ASSERT_EQ(j["sweep"].size(), 2u);
  EXPECT_EQ(j["sweep"][0]["request_rate"], 50.0);
  EXPECT_EQ(j["sweep"][1]["request_rate"], "inf");
  EXPECT_TRUE(j["sweep"][0]["request_goodput"].is_null());  // no --slo
  for (const auto& run : j["sweep"]) check_run(run, 4, 16, 4);
}

TEST_F(BenchServeE2E, TraceDataset) {
  // The first 3 Azure conversation requests that fit in 512 tokens, all at once.
  const fs::path trace = temp_dir() / "trace.csv";
  std::ofstream(trace) << "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                          "2023-11-16 18:15:46.6805900,30,3\n"
                          "2023-11-16 18:15:46.7805900,5000,3\n"
                          "2023-11-16 18:15:46.8805900,20,2\n"
                          "2023-11-16 18:15:46.9805900,10,5\n";
  const fs::path result = temp_dir() / "trace.json";
  const Cmd r =
      run_cli("bench serve --base-url " + server_->url() + " --dataset " + trace.string() +
              " --max-model-len 512 --num-prompts 3 --request-rate trace"
              " --result-json " +
              result.string());
  ASSERT_EQ(r.code, 0) << r.err;
  const json j = json::parse(slurp(result));
  EXPECT_EQ(j["completed"], 3);
  EXPECT_EQ(j["input_lens"], json({30, 20, 10}));
  EXPECT_EQ(j["output_lens"], json({3, 2, 5}));
  EXPECT_EQ(j["total_output_tokens"], 10);
  EXPECT_EQ(j["dataset"], trace.string());
}

TEST_F(BenchServeE2E, UserErrorsAreOneLine) {
  // Nothing listens on port 1.
  const Cmd down = run_cli(
      "bench serve --base-url http://127.0.0.1:1 --random-input-len 4"
      " --random-output-len 2 --num-prompts 1 --request-rate inf");
  EXPECT_EQ(down.code, 2);
  EXPECT_NE(down.err.find("nanoflow: error:"), std::string::npos) << down.err;
  const Cmd bad_rate = run_cli("bench serve --base-url " + server_->url() +
                               " --random-input-len 4 --random-output-len 2 --num-prompts 1"
                               " --request-rate fast");
  EXPECT_EQ(bad_rate.code, 2);
  EXPECT_NE(bad_rate.err.find("request rate 'fast'"), std::string::npos) << bad_rate.err;
  const Cmd no_input =
      run_cli("bench serve --base-url " + server_->url() + " --num-prompts 1 --request-rate inf");
  EXPECT_EQ(no_input.code, 2);
  EXPECT_NE(no_input.err.find("--dataset"), std::string::npos) << no_input.err;
  // A model the server does not serve: the test request fails before anything is measured.
  const Cmd bad_model = run_cli("bench serve --base-url " + server_->url() +
                                " --model no-such-model --random-input-len 4 --random-output-len 2"
                                " --num-prompts 1 --request-rate inf");
  EXPECT_EQ(bad_model.code, 2);
  EXPECT_NE(bad_model.err.find("test request"), std::string::npos) << bad_model.err;
  EXPECT_NE(bad_model.err.find("HTTP 404"), std::string::npos) << bad_model.err;
}

}  // namespace
