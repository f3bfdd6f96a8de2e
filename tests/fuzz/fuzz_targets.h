// Fuzz targets: untrusted bytes against the code that parses them. Each target returns normally
// when its input is served or refused with a user error (nf::Error, an API error); any other
// outcome (another exception, an abort, a sanitizer report) is a bug. The targets run in CTest
// under a seeded mutation loop bounded in time (test_fuzz.cpp); run_target() is also the body a
// libFuzzer entry point would call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nf::fuzz {

enum class Target {
  kRequest,        // an HTTP body for /v1/completions or /v1/chat/completions, parsed,
                   // validated, tokenized and run for a token or two on a tiny model
  kGguf,           // a GGUF file: the weight loader and the GGUF tokenizer
  kSafetensors,    // a safetensors file beside a valid config.json: the weight loader
  kTokenizerJson,  // a tokenizer.json: loaded, then used on a few texts
  kText,           // text encoded and decoded (and ids detokenized) by real tokenizers
};

const char* target_name(Target t);
std::vector<Target> all_targets();

// Runs one input. The targets' fixed parts (models, tokenizers, an engine) are built once.
void run_target(Target t, std::string_view data);

// How many inputs of the target were accepted all the way (served, loaded, ...) so far: a harness
// that refuses everything at the first check tests nothing deep.
int64_t accepted(Target t);

// Valid inputs to start mutating from.
std::vector<std::string> seed_corpus(Target t);

// Tokens a mutation may splice in (JSON syntax and hostile numbers, GGUF type codes, ...).
std::vector<std::string> dictionary(Target t);

}  // namespace nf::fuzz
