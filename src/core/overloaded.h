// One callable from several lambdas, for std::visit over a variant:
//   std::visit(Overloaded{[](const A&) {...}, [](const auto&) {...}}, v);
#pragma once

namespace slimta {

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;  // for clang before 17 (no aggregate deduction)

}  // namespace slimta
