// Errors. Two kinds, kept apart:
//  - nf::Error: something the user caused (bad file, bad argument, out of memory). Parsers throw
//    it; public entry points turn it into a Result, and the CLI prints its one-line message and
//    exits with code 2.
//  - NF_CHECK: an internal invariant. Failing it is a bug: print the context and abort.
#pragma once

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

namespace nf {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

// A value or the message of a user-caused error.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  static Result error(std::string msg) { return Result(ErrorTag{}, std::move(msg)); }

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  const std::string& error() const { return std::get<1>(v_); }
  // The value, or throw the error as nf::Error.
  T take() && {
    if (!ok()) throw Error(error());
    return std::get<0>(std::move(v_));
  }

 private:
  struct ErrorTag {};
  Result(ErrorTag, std::string msg) : v_(std::in_place_index<1>, std::move(msg)) {}
  std::variant<T, std::string> v_;
};

// Runs fn() and turns an nf::Error it throws into an error Result.
template <typename Fn>
auto capture(Fn&& fn) -> Result<decltype(fn())> {
  try {
    return Result<decltype(fn())>(fn());
  } catch (const Error& e) {
    return Result<decltype(fn())>::error(e.what());
  }
}

[[noreturn]] void check_failed(const char* file, int line, const char* cond, const std::string& msg);

}  // namespace nf

#define NF_CHECK(cond, ...)                                                                  \
  do {                                                                                       \
    if (!(cond)) ::nf::check_failed(__FILE__, __LINE__, #cond, ::fmt::format("" __VA_ARGS__)); \
  } while (0)
