// Small facts about the machine and checkout for benchmark records.
#pragma once

#include <string>

namespace nf {

// The first output of a shell command, trailing newlines and spaces removed ("" on failure).
std::string shell_line(const char* cmd);

// The commit the binary was built from: $NF_GIT_COMMIT when set (a source snapshot without
// .git, e.g. on the GPU machine), else `git rev-parse HEAD` in the working directory.
std::string git_commit();

}  // namespace nf
