// Reading small JSON files (configs, indexes) with user-facing errors.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace nf {

// Throws nf::Error "<path>: cannot open" or "<path>: invalid JSON: ...".
nlohmann::json read_json_file(const std::string& path);

}  // namespace nf
