// Error handling for library code: functions that can fail on a user's input return
// Expected<T> (a value or an Error) instead of throwing or exiting. Error messages are one
// line and name the thing that is wrong ("models/x.gguf: tensor 'a' ends past the file").
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace draftwise {

struct Error {
  std::string message;
};

template <typename... Args>
[[nodiscard]] Error make_error(fmt::format_string<Args...> format, Args&&... args) {
  return Error{fmt::format(format, std::forward<Args>(args)...)};
}

template <typename T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : storage_(std::in_place_index<0>, std::move(value)) {}
  Expected(Error error) : storage_(std::in_place_index<1>, std::move(error)) {}

  bool ok() const { return storage_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(storage_); }
  const T& value() const& { return std::get<0>(storage_); }
  T&& value() && { return std::get<0>(std::move(storage_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const& { return std::get<1>(storage_); }
  Error&& error() && { return std::get<1>(std::move(storage_)); }

 private:
  std::variant<T, Error> storage_;
};

template <>
class [[nodiscard]] Expected<void> {
 public:
  Expected() = default;
  Expected(Error error) : error_(std::move(error)) {}

  bool ok() const { return !error_.has_value(); }
  explicit operator bool() const { return ok(); }
  const Error& error() const& { return *error_; }
  Error&& error() && { return std::move(*error_); }

 private:
  std::optional<Error> error_;
};

using Status = Expected<void>;

}  // namespace draftwise

#define DW_CONCAT_INNER(a, b) a##b
#define DW_CONCAT(a, b) DW_CONCAT_INNER(a, b)

// Returns the error of `expr` (a Status or Expected) from the enclosing function.
#define DW_TRY(expr)                            \
  do {                                          \
    auto dw_try_result_ = (expr);               \
    if (!dw_try_result_.ok()) {                 \
      return std::move(dw_try_result_).error(); \
    }                                           \
  } while (0)

// `DW_ASSIGN_OR_RETURN(auto x, f());` declares x from f()'s value or returns its error.
#define DW_ASSIGN_OR_RETURN(lhs, expr) \
  DW_ASSIGN_OR_RETURN_IMPL(DW_CONCAT(dw_expected_, __LINE__), lhs, expr)
#define DW_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) {                               \
    return std::move(tmp).error();               \
  }                                              \
  lhs = std::move(tmp).value()
