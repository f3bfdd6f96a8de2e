// The nanoflow binary as a user runs it: output formats, --help, and bad input (one line on
// stderr naming the file and the tensor or key, exit code 2, nothing on stdout).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sys/wait.h>

namespace {

namespace fs = std::filesystem;
const fs::path kSource = NANOFLOW_SOURCE_DIR;
const std::string kBinary = NANOFLOW_BINARY;
const fs::path kSmol = kSource / "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const fs::path kTiny = kSource / "tests/fixtures/models";

struct CliRun {
  int code = -1;
  std::string out, err;
};

CliRun run(const std::string& args, const std::string& stdin_text = "") {
  const fs::path dir = fs::temp_directory_path() / ("nf_cli_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path in = dir / "in", out = dir / "out", err = dir / "err";
  std::ofstream(in) << stdin_text;
  const std::string cmd = kBinary + " " + args + " <" + in.string() + " >" + out.string() + " 2>" + err.string();
  const int status = std::system(cmd.c_str());
  CliRun r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto slurp = [](const fs::path& p) {
    std::ifstream f(p);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  };
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

// A copy of a tiny fixture model in a temp dir, to break on purpose.
fs::path copy_model(const std::string& name, const std::string& tag) {
  const fs::path dst = fs::temp_directory_path() / ("nf_cli_model_" + tag + std::to_string(::getpid()));
  fs::remove_all(dst);
  fs::copy(kTiny / name, dst, fs::copy_options::recursive);
  return dst;
}

void edit_config(const fs::path& dir, const std::function<void(nlohmann::json&)>& fn) {
  nlohmann::json j;
  {
    std::ifstream f(dir / "config.json");
    j = nlohmann::json::parse(f);
  }
  fn(j);
  std::ofstream(dir / "config.json") << j.dump(2);
}

void expect_user_error(const CliRun& r, const std::vector<std::string>& words) {
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_TRUE(r.out.empty()) << "stdout: " << r.out;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  for (const auto& w : words) EXPECT_NE(r.err.find(w), std::string::npos) << "'" << w << "' not in: " << r.err;
}

TEST(Cli, HelpForEverySubcommand) {
  for (const char* sub : {"", "generate", "tokenize", "bench offline"}) {
    const CliRun r = run(std::string(sub) + " --help");
    EXPECT_EQ(r.code, 0) << sub;
    EXPECT_NE(r.out.find("--"), std::string::npos) << sub;
  }
  EXPECT_NE(run("generate --help").out.find("--logprobs"), std::string::npos);
}

// bench offline's multi-turn mode with the KV offload tiers, on a tiny model and a pool too
// small for the conversations: the result JSON counts the prompt tokens of every turn and says
// which tier served the cached ones; offload off computes them all but the device hits.
TEST(Cli, BenchOfflineMultiTurnReportsTheOffloadTiers) {
  const fs::path dir = fs::temp_directory_path() / ("nf_cli_kv_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  auto bench = [&](const std::string& extra, const std::string& name) {
    const fs::path out = dir / (name + ".json");
    fs::create_directories(dir);
    const CliRun r = run("bench offline --model " + (kTiny / "llama3-tiny").string() +
                         " --num-requests 6 --turns 3 --input-len 40 --output-len 8"
                         " --kv-cache-gb 0.00018311 --max-batch-tokens 128 --threads 2 " +
                         extra + " --result-json " + out.string());
    EXPECT_EQ(r.code, 0) << r.err;
    std::ifstream f(out);
    return nlohmann::json::parse(f);
  };
  const nlohmann::json off = bench("", "off");
  const nlohmann::json on = bench(
      "--kv-host-gb 0.0001 --kv-disk-dir " + (dir / "kv").string() + " --kv-disk-gb 0.01", "on");
  for (const auto* j : {&off, &on}) {
    // Energy is read through NVML on a GPU; on the CPU the fields are there, and null.
    for (const char* k :
         {"energy_j", "mean_power_w_per_gpu", "joules_per_token", "pct_of_optimum_energy"}) {
      EXPECT_TRUE(j->contains(k)) << k;
      EXPECT_TRUE((*j)[k].is_null()) << k;
    }
    EXPECT_EQ((*j)["turns"], 3);
    EXPECT_EQ((*j)["conversations"], 6);
    EXPECT_EQ((*j)["num_requests"], 18);
    EXPECT_EQ((*j)["output_tokens"], 18 * 8);
    EXPECT_EQ((*j)["per_turn"].size(), 3u);
    EXPECT_GT((*j)["ttft_s"]["p50"].get<double>(), 0);
  }
  // Turn t's prompt is 40 (t + 1) + 8 t tokens: 6 * (40 + 88 + 136).
  EXPECT_EQ(on["prompt_tokens"], 6 * (40 + 88 + 136));
  EXPECT_EQ(off["prompt_tokens"], on["prompt_tokens"]);
  const auto& hits = on["kv_offload"]["prefix_hit_tokens"];
  EXPECT_GT(hits["host"].get<int64_t>() + hits["disk"].get<int64_t>(), 0);
  EXPECT_GT(hits["disk"].get<int64_t>(), 0);  // the host tier holds few blocks
  EXPECT_EQ(off["kv_offload"]["prefix_hit_tokens"]["host"], 0);
  EXPECT_GT(on["kv_offload"]["prefill_tokens_saved"].get<int64_t>(),
            off["kv_offload"]["prefill_tokens_saved"].get<int64_t>());
  // The computed tokens' rate: prompt tokens not served by a cache, and the output.
  for (const auto* j : {&off, &on}) {
    const int64_t computed = (*j)["kv_offload"]["prefill_tokens_computed"].get<int64_t>() +
                             (*j)["output_tokens"].get<int64_t>();
    EXPECT_NEAR((*j)["computed_tokens_per_s"].get<double>() * (*j)["elapsed_s"].get<double>(),
                static_cast<double>(computed), 1e-6 * static_cast<double>(computed));
  }
  fs::remove_all(dir);
}

TEST(Cli, GenerateJsonMatchesGolden) {
  std::ifstream f(kSource / "tests/fixtures/golden/llama3-tiny.json");
  const auto g = nlohmann::json::parse(f);
  const auto& c = g["cases"][1];
  std::string ids;
  for (int id : c["prompt_ids"]) ids += (ids.empty() ? "" : ",") + std::to_string(id);
  const CliRun r = run("generate --model " + (kTiny / "llama3-tiny").string() + " --prompt-ids " + ids +
                    " --max-tokens 16 --temperature 0 --ignore-eos --logprobs 5 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["token_ids"], c["greedy_ids"]);
  EXPECT_EQ(j["finish_reason"], "length");
  ASSERT_EQ(j["logprobs"].size(), 16u);
  EXPECT_EQ(j["logprobs"][0].size(), 5u);
  EXPECT_EQ(j["logprobs"][0][0][0], c["greedy_ids"][0]);
  EXPECT_NEAR(j["logprobs"][0][0][1].get<double>(), c["top5"][0][0][1].get<double>(), 2e-3);
  EXPECT_TRUE(j["text"].is_string());
}

TEST(Cli, TokenizeAndGenerateText) {
  if (!fs::exists(kSmol)) GTEST_SKIP() << "default model not fetched";
  CliRun r = run("tokenize --model " + kSmol.string(), "Hello world");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto ids = nlohmann::json::parse(r.out);
  ASSERT_TRUE(ids.is_array());
  EXPECT_EQ(ids.size(), 2u);
  r = run("generate --model " + kSmol.string() +
          " --prompt 'The capital of France is' --max-tokens 8 --temperature 0 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_NE(j["text"].get<std::string>().find("Paris"), std::string::npos) << j["text"];
}

TEST(Cli, BatchModeKeepsInputOrderAndMatchesSingleRuns) {
  const std::string model = (kTiny / "llama3-tiny").string();
  const fs::path dir = fs::temp_directory_path() / ("nf_cli_batch" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    std::ofstream in(dir / "in.jsonl");
    in << R"({"prompt_ids": [5, 6, 7, 8, 9, 10, 11], "max_tokens": 9, "temperature": 0, "ignore_eos": true})" << "\n";
    in << "\n";  // blank lines are skipped
    in << R"({"prompt": "hello world", "max_tokens": 5, "temperature": 0.9, "seed": 4, "n": 3, "ignore_eos": true})" << "\n";
    in << R"({"prompt_ids": [40], "max_tokens": 3, "temperature": 0, "logprobs": 2, "ignore_eos": true})" << "\n";
  }
  const CliRun r = run("generate --model " + model + " --input " + (dir / "in.jsonl").string() + " --output " +
                       (dir / "out.jsonl").string());
  ASSERT_EQ(r.code, 0) << r.err;
  std::ifstream f(dir / "out.jsonl");
  std::vector<nlohmann::json> lines;
  for (std::string l; std::getline(f, l);) lines.push_back(nlohmann::json::parse(l));
  ASSERT_EQ(lines.size(), 3u);
  const CliRun single = run("generate --model " + model +
                            " --prompt-ids 5,6,7,8,9,10,11 --max-tokens 9 --temperature 0 --ignore-eos --json");
  ASSERT_EQ(single.code, 0) << single.err;
  EXPECT_EQ(lines[0]["token_ids"], nlohmann::json::parse(single.out)["token_ids"]);
  ASSERT_EQ(lines[1]["choices"].size(), 3u);
  for (const auto& c : lines[1]["choices"]) EXPECT_EQ(c["token_ids"].size(), 5u);
  EXPECT_EQ(lines[2]["logprobs"].size(), 3u);
  EXPECT_EQ(lines[2]["logprobs"][0].size(), 2u);

  std::ofstream(dir / "bad.jsonl") << R"({"prompt_ids": [1], "temperature": "hot"})" << "\n";
  expect_user_error(run("generate --model " + model + " --input " + (dir / "bad.jsonl").string() + " --output " +
                        (dir / "out2.jsonl").string()),
                    {"bad.jsonl:1", "temperature"});
}

TEST(Cli, BadInputIsOneLineAndExitCode2) {
  const std::string gen = " --prompt-ids 1,2,3 --max-tokens 2";
  expect_user_error(run("generate --model /nonexistent/model.gguf" + gen), {"/nonexistent/model.gguf"});

  const fs::path dir = fs::temp_directory_path() / ("nf_cli_bad" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path bad_magic = dir / "bad_magic.gguf";
  std::ofstream(bad_magic) << "this is not a gguf file at all";
  expect_user_error(run("generate --model " + bad_magic.string() + gen), {"bad_magic.gguf", "magic"});

  if (fs::exists(kSmol)) {
    const fs::path trunc = dir / "truncated.gguf";
    std::ifstream in(kSmol, std::ios::binary);
    std::vector<char> buf(20 << 20);
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    std::ofstream(trunc, std::ios::binary).write(buf.data(), static_cast<std::streamsize>(buf.size()));
    expect_user_error(run("generate --model " + trunc.string() + gen), {"truncated.gguf"});
  }

  fs::path m = copy_model("llama3-tiny", "arch");
  edit_config(m, [](nlohmann::json& j) { j["architectures"] = {"GPT2LMHeadModel"}; });
  expect_user_error(run("generate --model " + m.string() + gen), {"config.json", "architectures"});

  m = copy_model("llama3-tiny", "shape");
  edit_config(m, [](nlohmann::json& j) { j["intermediate_size"] = 256; });
  expect_user_error(run("generate --model " + m.string() + gen), {"mlp", "shape"});

  m = copy_model("llama3-tiny", "missing");
  edit_config(m, [](nlohmann::json& j) { j["num_hidden_layers"] = 3; });
  expect_user_error(run("generate --model " + m.string() + gen), {"model.layers.2."});

  m = copy_model("llama3-tiny", "trunc_st");
  fs::resize_file(m / "model.safetensors", fs::file_size(m / "model.safetensors") / 2);
  expect_user_error(run("generate --model " + m.string() + gen), {"model.safetensors"});

  expect_user_error(run("generate --model " + (kTiny / "llama3-tiny").string() + " --prompt-ids 1,99999"),
                    {"99999"});
  const CliRun r = run("generate --model " + (kTiny / "llama3-tiny").string() + " --max-tokens 0 --prompt-ids 1");
  EXPECT_EQ(r.code, 2);
}

// A bad line of a batch file (issue 20): the error names <file>:<line>, and no output file is
// left behind.
TEST(Cli, BatchErrorsNameTheLineAndLeaveNoOutputFile) {
  const fs::path dir = fs::temp_directory_path() / ("nf_cli_batch_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string model = (kTiny / "llama3-tiny").string();
  struct Case {
    std::string line2, expect;
  };
  for (const Case& k :
       {Case{R"({"prompt_ids": [1, 99999], "max_tokens": 2})", "outside the vocabulary"},
        Case{R"({"prompt_ids": [4294967297]})", "prompt_ids"},
        Case{R"({"prompt": "x", "min_tokens": 5, "max_tokens": 2})", "min_tokens"},
        Case{R"({"prompt": "x", "max_tokens": 1e400})", "out of range"},
        Case{"{\"prompt\": " + std::string(500, '[') + "}", "nested deeper"}}) {
    std::ofstream(dir / "in.jsonl") << "{\"prompt\": \"hello\", \"max_tokens\": 2}\n\n"
                                    << k.line2 << "\n";
    fs::remove(dir / "out.jsonl");
    const CliRun r = run("generate --model " + model + " --input " + (dir / "in.jsonl").string() +
                         " --output " + (dir / "out.jsonl").string());
    EXPECT_EQ(r.code, 2) << k.line2;
    EXPECT_NE(r.err.find("in.jsonl:3"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(k.expect), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir / "out.jsonl")) << k.line2;
  }
}

}  // namespace
