// Metadata-only ATen ops for the toony device. PyTorch's generic strided
// implementations do the work; these registrations only stop PyTorch from
// routing them through a path that would touch host memory or silently copy.
#include "toony.h"

#include <ATen/EmptyTensor.h>
#include <ATen/Context.h>
#include <ATen/native/Resize.h>
#include <ATen/native/ResizeCommon.h>
#include <ATen/native/TensorFactories.h>
#include <ATen/ops/_reshape_alias_native.h>
#include <ATen/ops/as_strided_cpu_dispatch.h>
#include <ATen/ops/set_cpu_dispatch.h>
#include <ATen/ops/set_native.h>
#include <ATen/ops/unfold_native.h>
#include <ATen/ops/view_as_complex_native.h>
#include <ATen/ops/view_as_real_native.h>
#include <ATen/ops/view_native.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <algorithm>

namespace toony {
namespace {

constexpr c10::DispatchKeySet kKeys(c10::DispatchKey::PrivateUse1);

// torch.use_deterministic_algorithms(True) fills new memory with NaN / max, as
// on CPU and CUDA (the fill itself is an ordinary dispatched fill_).
bool fill_deterministically() {
  return at::globalContext().deterministicAlgorithms() && at::globalContext().deterministicFillUninitializedMemory();
}

void check_factory_args(const c10::Device& device, std::optional<c10::Layout> layout_opt,
                        std::optional<bool> pin_memory_opt) {
  TORCH_CHECK(device.is_privateuseone(), "toony: factory called for device ", device);
  TORCH_CHECK(c10::layout_or_default(layout_opt) == c10::Layout::Strided,
              "toony: only the strided layout is supported, got ", c10::layout_or_default(layout_opt));
  TORCH_CHECK(!c10::pinned_memory_or_default(pin_memory_opt), "toony: only CPU memory can be pinned");
}

at::Tensor empty_memory_format(c10::IntArrayRef size, std::optional<c10::ScalarType> dtype_opt,
                               std::optional<c10::Layout> layout_opt, std::optional<c10::Device> device_opt,
                               std::optional<bool> pin_memory_opt,
                               std::optional<c10::MemoryFormat> memory_format_opt) {
  const auto device = c10::device_or_default(device_opt);
  check_factory_args(device, layout_opt, pin_memory_opt);
  const c10::DeviceGuard guard(device);
  at::Tensor t = at::detail::empty_generic(size, device_allocator(), kKeys, c10::dtype_or_default(dtype_opt),
                                     memory_format_opt);
  if (fill_deterministically()) {
    at::native::fill_empty_deterministic_(t);
  }
  return t;
}

at::Tensor empty_strided(c10::IntArrayRef size, c10::IntArrayRef stride, std::optional<c10::ScalarType> dtype_opt,
                         std::optional<c10::Layout> layout_opt, std::optional<c10::Device> device_opt,
                         std::optional<bool> pin_memory_opt) {
  const auto device = c10::device_or_default(device_opt);
  check_factory_args(device, layout_opt, pin_memory_opt);
  const c10::DeviceGuard guard(device);
  at::Tensor t = at::detail::empty_strided_generic(size, stride, device_allocator(), kKeys, c10::dtype_or_default(dtype_opt));
  if (fill_deterministically()) {
    at::native::fill_empty_deterministic_(t);
  }
  return t;
}

at::Tensor as_strided(const at::Tensor& self, c10::SymIntArrayRef size, c10::SymIntArrayRef stride,
                      std::optional<c10::SymInt> storage_offset) {
  return at::cpu::as_strided_symint(self, size, stride, std::move(storage_offset));
}

at::Tensor view(const at::Tensor& self, c10::SymIntArrayRef size) {
  return at::native::view(self, C10_AS_INTARRAYREF_SLOW(size));
}

at::Tensor reshape_alias(const at::Tensor& self, c10::SymIntArrayRef size, c10::SymIntArrayRef stride) {
  return at::native::_reshape_alias(self, C10_AS_INTARRAYREF_SLOW(size), C10_AS_INTARRAYREF_SLOW(stride));
}

// PyTorch's CPU resize grows a storage with memcpy, which would dereference a
// fake address. Set the new sizes without touching the storage, then grow the
// storage through the allocator (whose copy_data is a device copy).
const at::Tensor& resize_(const at::Tensor& self, c10::SymIntArrayRef size,
                          std::optional<c10::MemoryFormat> memory_format) {
  const auto sizes = C10_AS_INTARRAYREF_SLOW(size);
  auto* impl = self.unsafeGetTensorImpl();
  const int64_t old_nbytes = impl->unsafe_storage() ? static_cast<int64_t>(impl->unsafe_storage().nbytes()) : 0;
  at::native::resize_impl_cpu_(impl, sizes, /*stride=*/std::nullopt, /*resize_storage=*/false);
  if (impl->numel() > 0) {
    const size_t needed = at::detail::computeStorageNbytesContiguous(sizes, self.dtype().itemsize(),
                                                                     impl->storage_offset());
    const auto& storage = impl->unsafe_storage();
    if (needed > storage.nbytes()) {
      resize_storage_bytes(storage.unsafeGetStorageImpl(), needed);
    }
  }
  if (memory_format.has_value()) {
    TORCH_CHECK(*memory_format != c10::MemoryFormat::Preserve, "Unsupported memory format ", *memory_format);
    impl->empty_tensor_restride(*memory_format);
  }
  if (fill_deterministically()) {
    at::native::fill_resize_deterministic_(self, old_nbytes);
  }
  return self;
}

// Like CPU, set_ grows a storage too small for the requested view. PyTorch's
// CPU kernel would grow it with memcpy, so grow it here first, through the
// device copy; the CPU kernel then only sets metadata.
at::Tensor& set_storage_offset(at::Tensor& self, c10::Storage source, c10::SymInt storage_offset,
                               c10::SymIntArrayRef size, c10::SymIntArrayRef stride) {
  const auto sizes = C10_AS_INTARRAYREF_SLOW(size);
  const int64_t offset = storage_offset.expect_int();
  const size_t itemsize = self.dtype().itemsize();
  const bool empty = std::any_of(sizes.begin(), sizes.end(), [](int64_t n) { return n == 0; });
  if (!empty && source) {
    const size_t needed = stride.size() == size.size()
                              ? at::detail::computeStorageNbytes(sizes, C10_AS_INTARRAYREF_SLOW(stride), itemsize, offset)
                              : at::detail::computeStorageNbytesContiguous(sizes, itemsize, offset);
    if (needed > source.nbytes()) {
      resize_storage_bytes(source.unsafeGetStorageImpl(), needed);
    }
  }
  return at::cpu::set__symint(self, std::move(source), std::move(storage_offset), size, stride);
}

at::Tensor& set_storage(at::Tensor& self, c10::Storage source) { return at::native::set_(self, std::move(source)); }

at::Tensor& set_tensor(at::Tensor& self, const at::Tensor& source) { return at::native::set_tensor_(self, source); }

// set_() with no source: an empty storage from the toony allocator (PyTorch's
// CPU version would hand the tensor a CPU storage).
at::Tensor& set_empty(at::Tensor& self) {
  c10::Storage storage(c10::Storage::use_byte_size_t(), 0, device_allocator(), /*resizable=*/true);
  return at::cpu::set_(self, std::move(storage), 0, {0}, {});
}

// One in-order queue per device: a block can never be reused while queued work
// still reads it, so there is nothing to record.
void record_stream(at::Tensor& /*self*/, c10::Stream /*stream*/) {}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", empty_memory_format);
  m.impl("empty_strided", empty_strided);
  m.impl("as_strided", as_strided);
  m.impl("view", view);
  m.impl("_reshape_alias", reshape_alias);
  m.impl("unfold", at::native::unfold);
  m.impl("view_as_real", at::native::view_as_real);
  m.impl("view_as_complex", at::native::view_as_complex);
  m.impl("resize_", resize_);
  m.impl("set_.source_Storage_storage_offset", set_storage_offset);
  m.impl("set_.source_Storage", set_storage);
  m.impl("set_.source_Tensor", set_tensor);
  m.impl("set_", set_empty);
  m.impl("record_stream", record_stream);
}

}  // namespace
}  // namespace toony
