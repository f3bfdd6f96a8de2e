#include "common/shell.h"

#include <cstdio>
#include <cstdlib>

namespace nf {

std::string shell_line(const char* cmd) {
  std::string out;
  if (FILE* f = popen(cmd, "r")) {
    char buf[256];
    while (fgets(buf, sizeof buf, f)) out += buf;
    pclose(f);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

std::string git_commit() {
  if (const char* c = std::getenv("NF_GIT_COMMIT"); c != nullptr && *c != '\0') return c;
  return shell_line("git rev-parse HEAD 2>/dev/null");
}

}  // namespace nf
