// Python bindings: the pieces of the allocator and generator the Python side
// of torch_toony needs. Loading this module also runs the static
// registrations (allocator, guard, hooks, metadata ops).
#include "toony.h"

#include <torch/csrc/utils/pybind.h>

namespace py = pybind11;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "toony PrivateUse1 device: allocator, guard, hooks and metadata ops";
  m.def("drain_freed", &toony::drain_freed, "Addresses freed since the last call.");
  m.def("allocation_nbytes", &toony::allocation_nbytes, "Bytes of the live allocation at an address, or -1.");
  m.def("memory_allocated", &toony::memory_allocated);
  m.def("max_memory_allocated", &toony::max_memory_allocated);
  m.def("live_allocation_count", &toony::live_allocation_count);
  m.def("reset_peak_memory_stats", &toony::reset_peak_memory_stats);
  m.def("set_memory_limit", &toony::set_memory_limit, "Refuse allocations past this many live bytes (0: none).");
  m.def("set_copy_callback", [](py::object fn) { toony::set_copy_callback(fn.ptr()); });
  m.def("set_synchronize_callback", [](py::object fn) { toony::set_synchronize_callback(fn.ptr()); });
  m.def("default_generator", [](int64_t index) {
    return toony::default_generator(static_cast<c10::DeviceIndex>(index));
  });
  m.def("address_range", [] { return py::make_tuple(toony::kAddressBase, toony::kAddressLimit); });
}
