// loom::expected<T>: a value or a loom::error, in the shape of C++23's std::expected.
//
// Our own small version because the toolchains we build with (g++ 12 in C++20 mode, clang 14 for the
// fuzzers, nvcc) do not all offer std::expected. Only the parts loom uses are here.
#pragma once

#include <cassert>
#include <type_traits>
#include <utility>
#include <variant>

#include "support/error.hpp"

namespace loom {

// Wraps an error on its way into an expected: `return unexpected(errc::io_error, "...")`.
struct unexpected {
  loom::error value;
  explicit unexpected(loom::error e) : value(std::move(e)) {}
  unexpected(errc code, std::string message) : value(code, std::move(message)) {}
};

template <class T>
class [[nodiscard]] expected {
 public:
  using value_type = T;

  expected() requires std::is_default_constructible_v<T> : storage_(std::in_place_index<0>) {}
  expected(const T& v) : storage_(std::in_place_index<0>, v) {}
  expected(T&& v) : storage_(std::in_place_index<0>, std::move(v)) {}
  template <class U>
    requires(std::is_constructible_v<T, U&&> && !std::is_same_v<std::decay_t<U>, T> &&
             !std::is_same_v<std::decay_t<U>, unexpected> && !std::is_same_v<std::decay_t<U>, expected>)
  expected(U&& v) : storage_(std::in_place_index<0>, T(std::forward<U>(v))) {}
  expected(unexpected u) : storage_(std::in_place_index<1>, std::move(u.value)) {}

  bool has_value() const noexcept { return storage_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { assert(has_value()); return std::get<0>(storage_); }
  const T& value() const& { assert(has_value()); return std::get<0>(storage_); }
  T&& value() && { assert(has_value()); return std::get<0>(std::move(storage_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const loom::error& error() const& { assert(!has_value()); return std::get<1>(storage_); }
  loom::error&& error() && { assert(!has_value()); return std::get<1>(std::move(storage_)); }

 private:
  std::variant<T, loom::error> storage_;
};

template <>
class [[nodiscard]] expected<void> {
 public:
  using value_type = void;
  expected() = default;
  expected(unexpected u) : error_(std::move(u.value)), ok_(false) {}

  bool has_value() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  void value() const { assert(ok_); }
  const loom::error& error() const& { assert(!ok_); return error_; }
  loom::error&& error() && { assert(!ok_); return std::move(error_); }

 private:
  loom::error error_;
  bool ok_ = true;
};

// Propagates an error from an expected<U> into the caller's return type.
template <class U>
unexpected forward_error(const expected<U>& e) { return unexpected(e.error()); }

}  // namespace loom
