#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace nf {
namespace {

LogLevel level_from_env() {
  const char* v = std::getenv("NANOFLOW_LOG");
  if (!v) return LogLevel::Warn;
  if (!std::strcmp(v, "debug")) return LogLevel::Debug;
  if (!std::strcmp(v, "info")) return LogLevel::Info;
  if (!std::strcmp(v, "error")) return LogLevel::Error;
  return LogLevel::Warn;
}

std::atomic<LogLevel>& level_ref() {
  static std::atomic<LogLevel> level{level_from_env()};
  return level;
}

}  // namespace

LogLevel log_level() { return level_ref().load(std::memory_order_relaxed); }
void set_log_level(LogLevel level) { level_ref().store(level); }

void log_write(LogLevel level, const std::string& msg) {
  static std::mutex mu;
  static const char* names[] = {"debug", "info", "warn", "error"};
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(stderr, "nanoflow [%s] %s\n", names[static_cast<int>(level)], msg.c_str());
}

}  // namespace nf
